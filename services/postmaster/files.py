"""The files haven owns in PGDATA and the run directory: postgresql.conf (+ base), pg_hba.conf, pg_ident.conf,
standby.signal, postgresql.auto.conf scrubbing, patroni.dynamic.json and the pgpass file (C41, C51, C55, C56, C60, F4).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.postmaster import render
from services.postmaster.core import DataDir, classify_data_dir
from services.postmaster.render import Upstream
from services.postmaster.settings import Settings

log = logging.getLogger(__name__)


def data_dir_state(settings: Settings) -> DataDir:
    """Cheap on the common path: a stat of global/pg_control, a listing only without it (A48)."""
    if os.path.exists(os.path.join(settings.data_dir, "global", "pg_control")):
        return DataDir.INITIALIZED
    try:
        names = os.listdir(settings.data_dir)
    except (FileNotFoundError, NotADirectoryError):
        return classify_data_dir(None, False)
    except PermissionError:
        return DataDir.INVALID
    return classify_data_dir(names, False)


def file_mode(settings: Settings) -> int:
    """0640 when PGDATA allows group access (0750), else 0600 (C60)."""
    try:
        group_access = stat.S_IMODE(os.stat(settings.data_dir).st_mode) & 0o070 == 0o050
    except OSError:
        group_access = False
    return 0o640 if group_access else 0o600


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_file(path: str, content: str, mode: int) -> bool:
    """Replace `path` atomically with `content`; return whether it changed."""
    if _read(path) == content:
        os.chmod(path, mode)
        return False
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".haven-")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def _ensure_base_conf(settings: Settings, mode: int) -> None:
    """The original postgresql.conf becomes postgresql.base.conf the first time haven writes its own (C41)."""
    base = settings.base_conf_path
    if settings.custom_conf or os.path.exists(base):
        return
    for candidate in (settings.conf_path, os.path.join(settings.data_dir, "postgresql.conf")):
        text = _read(candidate)
        if text is not None and not text.startswith(render.HEADER):
            if candidate == settings.conf_path:
                os.rename(candidate, base)
            else:
                shutil.copyfile(candidate, base)
            log.info("kept the original configuration as %s", base)
            return
    write_file(base, "", mode)


@dataclass
class WrittenConfig:
    params: dict[str, Any] = field(default_factory=dict)
    changed: bool = False


def write_config(
    settings: Settings,
    dynamic_pg: Mapping[str, Any],
    *,
    primary: bool,
    upstream: Upstream | None,
    controldata: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> WrittenConfig:
    """Every configuration file of a primary, or of a replica following `upstream` (None: no upstream).
    overrides: parameters haven manages at run time (managed.parameter_overrides)."""
    mode = file_mode(settings)
    os.makedirs(settings.config_dir, exist_ok=True)
    _ensure_base_conf(settings, mode)
    params, warnings = render.effective_parameters(settings, dynamic_pg)
    for warning in warnings:
        log.warning(warning)
    params = render.apply_overrides(params, overrides or {})
    recovery = None
    if not primary:
        params, raised = render.raise_to_controldata(params, controldata or {})
        for message in raised:
            log.warning(message)
        recovery = render.recovery_parameters(settings, dynamic_pg, upstream)
    text = render.render_postgresql_conf(settings, params, recovery, upstream)
    changed = write_file(settings.conf_path, text, mode)
    changed = _write_hba_ident(settings, dynamic_pg, params, mode) or changed
    _set_signal(settings, primary, mode)
    _scrub_auto_conf(settings, mode)
    write_pgpass(settings, [upstream] if upstream else [])
    return WrittenConfig(params=params, changed=changed)


def _write_hba_ident(settings: Settings, dynamic_pg: Mapping[str, Any], params: Mapping[str, Any], mode: int) -> bool:
    changed = False
    if params.get("hba_file") == settings.hba_path:
        lines = render.hba_lines(settings, dynamic_pg)
        if lines is not None:
            changed = write_file(settings.hba_path, render.render_lines_file(lines), mode) or changed
        elif not os.path.exists(settings.hba_path) and settings.config_dir != settings.data_dir:
            shutil.copyfile(os.path.join(settings.data_dir, "pg_hba.conf"), settings.hba_path)
    if params.get("ident_file") == settings.ident_path:
        lines = render.ident_lines(settings, dynamic_pg)
        if lines is not None:
            changed = write_file(settings.ident_path, render.render_lines_file(lines), mode) or changed
        elif not os.path.exists(settings.ident_path):
            write_file(settings.ident_path, "", mode)
    return changed


def _set_signal(settings: Settings, primary: bool, mode: int) -> None:
    if primary:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(settings.standby_signal_path)
    else:
        write_file(settings.standby_signal_path, "", mode)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(settings.data_dir, "recovery.signal"))


def _scrub_auto_conf(settings: Settings, mode: int) -> None:
    path = os.path.join(settings.data_dir, "postgresql.auto.conf")
    text = _read(path)
    scrubbed = render.scrub_recovery_settings(text) if text else None
    if scrubbed is not None:
        log.info("removing recovery settings from %s", path)
        write_file(path, scrubbed, mode)


def is_standby(settings: Settings) -> bool:
    return os.path.exists(settings.standby_signal_path)


def write_pgpass(settings: Settings, upstreams: Iterable[Upstream], *, superuser: bool = False) -> None:
    """Mode 0600: libpq ignores a password file that others may read (C56, J7)."""
    os.makedirs(os.path.dirname(settings.pgpass), exist_ok=True)
    entries = render.pgpass_entries(settings, upstreams, superuser=superuser)
    write_file(settings.pgpass, render.render_pgpass(entries), 0o600)


def read_following(settings: Settings) -> Upstream | None:
    text = _read(settings.conf_path)
    return render.parse_following(text) if text else None


def read_dynamic(settings: Settings) -> dict[str, Any] | None:
    text = _read(settings.dynamic_json_path)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("ignoring %s: not valid JSON", settings.dynamic_json_path)
        return None
    return value if isinstance(value, dict) else None


def write_dynamic(settings: Settings, dynamic: Mapping[str, Any]) -> None:
    """A copy of the dynamic configuration in PGDATA (F4)."""
    if data_dir_state(settings) == DataDir.INITIALIZED:
        write_file(
            settings.dynamic_json_path, json.dumps(dynamic, separators=(",", ":"), sort_keys=True), file_mode(settings)
        )


def ensure_data_dir(settings: Settings) -> None:
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    if stat.S_IMODE(os.stat(settings.data_dir).st_mode) & 0o027:
        os.chmod(settings.data_dir, 0o700)


def wipe_data_dir(settings: Settings) -> None:
    """Remove what PGDATA holds, not PGDATA itself (it may be a mount point)."""
    try:
        names = os.listdir(settings.data_dir)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(settings.data_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def move_to_failed(settings: Settings) -> str | None:
    """PGDATA -> PGDATA.failed, replacing an older one (C8). An empty PGDATA stays where it is."""
    if data_dir_state(settings) in (DataDir.MISSING, DataDir.EMPTY):
        return None
    target = settings.data_dir.rstrip("/") + ".failed"
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
    elif os.path.lexists(target):
        os.unlink(target)
    os.rename(settings.data_dir, target)
    log.warning("moved the data directory to %s", target)
    return target


@contextlib.contextmanager
def private_file(directory: str, content: str) -> Iterator[str]:
    """A temporary 0600 file (initdb's --pwfile), removed afterwards."""
    os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=directory, prefix=".haven-pw-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
