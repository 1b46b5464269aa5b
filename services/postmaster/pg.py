"""The PostgreSQL programs: pg_ctl, initdb, pg_basebackup, pg_controldata, and finding our own postmaster
through postmaster.pid (never by process name: other clusters may run on this machine)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

import psutil

from services.postmaster.cancel import CANCEL
from services.postmaster.core import PidFile, parse_controldata, parse_pid_file
from services.postmaster.settings import Settings

log = logging.getLogger(__name__)

_DROPPED_ENV_PREFIXES = ("PATRONI_", "KUBERNETES_", "HAVEN_")
_POSTMASTER_NAMES = frozenset({"postgres", "postmaster"})
_PID_START_TOLERANCE_S = 3.0
_LOG_TAIL_BYTES = 2000
LONG_TIMEOUT_S = 3600.0  # initdb, scripts: bounded, but far beyond any normal run


class PgError(Exception):
    """A PostgreSQL program failed; the message carries the end of its output."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of PostgreSQL's processes: without PATRONI_*, KUBERNETES_* and HAVEN_* (J8)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    env.update(extra or {})
    return env


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run(
    cmd: Sequence[str], *, timeout: float | None, env: Mapping[str, str] | None = None, routine: bool = False
) -> str:
    """Run a program (its arguments never hold a password); return its output or raise PgError.
    routine: a read-only program run often (logged at debug level)."""
    log.log(logging.DEBUG if routine else logging.INFO, "running %s", " ".join(shlex.quote(c) for c in cmd))
    try:
        code, out, err = CANCEL.communicate(
            cmd,
            timeout,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else clean_env(),
        )
    except subprocess.TimeoutExpired:
        raise PgError(f"{os.path.basename(cmd[0])} did not finish within {timeout:.0f}s")
    except OSError as exc:
        raise PgError(f"cannot run {cmd[0]}: {exc.strerror}")
    _raise_if_cancelled(cmd)
    if code != 0:
        raise PgError(f"{os.path.basename(cmd[0])} exited with code {code}: {_tail(err or out)}")
    return out


def _raise_if_cancelled(cmd: Sequence[str]) -> None:
    if CANCEL.cancelled() and CANCEL.in_scope():
        raise PgError(f"{os.path.basename(cmd[0])} was cancelled")


