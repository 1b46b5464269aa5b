"""Where PostgreSQL 15 lives, and how tests run things as the postgres user when they run as root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

PG_BIN = Path(os.environ.get("HAVEN_PG_BIN", "/usr/lib/postgresql/15/bin"))


def pg_bin_dir() -> str:
    if (PG_BIN / "pg_ctl").exists():
        return str(PG_BIN)
    found = shutil.which("pg_ctl")
    if found:
        return str(Path(found).resolve().parent)
    raise RuntimeError("PostgreSQL 15 binaries are missing: run `make setup-test` (it installs postgresql-15)")


def is_root() -> bool:
    return os.geteuid() == 0


def pg_user() -> str:
    """The OS user PostgreSQL runs as in tests: postgres when we are root, else ourselves."""
    return "postgres" if is_root() else pwd.getpwuid(os.getuid()).pw_name


def make_shared_tmpdir(prefix: str) -> Path:
    """A temporary directory the postgres user can use (under /tmp, mode 0755, owned by the PG user)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    if is_root():
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def as_pg_user(cmd: list[str]) -> list[str]:
    """Prefix a command so that it runs as the PostgreSQL user."""
    if is_root():
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def run_as_pg(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_pg_user(cmd), text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]
