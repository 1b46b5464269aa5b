"""The brain's control requests from the REST API (docs/protocol.md, ha_loop section).

DCS writes that an operator asks for (/failover, /config) are carried out here at once through dcs_proxy;
work on the node (restart, reload, reinitialize) goes into memory through the pure request functions of
controls.py and is done by the next tick. Results the REST API waits for are kept in `controls`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from services.ha_loop import controls, failsafe
from services.ha_loop.decision import ControlResult, RestartRequest
from shared.config import deep_merge
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError, RemoteError

if TYPE_CHECKING:
    from services.ha_loop.main import Brain

KEEP_DONE_S = 60.0


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class ControlDesk:
    def __init__(self, brain: Brain) -> None:
        self.brain = brain
        self.controls: dict[str, dict[str, Any]] = {}

    def handlers(self) -> dict[str, Callable[[dict[str, Any], Request], dict[str, Any]]]:
        return {
            "ha.write_failover": self.write_failover,
            "ha.clear_failover": self.clear_failover,
            "ha.config": self.config,
            "ha.restart": self.restart,
            "ha.cancel_restart": self.cancel_restart,
            "ha.reload": self.reload,
            "ha.reinitialize": self.reinitialize,
            "ha.failsafe": self.failsafe,
        }

    # --- results --------------------------------------------------------------------------------------

    def started(self, control_id: str) -> None:
        self.controls[control_id] = {"state": "running", "status": 0, "message": "", "at": time.time()}

    def finished(self, results: tuple[ControlResult, ...]) -> None:
        now = time.time()
        for result in results:
            self.controls[result.id] = {"state": "done", "status": result.status, "message": result.message, "at": now}
        for key in [k for k, v in self.controls.items() if v["state"] == "done" and now - v["at"] > KEEP_DONE_S]:
            del self.controls[key]

    def published(self) -> dict[str, dict[str, Any]]:
        return {
            k: {"state": v["state"], "status": v["status"], "message": v["message"]} for k, v in self.controls.items()
        }

    # --- DCS writes -----------------------------------------------------------------------------------

    def _dcs_write(self, key: str, value: str, version: int | None) -> dict[str, Any]:
        try:
            reply = self.brain.clients.dcs.call(
                "dcs.write", {"key": key, "value": value, "version": version}, timeout=self.brain.dynamic.retry_timeout
            )
        except RemoteError as exc:
            raise OpError(ErrorCode.UNAVAILABLE, f"cannot write {key}: {exc.message}")
        return reply

    def write_failover(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        value = {k: body["value"][k] for k in ("leader", "member", "scheduled_at") if body["value"].get(k)}
        reply = self._dcs_write("failover", compact(value), None)
        self.brain.wake()
        return {"applied": bool(reply.get("applied"))}

    def clear_failover(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        reply = self._dcs_write("failover", "{}", body.get("version"))
        self.brain.wake()
        return {"applied": bool(reply.get("applied"))}

    def config(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        """D24/D25: patch deep-merges with compare-and-set on the config version; put replaces it."""
        mode, value = body["mode"], body["value"]
        if mode not in ("patch", "put"):
            raise OpError(ErrorCode.INVALID_BODY, f"mode must be patch or put, got {mode!r}")
        cluster = self.brain.read_cluster()
        if cluster is None:
            raise OpError(ErrorCode.UNAVAILABLE, "the DCS cannot be read")
        if mode == "patch":
            if cluster.config is None:
                raise OpError(ErrorCode.PRECONDITION_FAILED, "the cluster has no configuration to patch")
            new = deep_merge(cluster.config.data, value)
            reply = self._dcs_write("config", compact(new), cluster.config.version)
        else:
            new = value
            reply = self._dcs_write("config", compact(new), None)
        self.brain.wake()
        return {"applied": bool(reply.get("applied")), "config": new}

    # --- work on the node -----------------------------------------------------------------------------

    def restart(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        schedule = body.get("schedule")
        schedule_ts = controls.parse_schedule(schedule) if schedule else None
        if schedule and schedule_ts is None:
            raise OpError(ErrorCode.INVALID_BODY, f"schedule must be ISO-8601 with a timezone, got {schedule!r}")
        timeout = body.get("timeout")
        request = RestartRequest(
            id=req.id,
            role=body.get("role"),
            postgres_version=body.get("postgres_version"),
            restart_pending=body.get("restart_pending"),
            timeout=float(timeout) if timeout is not None else None,
            schedule=schedule,
            schedule_ts=schedule_ts,
        )
        memory, status, message = controls.request_restart(self.brain.memory, request, self.brain.last_pg())
        self.brain.memory = memory
        if status is not None:
            self.brain.publish()
            return {"status": status, "message": message}
        self.started(req.id)
        self.brain.wake()
        return {"control": req.id}

    def cancel_restart(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        self.brain.memory, status, message = controls.cancel_restart(self.brain.memory)
        self.brain.publish()
        return {"status": status, "message": message}

    def reload(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        self.brain.reread_config()
        self.brain.memory, status, message = controls.request_reload(self.brain.memory)
        return {"status": status, "message": message}  # D31: no wake-up; the next regular tick reloads

    def reinitialize(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        memory, status, message = controls.request_reinitialize(
            self.brain.memory,
            self.brain.cluster,
            self.brain.last_pg(),
            self.brain.facts.name,
            req.id,
            bool(body.get("force")),
        )
        self.brain.memory = memory
        if status == 200:
            self.brain.wake()
        return {"status": status, "message": message}

    def failsafe(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        """D33: a primary without a DCS asks whether we still accept it (C85)."""
        brain = self.brain
        memory, status, message = failsafe.request(
            brain.memory,
            body["value"],
            time.time(),
            float(brain.dynamic.ttl),
            brain.last_pg(),
            failsafe.enabled(brain.dynamic.data),
        )
        if memory is not brain.memory:
            brain.memory = memory
            brain.publish()
        return {"status": status, "message": message}