def run_capture(cmd: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run a program whose failure is an answer (pg_waldump): its exit code and its stdout and stderr together."""
    log.debug("running %s", " ".join(shlex.quote(c) for c in cmd))
    try:
        code, out, _ = CANCEL.communicate(
            cmd,
            timeout,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else clean_env({"LANG": "C", "LC_ALL": "C"}),
        )
    except subprocess.TimeoutExpired:
        raise PgError(f"{os.path.basename(cmd[0])} did not finish within {timeout:.0f}s")
    except OSError as exc:
        raise PgError(f"cannot run {cmd[0]}: {exc.strerror}")
    _raise_if_cancelled(cmd)
    return code, out


# ---- our postmaster -----------------------------------------------------------------------------------------------


def read_pid_file(settings: Settings) -> PidFile | None:
    try:
        with open(settings.pid_path) as f:
            return parse_pid_file(f.read())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", settings.pid_path, exc.strerror)
        return None


def _is_our_postmaster(settings: Settings, pid_file: PidFile) -> bool:
    """The pid is alive and is the postmaster that wrote this pid file (not a reused pid)."""
    if pid_file.data_dir and os.path.realpath(pid_file.data_dir) != os.path.realpath(settings.data_dir):
        return False
    try:
        proc = psutil.Process(pid_file.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        names = _POSTMASTER_NAMES | {os.path.basename(settings.binary("postgres"))}
        if proc.name() not in names:
            return False
        created = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return pid_file.start_time is None or abs(created - pid_file.start_time) <= _PID_START_TOLERANCE_S


def find_postmaster(settings: Settings) -> PidFile | None:
    """Our running postmaster, from postmaster.pid checked against the process table (A49)."""
    pid_file = read_pid_file(settings)
    if pid_file is None or not _is_our_postmaster(settings, pid_file):
        return None
    return pid_file


def remove_stale_pid_file(settings: Settings) -> None:
    pid_file = read_pid_file(settings)
    if pid_file is not None and not _is_our_postmaster(settings, pid_file):
        log.warning(
            "removing the stale %s (pid %d is not this data directory's postmaster)", settings.pid_path, pid_file.pid
        )
        try:
            os.unlink(settings.pid_path)
        except FileNotFoundError:
            pass


def launched_since(settings: Settings, since: float) -> bool:
    """Whether a process started at or after `since` runs with our data directory on its command line (the
    postmaster pg_ctl launched, before it writes postmaster.pid)."""
    data_dir = os.path.realpath(settings.data_dir)
    for proc in psutil.process_iter(["create_time", "cmdline"]):
        try:
            if (proc.info["create_time"] or 0) < since - 1 or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(data_dir in arg or settings.data_dir in arg for arg in proc.info["cmdline"] or ()):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def send_reload(pid: int) -> None:
    os.kill(pid, signal.SIGHUP)


# ---- programs -----------------------------------------------------------------------------------------------------


def controldata(settings: Settings) -> dict[str, str]:
    try:
        out = run(
            [settings.binary("pg_controldata"), "-D", settings.data_dir],
            timeout=30,
            env=clean_env({"LANG": "C", "LC_ALL": "C"}),
            routine=True,
        )
    except PgError as exc:
        log.warning("pg_controldata failed: %s", exc)
        return {}
    return parse_controldata(out)


def binary_version(settings: Settings) -> int | None:
    """server_version_num of the installed postgres binary: '15.4' -> 150004."""
    try:
        out = run([settings.binary("postgres"), "--version"], timeout=30, routine=True)
    except PgError as exc:
        log.warning("cannot read the PostgreSQL version: %s", exc)
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", out)
    if not match:
        return None
    major, minor, patch = (int(g or 0) for g in match.groups())
    return major * 10000 + minor if major >= 10 else major * 10000 + minor * 100 + patch


def pg_ctl_start(settings: Settings, options: Sequence[str]) -> None:
    """Start the postmaster detached (pg_ctl setsid()s it) without waiting: the caller polls for readiness."""
    os.makedirs(settings.log_dir, exist_ok=True)
    cmd = [settings.binary("pg_ctl"), "start", "-W", "-D", settings.data_dir, "-l", settings.log_file]
    if options:
        cmd += ["-o", " ".join(shlex.quote(o) for o in options)]
    run(cmd, timeout=settings.pg_ctl_timeout)


def pg_ctl_stop(settings: Settings, mode: str, timeout: float | None = None) -> None:
    timeout = settings.pg_ctl_timeout if timeout is None else timeout
    wait = str(max(1, int(timeout)))
    cmd = [settings.binary("pg_ctl"), "stop", "-D", settings.data_dir, "-m", mode, "-w", "-t", wait]
    run(cmd, timeout=timeout + 10)


def kill_postmaster(settings: Settings, wait_s: float = 10.0) -> bool:
    """SIGKILL the postmaster (A36); its children exit when they notice. True when it is gone."""
    found = find_postmaster(settings)
    if found is None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(found.pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(found.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def initdb(settings: Settings, options: Sequence[str], pwfile: str | None) -> None:
    cmd = [settings.binary("initdb"), "-D", settings.data_dir, "-U", settings.superuser["username"]]
    if pwfile:
        cmd.append(f"--pwfile={pwfile}")
    run(cmd + list(options), timeout=LONG_TIMEOUT_S)


def basebackup(settings: Settings, conninfo: str, options: Sequence[str]) -> None:
    """pg_basebackup as the replication user; the password comes from the pgpass file, never the command line."""
    cmd = [
        settings.binary("pg_basebackup"),
        f"--pgdata={settings.data_dir}",
        "-X",
        "stream",
        "-c",
        "fast",
        f"--dbname={conninfo}",
        "--no-password",
        *options,
    ]
    run(cmd, timeout=None, env=clean_env({"PGPASSFILE": settings.pgpass}))


def log_offset(settings: Settings) -> int:
    try:
        return os.path.getsize(settings.log_file)
    except OSError:
        return 0


def log_since(settings: Settings, offset: int) -> str:
    """What PostgreSQL wrote to its log since `offset` (the end of it)."""
    try:
        with open(settings.log_file, "rb") as f:
            f.seek(max(offset, os.path.getsize(settings.log_file) - _LOG_TAIL_BYTES))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""
