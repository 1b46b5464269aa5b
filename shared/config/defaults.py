"""Defaults and limits (features.md "Numbers")."""

from __future__ import annotations

from typing import Any

# Dynamic configuration defaults (F10-F27).
DYNAMIC_DEFAULTS: dict[str, Any] = {
    "ttl": 30,
    "loop_wait": 10,
    "retry_timeout": 10,
    "maximum_lag_on_failover": 1048576,
    "maximum_lag_on_syncnode": -1,
    "max_timelines_history": 0,
    "primary_start_timeout": 300,
    "primary_stop_timeout": 0,
    "synchronous_mode": False,
    "synchronous_mode_strict": False,
    "synchronous_node_count": 1,
    "failsafe_mode": False,
    "check_timeline": False,
    "postgresql": {"use_slots": True, "use_pg_rewind": False, "parameters": {}},
}

# Minimums below which a value is raised (A6).
MIN_TTL = 5
MIN_LOOP_WAIT = 1
MIN_RETRY_TIMEOUT = 1

# PostgreSQL parameters that only the DCS may set (C44): default and minimum. Local values are ignored.
DCS_ONLY_PARAMETERS: dict[str, tuple[Any, Any]] = {
    "max_connections": (100, 25),
    "max_locks_per_transaction": (64, 32),
    "max_worker_processes": (8, 2),
    "max_prepared_transactions": (0, 0),
    "wal_level": ("hot_standby", None),
    "track_commit_timestamp": ("off", None),
    "max_wal_senders": (10, 3),
    "max_replication_slots": (10, 4),
    "wal_keep_size": ("128MB", None),
}
WAL_LEVELS = ("hot_standby", "replica", "logical")

DEFAULT_NAMESPACE = "/service"
DEFAULT_PG_CTL_TIMEOUT = 60
DEFAULT_WATCHDOG_DEVICE = "/dev/watchdog"
DEFAULT_SAFETY_MARGIN = 5
DEFAULT_RESTAPI_PORT = 8008
DEFAULT_PG_PORT = 5432
DEFAULT_RUN_DIR_ROOT = "/run/haven"
