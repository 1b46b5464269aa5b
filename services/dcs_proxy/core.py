"""dcs_proxy's logic without sockets: the cluster view, request timeouts, and each dcs.* op as calls on
the Backend contract (shared/dcs/base.py). The shell (main.py) owns the sockets, threads and timers."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.config import effective
from shared.dcs.base import Backend, DCSUnavailable, Snapshot
from shared.model.objects import Status, dumps
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError
from shared.protocol.ops import WRITABLE_KEYS

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Request], dict[str, Any]]  # as shared.protocol.transport.Handler

# Time kept back from a request's deadline so that the reply still reaches the caller in time.
REPLY_MARGIN_S = 0.05


def retry_timeout_of(config_value: str | None, bootstrap_dcs: Mapping[str, Any]) -> int:
    """retry_timeout of the effective dynamic configuration: the DCS `config` key when it holds a JSON map,
    else bootstrap.dcs, both over the defaults (A6, A7)."""
    data: Any = None
    if config_value:
        try:
            data = json.loads(config_value)
        except ValueError:
            data = None
    return effective(data if isinstance(data, dict) else None, bootstrap_dcs).retry_timeout


def request_timeout(deadline: float, now: float, retry_timeout: float) -> float:
    """How long a DCS call may take for this request: until just before its deadline, at most retry_timeout."""
    remaining = deadline - now - REPLY_MARGIN_S
    if remaining <= 0:
        raise OpError(ErrorCode.DEADLINE_EXCEEDED, "no time left before the request's deadline")
    return min(remaining, float(retry_timeout))


def build_view(
    scope: str, namespace: str, backend: str, snapshot: Snapshot, ok: bool, last_seen: float
) -> dict[str, Any]:
    """The `dcs_proxy.cluster_view` body, exactly as docs/protocol.md defines it."""
    return {
        "scope": scope,
        "namespace": namespace,
        "backend": backend,
        "ok": ok,
        "last_seen": last_seen,
        "revision": snapshot.revision,
        "keys": {
            key: {
                "value": kv.value,
                "version": kv.version,
                "session": kv.session,
                "ttl": None if kv.ttl is None else round(kv.ttl, 3),
            }
            for key, kv in sorted(snapshot.keys.items())
        },
    }


@dataclass
class ViewTracker:
    """Turns backend reads into views; remembers the last good read and the effective retry_timeout."""

    scope: str
    namespace: str
    backend: str
    bootstrap_dcs: Mapping[str, Any]
    last_seen: float = 0.0
    last: Snapshot = field(default_factory=Snapshot)
    retry_timeout: float = 0.0
    _config_seen: tuple[int | None, str | None] | None = None

    def __post_init__(self) -> None:
        self.retry_timeout = retry_timeout_of(None, self.bootstrap_dcs)

    def update(self, snapshot: Snapshot | None, healthy: bool, now: float) -> dict[str, Any]:
        """snapshot None: the backend could not be read; the view keeps the last keys with ok false."""
        if snapshot is not None:
            self.last = snapshot
            config = snapshot.keys.get("config")
            seen = (config.version, config.value) if config else None
            if seen != self._config_seen:
                self._config_seen = seen
                self.retry_timeout = retry_timeout_of(config.value if config else None, self.bootstrap_dcs)
        ok = snapshot is not None and healthy
        if ok:
            self.last_seen = now
        return build_view(self.scope, self.namespace, self.backend, self.last, ok, self.last_seen)


class ReplyCache:
    """Replies to mutating requests by request id, so that a request sent again (same id) is answered
    with the first outcome instead of running twice (STYLE.md: idempotent by request id)."""

    def __init__(self, size: int = 256, keep_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.keep_s = keep_s
        self.clock = clock
        self._replies: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, request_id: str) -> dict[str, Any] | None:
        entry = self._replies.get(request_id)
        if entry is None or self.clock() - entry[0] > self.keep_s:
            return None
        return entry[1]

    def put(self, request_id: str, body: dict[str, Any]) -> None:
        self._replies[request_id] = (self.clock(), body)
        self._replies.move_to_end(request_id)
        while len(self._replies) > self.size:
            self._replies.popitem(last=False)


def _json(value: Any, field: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise OpError(ErrorCode.INVALID_BODY, f"field '{field}' cannot be stored as JSON: {exc}")


def _positive(body: Mapping[str, Any], key: str) -> float:
    value = float(body[key])
    if value <= 0:
        raise OpError(ErrorCode.INVALID_BODY, f"field '{key}' must be positive")
    return value


def _name(body: Mapping[str, Any]) -> str:
    name = str(body["name"])
    if not name:
        raise OpError(ErrorCode.INVALID_BODY, "field 'name' must not be empty")
    return name


def _writable_key(body: Mapping[str, Any]) -> str:
    key = str(body["key"])
    if key not in WRITABLE_KEYS:
        raise OpError(ErrorCode.INVALID_BODY, f"key {key!r} is not one of {', '.join(sorted(WRITABLE_KEYS))}")
    return key


def status_value(last_lsn: int, slots: Any) -> str:
    """The `/status` value (B10): {"optime": lsn, "slots": {name: lsn}} in compact JSON."""
    if slots is not None and not (
        isinstance(slots, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in slots.values())
    ):
        raise OpError(ErrorCode.INVALID_BODY, "field 'slots' must map slot names to LSNs (integers)")
    return Status(last_lsn, {str(k): v for k, v in slots.items()} if slots else None).to_value()


class Operations:
    """One handler per dcs.* op. Each maps to backend calls; DCSUnavailable becomes the error `unavailable`."""

    def __init__(
        self,
        backend: Backend,
        read_view: Callable[[], dict[str, Any]],
        retry_timeout: Callable[[], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.read_view = read_view
        self.retry_timeout = retry_timeout
        self.clock = clock
        self.replies = ReplyCache()

    def handlers(self) -> dict[str, Handler]:
        ops: dict[str, Handler] = {
            "dcs.get_cluster": self.get_cluster,
            "dcs.initialize": self.initialize,
            "dcs.cancel_initialization": self.cancel_initialization,
            "dcs.take_leader": self.take_leader,
            "dcs.refresh_leader": self.refresh_leader,
            "dcs.release_leader": self.release_leader,
            "dcs.touch_member": self.touch_member,
            "dcs.write": self.write,
            "dcs.delete": self.delete,
            "dcs.delete_cluster": self.delete_cluster,
        }
        return {op: self._guarded(op, fn) for op, fn in ops.items()}

    def _guarded(self, op: str, fn: Handler) -> Handler:
        mutating = op != "dcs.get_cluster"

        def handler(body: dict[str, Any], req: Request) -> dict[str, Any]:
            cached = self.replies.get(req.id) if mutating else None
            if cached is not None:
                return cached
            try:
                reply = fn(body, req)
            except DCSUnavailable as exc:
                log.log(logging.WARNING if mutating else logging.DEBUG, "%s: %s", op, exc)
                raise OpError(ErrorCode.UNAVAILABLE, f"{op}: {exc}")
            if mutating:
                self.replies.put(req.id, reply)
            return reply

        return handler

    def _timeout(self, req: Request) -> float:
        return request_timeout(req.deadline, self.clock(), self.retry_timeout())

    def get_cluster(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        view = self.read_view()
        if not view["ok"]:
            raise DCSUnavailable("the DCS view is not current")
        return view

    def initialize(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        applied = self.backend.initialize(bool(body["create_new"]), str(body["sysid"]), timeout=self._timeout(req))
        return {"applied": applied}

    def cancel_initialization(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        return {"applied": self.backend.cancel_initialization(timeout=self._timeout(req))}

    def take_leader(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        name, ttl = _name(body), _positive(body, "ttl")
        return {"applied": self.backend.take_leader(name, ttl, timeout=self._timeout(req))}

    def refresh_leader(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        """A4/B22: the leader CAS first; status and failsafe only once it succeeded."""
        name, ttl = _name(body), _positive(body, "ttl")
        last_lsn, failsafe = body.get("last_lsn"), body.get("failsafe")
        # Both values are checked before anything is written.
        extras = [
            ("status", status_value(last_lsn, body.get("slots")) if last_lsn else None),
            ("failsafe", None if failsafe is None else _json(failsafe, "failsafe")),
        ]
        if not self.backend.refresh_leader(name, ttl, timeout=self._timeout(req)):
            return {"applied": False}
        reply: dict[str, Any] = {"applied": True}
        for key, value in extras:
            if value is None:
                continue
            try:
                self.backend.write(key, value, None, None, timeout=self._timeout(req))
            except (DCSUnavailable, OpError) as exc:  # the lock is refreshed: report, do not fail the op
                log.warning("dcs.refresh_leader: the leader key is refreshed but %s was not written: %s", key, exc)
                reply.setdefault("not_written", []).append(key)
        return reply

    def release_leader(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        """B3/B22: the last LSN goes to `status` first, then the compare-and-delete of the leader key."""
        name, last_lsn = _name(body), body.get("last_lsn")
        if last_lsn:
            self.backend.write("status", status_value(last_lsn, None), None, None, timeout=self._timeout(req))
        return {"applied": self.backend.release_leader(name, timeout=self._timeout(req))}

    def touch_member(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        name, ttl = _name(body), _positive(body, "ttl")
        data_json = _json(body["data"], "data")
        return {"applied": self.backend.touch_member(name, data_json, ttl, timeout=self._timeout(req))}

    def write(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        key = _writable_key(body)
        ttl = None if body.get("ttl") is None else _positive(body, "ttl")
        applied, version = self.backend.write(
            key, str(body["value"]), body.get("version"), ttl, timeout=self._timeout(req)
        )
        return {"applied": applied, "version": version}

    def delete(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        key = _writable_key(body)
        return {"applied": self.backend.delete(key, body.get("version"), timeout=self._timeout(req))}

    def delete_cluster(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        return {"applied": self.backend.delete_cluster(timeout=self._timeout(req))}
