"""Reading PostgreSQL's state: the monitor thread polls at least every second and hands each Observation to the
loop; the worker thread takes one more at the end of every operation."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from services.postmaster import files, pg
from services.postmaster.core import DataDir, Observation, SqlStatus, TimelineHistoryFile, parse_history_file
from services.postmaster.settings import Settings
from services.postmaster.sql import Session, SqlError, fetch_status

log = logging.getLogger(__name__)

MONITOR_TIMEOUT_S = 2.0  # connect and statement timeout of the monitoring query
INTERVAL_S = 1.0
BUSY_INTERVAL_S = 0.25  # while an operation runs


class ControldataCache:
    """pg_controldata runs again only when global/pg_control changed."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key: tuple[int, int] | None = None
        self._value: dict[str, str] = {}

    def read(self) -> dict[str, str]:
        try:
            st = os.stat(os.path.join(self._settings.data_dir, "global", "pg_control"))
        except OSError:
            return {}
        key = (st.st_mtime_ns, st.st_ino)
        if key != self._key:
            self._value = pg.controldata(self._settings)
            self._key = key if self._value else None
        return dict(self._value)


def monitor_session(settings: Settings) -> Session:
    return Session(
        settings.local_conn_params(), timeout=MONITOR_TIMEOUT_S, application_name="haven-postmaster", retry=True
    )


def observe(settings: Settings, session: Session, cache: ControldataCache, *, quiet: bool = False) -> Observation:
    """One reading. quiet: skip pg_controldata (while initdb or pg_basebackup writes PGDATA, C9)."""
    order = time.monotonic()
    data_dir = files.data_dir_state(settings)
    pid_file = pg.find_postmaster(settings) if data_dir != DataDir.MISSING else None
    sql: SqlStatus | None = None
    if pid_file is not None and pid_file.status not in ("starting", "stopping"):
        try:
            sql = fetch_status(session)
        except SqlError as exc:
            log.debug("monitoring query failed: %s", exc)
    elif pid_file is None:
        session.close()
    controldata = cache.read() if sql is None and data_dir == DataDir.INITIALIZED and not quiet else {}
    history = read_history(settings, sql.timeline) if sql is not None and not sql.in_recovery else None
    return Observation(
        ts=time.time(),
        order=order,
        data_dir=data_dir,
        running=pid_file is not None,
        pid=pid_file.pid if pid_file else None,
        pm_status=pid_file.status if pid_file else None,
        sql=sql,
        controldata=controldata,
        standby_signal=files.is_standby(settings),
        history=history,
    )


_history_cache: dict[str, TimelineHistoryFile] = {}


def read_history(settings: Settings, timeline: int | None) -> TimelineHistoryFile | None:
    """The primary's pg_wal/<timeline>.history (none on timeline 1); re-read only when it changed."""
    if not timeline or timeline <= 1:
        return None
    path = os.path.join(settings.data_dir, "pg_wal", f"{timeline:08X}.history")
    try:
        mtime = os.stat(path).st_mtime
        cached = _history_cache.get(path)
        if cached is not None and cached.mtime == mtime and cached.timeline == timeline:
            return cached
        with open(path) as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    result = TimelineHistoryFile(timeline, parse_history_file(text), mtime)
    _history_cache[path] = result
    return result


def observe_once(settings: Settings) -> Observation:
    session = monitor_session(settings)
    try:
        return observe(settings, session, ControldataCache(settings))
    finally:
        session.close()


class Monitor:
    """The monitor thread. `wake` asks for a reading now; `quiet` and `busy` are set by the loop."""

    def __init__(self, settings: Settings, deliver: Callable[[Observation], None]) -> None:
        self._settings = settings
        self._deliver = deliver
        self.wake = threading.Event()
        self.quiet = threading.Event()
        self.busy = threading.Event()
        self._stop = threading.Event()

    def run(self) -> None:
        session = monitor_session(self._settings)
        cache = ControldataCache(self._settings)
        while not self._stop.is_set():
            try:
                self._deliver(observe(self._settings, session, cache, quiet=self.quiet.is_set()))
            except Exception:
                log.exception("observing PostgreSQL failed; trying again")
            self.wake.wait(BUSY_INTERVAL_S if self.busy.is_set() else INTERVAL_S)
            self.wake.clear()
        session.close()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
