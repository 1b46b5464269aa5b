"""Rendering the node's supervisord configuration from the repository's `supervisord.conf` template."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from string import Template

import yaml

from shared.config import NodeConfig
from shared.config.dynamic import effective
from shared.launcher.accounts import Accounts

TEMPLATE_NAME = "supervisord.conf"


def find_template(config: NodeConfig) -> Path:
    candidates = [
        config.haven.get("supervisord_template"),
        os.environ.get("HAVEN_SUPERVISORD_TEMPLATE"),
        Path(__file__).resolve().parents[2] / TEMPLATE_NAME,  # the repository root (editable install)
        Path(sys.prefix) / "share" / "haven" / TEMPLATE_NAME,  # installed as data files
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError("supervisord.conf template not found; set haven.supervisord_template")


def default_run_dir(config: NodeConfig) -> str:
    if config.haven.get("run_dir"):
        return str(config.haven["run_dir"])
    if os.geteuid() == 0:
        return f"/run/haven/{config.scope}-{config.name}"
    return f"/tmp/haven-{os.getuid()}/{config.scope}-{config.name}"


def _env(items: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in items.items())


def render(config: NodeConfig, accounts: Accounts, run_dir: str, log_dir: str, config_path: str) -> str:
    python = config.haven.get("python") or sys.executable
    common = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if accounts.group_gid is not None:
        common["HAVEN_GROUP_ID"] = str(accounts.group_gid)
    if accounts.trusted_uids:
        common["HAVEN_TRUSTED_UIDS"] = ",".join(str(u) for u in accounts.trusted_uids)
    postgres_env = dict(common)
    if accounts.as_root and accounts.postgres_user:
        postgres_env.update(HOME=accounts.postgres_home, USER=accounts.postgres_user, LOGNAME=accounts.postgres_user)

    def user(name: str | None) -> str:
        return f"user={name}" if accounts.as_root and name else ""

    dynamic = effective(None, config.bootstrap_dcs)
    values = {
        "run_dir": run_dir,
        "log_dir": log_dir,
        "python": python,
        "config": config_path,
        "supervisord_user": "user=root" if accounts.as_root else "",
        "user_watchdogd": user("root"),
        "user_service": user(accounts.service_user),
        "user_api": user(accounts.api_user),
        "user_postgres": user(accounts.postgres_user),
        "env_common": _env(common),
        "env_postgres": _env(postgres_env),
        "program_log": "/dev/stdout",
        # a sync standby first waits up to 2 x loop_wait to be released (A53), then stops PostgreSQL
        "ha_loop_stopwaitsecs": str(config.pg_ctl_timeout + 2 * dynamic.loop_wait + 30),
        "dcs_proxy_stopwaitsecs": str(dynamic.retry_timeout + 10),
    }
    text = Template(find_template(config).read_text()).substitute(values)
    # every program starts in the run directory (the postgres user cannot enter /root, for one)
    return text.replace("\nstartsecs=", f"\ndirectory={run_dir}\nstartsecs=")


def write_node_config(config: NodeConfig, accounts: Accounts, run_dir: str, source: str | None) -> str:
    """The merged configuration (file + environment), readable by the node's programs only."""
    data = dict(config.data)
    haven = dict(data.get("haven") or {})
    haven["run_dir"] = run_dir
    if source:
        haven["source_config"] = os.path.abspath(source)
    data["haven"] = haven
    path = os.path.join(run_dir, "config.yaml")
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
    if accounts.as_root and accounts.group_gid is not None:
        os.chown(tmp, 0, accounts.group_gid)
    os.chmod(tmp, 0o640 if accounts.as_root else 0o600)
    os.replace(tmp, path)
    return path
