"""What haven manages on this node at run time, beyond the configuration: synchronous_standby_names (pg.set_sync)
and the desired replication slots (pg.sync_slots). Kept in memory, shared by the loop and the worker threads, and
persisted in PGDATA/haven.managed.json, so that a restarted controller, a restarted PostgreSQL and every config
rewrite keep them.

The file records the member's name: pg_basebackup and pg_rewind copy the source's PGDATA, and a file written by
another member is ignored (and replaced at the next save).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.postmaster import files
from services.postmaster.core import DataDir
from services.postmaster.settings import Settings
from services.postmaster.slotplan import DesiredSlots
from services.postmaster.standby_names import SyncSetting

log = logging.getLogger(__name__)

FILE_NAME = "haven.managed.json"


@dataclass(frozen=True)
class Managed:
    sync: SyncSetting | None = None
    slots: DesiredSlots | None = None


def _sync_mode_on(dynamic: Mapping[str, Any]) -> bool:
    value = dynamic.get("synchronous_mode")
    return value is True or (isinstance(value, str) and value.lower() in ("on", "true", "quorum"))


def parameter_overrides(managed: Managed, dynamic: Mapping[str, Any], *, primary: bool) -> dict[str, Any]:
    """The parameters haven sets whatever the configuration says (None: removed).

    synchronous_standby_names is managed while synchronous mode is on in the dynamic configuration, or while a
    pg.set_sync value is in force: then a configured value is overridden. In synchronous mode without any
    pg.set_sync yet, a primary in strict mode gets `*` and any other node none (C76). hot_standby_feedback is on
    for a replica that must keep logical slots (C32, C41)."""
    overrides: dict[str, Any] = {}
    sync = managed.sync
    if sync is not None and (sync.value is not None or _sync_mode_on(dynamic)):
        overrides["synchronous_standby_names"] = sync.value
    elif sync is None and _sync_mode_on(dynamic):
        strict = dynamic.get("synchronous_mode_strict") is True
        overrides["synchronous_standby_names"] = "*" if strict and primary else None
    if not primary and managed.slots is not None and managed.slots.logical_names:
        overrides["hot_standby_feedback"] = "on"
    return overrides


class ManagedStore:
    """Thread-safe: the loop sets, the worker and the SQL threads read."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._value = self._load()
        self._held = False

    @property
    def path(self) -> str:
        return os.path.join(self._settings.data_dir, FILE_NAME)

    def get(self) -> Managed:
        with self._lock:
            return self._value

    def set_sync(self, sync: SyncSetting) -> None:
        with self._lock:
            self._value = dataclasses.replace(self._value, sync=sync)
        self.save()

    def set_slots(self, slots: DesiredSlots) -> None:
        with self._lock:
            self._value = dataclasses.replace(self._value, slots=slots)
        self.save()

    def overrides(self, dynamic: Mapping[str, Any], *, primary: bool) -> dict[str, Any]:
        return parameter_overrides(self.get(), dynamic, primary=primary)

    def hold(self, held: bool) -> None:
        """While an operation may rewrite PGDATA (pg_basebackup, pg_rewind), changes stay in memory; the loop saves
        them when it ends."""
        with self._lock:
            self._held = held

    def save(self) -> None:
        """Write the file when PGDATA is initialized (after a bootstrap, a clone or a rewind: again)."""
        with self._lock:
            value, held = self._value, self._held
        if held or files.data_dir_state(self._settings) != DataDir.INITIALIZED:
            return
        body = {
            "member": self._settings.name,
            "sync": value.sync.as_json() if value.sync else None,
            "slots": value.slots.as_json() if value.slots else None,
        }
        try:
            files.write_file(self.path, json.dumps(body, sort_keys=True), 0o600)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc.strerror)

    def _load(self) -> Managed:
        try:
            with open(self.path) as f:
                body = json.load(f)
        except FileNotFoundError:
            return Managed()
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return Managed()
        if not isinstance(body, dict) or body.get("member") != self._settings.name:
            log.info("ignoring %s: written by another member", self.path)
            return Managed()
        return Managed(sync=SyncSetting.from_json(body.get("sync")), slots=DesiredSlots.from_json(body.get("slots")))
