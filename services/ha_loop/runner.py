"""Running a decision's actions through the other programs, one request each."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop.core import Outcome
from shared.protocol.errors import RemoteError
from shared.protocol.transport import Client

log = logging.getLogger(__name__)

PG_TIMEOUT = 5.0
WD_TIMEOUT = 2.0


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Clients:
    dcs: Client
    pg: Client
    wd: Client


class Runner:
    def __init__(
        self,
        clients: Clients,
        name: str,
        ttl: Callable[[], int],
        dcs_timeout: Callable[[], float],
        watchdog_required: bool,
    ) -> None:
        self.c = clients
        self.name = name
        self._ttl = ttl
        self._dcs_timeout = dcs_timeout
        self.watchdog_required = watchdog_required

    def request(self, action: a.Action) -> tuple[Client, str, dict[str, Any], float]:
        """The one request that carries out `action`."""
        name, ttl, dcs_t = self.name, self._ttl(), self._dcs_timeout()
        match action:
            case a.Initialize(create_new=create_new, sysid=sysid):
                return self.c.dcs, "dcs.initialize", {"create_new": create_new, "sysid": sysid}, dcs_t
            case a.CancelInitialization():
                return self.c.dcs, "dcs.cancel_initialization", {}, dcs_t
            case a.WriteConfig(value=value):
                return self.c.dcs, "dcs.write", {"key": "config", "value": dumps(value)}, dcs_t
            case a.TakeLeader():
                return self.c.dcs, "dcs.take_leader", {"name": name, "ttl": ttl}, dcs_t
            case a.RefreshLeader(last_lsn=lsn, slots=slots, failsafe=failsafe):
                body = {"name": name, "ttl": ttl, "last_lsn": lsn, "slots": dict(slots) if slots else None}
                if failsafe is not None:
                    body["failsafe"] = dict(failsafe)
                return self.c.dcs, "dcs.refresh_leader", body, dcs_t
            case a.WriteSync(members=members, quorum=quorum, version=version):
                sync: dict[str, Any] = {"leader": name}
                if quorum is not None:
                    sync["quorum"] = quorum
                sync["sync_standby"] = ",".join(members) if members else None
                return self.c.dcs, "dcs.write", {"key": "sync", "value": dumps(sync), "version": version}, dcs_t
            case a.DeleteSync(version=version):
                return self.c.dcs, "dcs.delete", {"key": "sync", "version": version}, dcs_t
            case a.ReleaseLeader(last_lsn=lsn):
                return self.c.dcs, "dcs.release_leader", {"name": name, "last_lsn": lsn}, dcs_t
            case a.TouchMember(data=data):
                return self.c.dcs, "dcs.touch_member", {"name": name, "data": dict(data), "ttl": ttl}, dcs_t
            case a.WriteHistory(value=value, version=version):
                return self.c.dcs, "dcs.write", {"key": "history", "value": value, "version": version}, dcs_t
            case a.ClearFailover(version=version):
                return self.c.dcs, "dcs.write", {"key": "failover", "value": "{}", "version": version}, dcs_t
            case a.PgConfigure(dynamic=dynamic):
                return self.c.pg, "pg.configure", {"dynamic": dict(dynamic)}, PG_TIMEOUT
            case a.PgBootstrap():
                return self.c.pg, "pg.bootstrap", {}, PG_TIMEOUT
            case a.PgClone(source=source, leader=leader):
                return self.c.pg, "pg.clone", {"source": dict(source), "leader": _opt(leader)}, PG_TIMEOUT
            case a.PgStart(role=role, leader=leader, timeout=timeout):
                body = {"role": role, "leader": _opt(leader)}
                if timeout is not None:
                    body["timeout"] = timeout
                return self.c.pg, "pg.start", body, PG_TIMEOUT
            case a.PgStop(mode=mode, checkpoint=checkpoint):
                return self.c.pg, "pg.stop", {"mode": mode, "checkpoint": checkpoint}, PG_TIMEOUT
            case a.PgRestart(leader=leader, timeout=timeout):
                body = {"leader": _opt(leader)}
                if timeout is not None:
                    body["timeout"] = timeout
                return self.c.pg, "pg.restart", body, PG_TIMEOUT
            case a.PgReload():
                return self.c.pg, "pg.reload", {}, PG_TIMEOUT
            case a.PgCancel():
                return self.c.pg, "pg.cancel", {}, PG_TIMEOUT
            case a.PgSetSync(mode=mode, num=num, names=names, strict=strict):
                return (
                    self.c.pg,
                    "pg.set_sync",
                    {"mode": mode, "num": num, "names": list(names), "strict": strict},
                    PG_TIMEOUT,
                )
            case a.PgSyncSlots(slots=slots, ignore=ignore, source=source):
                body = {"slots": dict(slots), "ignore": list(ignore), "source": _opt(source)}
                return self.c.pg, "pg.sync_slots", body, PG_TIMEOUT
            case a.PgCopySlots(source=source, names=names):
                return self.c.pg, "pg.copy_slots", {"source": dict(source), "names": list(names)}, PG_TIMEOUT
            case a.PgReinitialize(source=source, leader=leader):
                return self.c.pg, "pg.reinitialize", {"source": dict(source), "leader": _opt(leader)}, PG_TIMEOUT
            case a.PgPromote():
                return self.c.pg, "pg.promote", {}, PG_TIMEOUT
            case a.PgDemote(mode=mode, leader=leader):
                return self.c.pg, "pg.demote", {"mode": mode, "leader": _opt(leader)}, PG_TIMEOUT
            case a.PgFollow(leader=leader):
                return self.c.pg, "pg.follow", {"leader": _opt(leader)}, PG_TIMEOUT
            case a.WatchdogArm(timeout=timeout):
                return self.c.wd, "wd.arm", {"timeout": timeout}, WD_TIMEOUT
            case a.WatchdogKeepalive():
                return self.c.wd, "wd.keepalive", {}, WD_TIMEOUT
            case a.WatchdogDisarm():
                return self.c.wd, "wd.disarm", {}, WD_TIMEOUT
        raise ValueError(f"no request for {action!r}")

    def run(self, action: a.Action) -> Outcome:
        client, op, body, timeout = self.request(action)
        try:
            reply = client.call(op, body, timeout=timeout)
        except RemoteError as exc:
            log.warning("%s failed: %s: %s", op, exc.code, exc.message)
            return Outcome(ok=False, error_code=str(exc.code), body={"message": exc.message})
        applied = reply.get("applied")
        return Outcome(ok=True, applied=applied if isinstance(applied, bool) else None, body=reply)

    def is_soft_failure(self, action: a.Action) -> bool:
        """A failed watchdog request stops the plan only in required mode (C89); the member key is last.
        Replication slots are housekeeping: a failed pg.sync_slots is retried next tick and never holds back a
        promotion, a lock refresh or a demotion (C29)."""
        if isinstance(action, a.WatchdogKeepalive | a.WatchdogDisarm | a.PgSyncSlots):
            return True
        if isinstance(action, a.WatchdogArm):
            return not self.watchdog_required
        return False


def _opt(member: Any) -> dict[str, Any] | None:
    return dict(member) if member else None
