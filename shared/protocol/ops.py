"""Every request op of every program, with its body schema. This file is the protocol's table of contents.

Replies to mutating DCS ops carry {"applied": bool}: false is a lost race or a failed compare-and-set,
never an outage. An unreachable DCS is the error code `unavailable`.

Long PostgreSQL operations (bootstrap, clone, start, stop, restart, promote, demote) are accepted at once
with {"accepted": true, "operation": id}; their progress and result appear in the `pg_state` event
(field `operation`), which also wakes the brain when they end.
"""

from __future__ import annotations

from shared.protocol.schema import F, OpSchema, schemas

_num = (int, float)

DCS = schemas(
    OpSchema("dcs.get_cluster"),
    OpSchema("dcs.initialize", (F("create_new", (bool,)), F("sysid", (str,)))),
    OpSchema("dcs.cancel_initialization"),
    OpSchema("dcs.take_leader", (F("name", (str,)), F("ttl", _num))),
    OpSchema(
        "dcs.refresh_leader",
        (
            F("name", (str,)),
            F("ttl", _num),
            F("last_lsn", (int,), required=False, nullable=True),
            F("slots", (dict,), required=False, nullable=True),
            F("failsafe", (dict,), required=False, nullable=True),
        ),
    ),
    OpSchema("dcs.release_leader", (F("name", (str,)), F("last_lsn", (int,), required=False, nullable=True))),
    OpSchema("dcs.touch_member", (F("name", (str,)), F("data", (dict,)), F("ttl", _num))),
    OpSchema(
        "dcs.write",
        (
            F("key", (str,)),
            F("value", (str,)),
            F("version", (int,), required=False, nullable=True),
            F("ttl", _num, required=False, nullable=True),
        ),
    ),
    OpSchema("dcs.delete", (F("key", (str,)), F("version", (int,), required=False, nullable=True))),
    OpSchema("dcs.delete_cluster"),
)

# Keys a dcs.write/dcs.delete may name, relative to /<namespace>/<scope>/.
WRITABLE_KEYS = frozenset({"config", "failover", "sync", "history", "status", "failsafe", "optime/leader"})

_member = (dict,)

PG = schemas(
    OpSchema("pg.status"),
    OpSchema("pg.configure", (F("dynamic", (dict,)),)),
    OpSchema("pg.bootstrap"),
    OpSchema("pg.clone", (F("source", _member), F("leader", _member, required=False, nullable=True))),
    OpSchema(
        "pg.start",
        (
            F("role", (str,)),
            F("leader", _member, required=False, nullable=True),
            F("timeout", _num, required=False, nullable=True),
        ),
    ),
    OpSchema("pg.stop", (F("mode", (str,)), F("checkpoint", (bool,), required=False))),
    OpSchema("pg.reinitialize", (F("source", _member), F("leader", _member, required=False, nullable=True))),
    OpSchema(
        "pg.restart",
        (F("leader", _member, required=False, nullable=True), F("timeout", _num, required=False, nullable=True)),
    ),
    OpSchema("pg.promote"),
    OpSchema("pg.demote", (F("mode", (str,)), F("leader", _member, required=False, nullable=True))),
    OpSchema("pg.follow", (F("leader", _member, required=False, nullable=True),)),
    OpSchema("pg.reload"),
    OpSchema("pg.cancel"),
    OpSchema(
        "pg.set_sync",
        (F("mode", (str,)), F("num", (int,)), F("names", (list,)), F("strict", (bool,), required=False)),
    ),
    OpSchema(
        "pg.sync_slots",
        (
            F("slots", (dict,)),
            F("ignore", (list,), required=False),
            F("source", _member, required=False, nullable=True),
        ),
    ),
    OpSchema("pg.copy_slots", (F("source", _member), F("names", (list,)))),
)

PG_SYNC_MODES = frozenset({"off", "on", "quorum"})

PG_STOP_MODES = frozenset({"smart", "fast", "immediate"})
PG_DEMOTE_MODES = frozenset({"offline", "graceful", "immediate", "immediate-nolock"})

HA = schemas(
    OpSchema("ha.status"),
    OpSchema("ha.wakeup"),
    OpSchema("ha.write_failover", (F("value", (dict,)),)),
    OpSchema("ha.clear_failover", (F("version", (int,), required=False, nullable=True),)),
    OpSchema("ha.config", (F("mode", (str,)), F("value", (dict,)))),
    OpSchema(
        "ha.restart",
        (
            F("schedule", (str,), required=False, nullable=True),
            F("role", (str,), required=False, nullable=True),
            F("postgres_version", (str,), required=False, nullable=True),
            F("restart_pending", (bool,), required=False, nullable=True),
            F("timeout", _num, required=False, nullable=True),
        ),
    ),
    OpSchema("ha.cancel_restart"),
    OpSchema("ha.reload"),
    OpSchema("ha.reinitialize", (F("force", (bool,), required=False),)),
    OpSchema("ha.failsafe", (F("value", (dict,)),)),
)

WD = schemas(
    OpSchema("wd.arm", (F("timeout", _num),)),
    OpSchema("wd.keepalive"),
    OpSchema("wd.disarm"),
    OpSchema("wd.status"),
)
