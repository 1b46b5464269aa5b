"""Which OS user runs which program (DESIGN.md table), and the directories they need."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field

from shared.config import NodeConfig
from shared.config.validation import Problem


@dataclass(frozen=True)
class Accounts:
    """root mode: programs get their own users; otherwise everything runs as the invoking user."""

    as_root: bool
    service_user: str | None = None  # dcs_proxy, ha_loop
    api_user: str | None = None  # restapi
    postgres_user: str | None = None  # postmaster
    group_gid: int | None = None
    trusted_uids: tuple[int, ...] = field(default_factory=tuple)
    postgres_home: str = ""

    def uid(self, user: str | None) -> int:
        return pwd.getpwnam(user).pw_uid if user else os.getuid()

    def gid(self, user: str | None) -> int:
        return pwd.getpwnam(user).pw_gid if user else os.getgid()


def resolve(config: NodeConfig) -> tuple[Accounts, list[Problem]]:
    if os.geteuid() != 0:
        return Accounts(as_root=False, postgres_home=os.environ.get("HOME", "/tmp")), []
    haven = config.haven
    names = {
        "haven.user": str(haven.get("user") or "haven"),
        "haven.api_user": str(haven.get("api_user") or "haven-api"),
        "haven.postgres_user": str(haven.get("postgres_user") or "postgres"),
    }
    problems: list[Problem] = []
    entries: dict[str, pwd.struct_passwd] = {}
    for key, name in names.items():
        try:
            entries[key] = pwd.getpwnam(name)
        except KeyError:
            problems.append(
                Problem(key, f"user {name!r} does not exist: run `make setup` (scripts/setup.sh) or name another user")
            )
    try:
        gid = grp.getgrnam("haven").gr_gid
    except KeyError:
        problems.append(Problem("haven", "group 'haven' does not exist: run `make setup` (scripts/setup.sh)"))
        gid = None
    if problems:
        return Accounts(as_root=True), problems
    postgres = entries["haven.postgres_user"]
    service = entries["haven.user"]
    return (
        Accounts(
            as_root=True,
            service_user=names["haven.user"],
            api_user=names["haven.api_user"],
            postgres_user=names["haven.postgres_user"],
            group_gid=gid,
            trusted_uids=(0, service.pw_uid, postgres.pw_uid),
            postgres_home=postgres.pw_dir,
        ),
        [],
    )


def prepare_dir(path: str, mode: int, uid: int = -1, gid: int = -1) -> None:
    os.makedirs(path, exist_ok=True)
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid)
    os.chmod(path, mode)


def prepare(config: NodeConfig, accounts: Accounts, run_dir: str, log_dir: str) -> None:
    """Create the run and log directories, PGDATA and the Raft data directory with the right owners."""
    group = accounts.group_gid if accounts.group_gid is not None else -1
    if accounts.as_root:
        prepare_dir(run_dir, 0o770, 0, group)
        if log_dir != run_dir:
            prepare_dir(log_dir, 0o770, 0, group)
    else:
        prepare_dir(run_dir, 0o700)
        os.makedirs(log_dir, exist_ok=True)
    data_dir = config.postgresql.get("data_dir")
    if data_dir and not os.path.exists(data_dir):
        parent = os.path.dirname(os.path.abspath(data_dir))
        os.makedirs(parent, exist_ok=True)
        pg = accounts.postgres_user
        prepare_dir(data_dir, 0o700, accounts.uid(pg) if pg else -1, accounts.gid(pg) if pg else -1)
    raft_dir = config.section("raft").get("data_dir")
    if config.dcs_type == "raft" and raft_dir and not os.path.exists(raft_dir):
        user = accounts.service_user
        prepare_dir(raft_dir, 0o700, accounts.uid(user) if user else -1, accounts.gid(user) if user else -1)
