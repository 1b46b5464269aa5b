"""A Consul test server (no Consul can be installed here) and its DcsServer adapter.

It runs in-process on a free 127.0.0.1 port and implements the subset of Consul's HTTP API that
shared/dcs/consul.py uses, with the semantics of consul_fake_store.py (indexes, compare-and-set, locks,
sessions that really expire after 2 x TTL, lock-delay, blocking queries that really block):

    GET    /v1/status/leader
    GET    /v1/kv/<key>            ?recurse ?keys ?raw ?index=&wait= ?consistent ?stale ?dc   (404 when none)
    PUT    /v1/kv/<key>            ?cas= ?flags= ?acquire= ?release= ?dc     -> true | false
    DELETE /v1/kv/<key>            ?recurse ?cas= ?dc                        -> true | false
    PUT    /v1/session/create      {Name, Node, TTL, LockDelay, Behavior, Checks|NodeChecks} -> {"ID"}
    PUT    /v1/session/renew/<id>  -> [session] | 404
    PUT    /v1/session/destroy/<id> -> true
    GET    /v1/session/info/<id>   -> [session] | []        GET /v1/session/list
    PUT    /v1/agent/service/register   PUT /v1/agent/service/deregister/<id>
    GET    /v1/agent/services           GET /v1/agent/checks

Reads answer X-Consul-Index, X-Consul-KnownLeader and X-Consul-LastContact. With a token configured, every
call but /v1/status/* needs it in X-Consul-Token (or ?token=), else 403. A `dc` other than "dc1" gets 500
"No path to datacenter". Not implemented: transactions, ACL/catalog/health/event endpoints, blocking on
anything but KV, session health-check failures. The data lives in memory and survives stop()/start().
"""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

from tests.support.consul_fake_http import HttpTestServer, JsonHandler
from tests.support.consul_fake_store import DATACENTER, ConsulError, ConsulState, Entry, parse_duration
from tests.support.dcs_servers import DcsServer

DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0


def entry_json(entry: Entry) -> dict[str, Any]:
    body: dict[str, Any] = {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": None if entry.value is None else base64.b64encode(entry.value).decode(),
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }
    if entry.session:
        body["Session"] = entry.session
    return body


class ConsulApi:
    """What the handler needs: the state, and the ACL token (None: ACLs off)."""

    def __init__(self, state: ConsulState, token: str | None) -> None:
        self.state = state
        self.token = token


class ConsulHandler(JsonHandler):
    def _int(self, name: str) -> int | None:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise ConsulError(400, f"Invalid {name} value {raw!r}")

    def _reply_read(self, status: int, value: Any, index: int) -> None:
        headers = {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
        if value is None:
            self.send_raw(status, b"", headers)
        else:
            self.send_json(status, value, headers)

    def route(self, method: str) -> None:
        api: ConsulApi = self.api
        path = self.url_path
        try:
            if not path.startswith("/v1/status/"):
                token = self.headers.get("X-Consul-Token") or self.query.get("token")
                if api.token is not None and token != api.token:
                    raise ConsulError(403, "ACL not found" if token else "Permission denied")
                if self.query.get("dc") not in (None, "", DATACENTER):
                    raise ConsulError(500, "No path to datacenter")
            self._route(method, path, api.state)
        except ConsulError as exc:
            self.send_raw(exc.status, exc.message.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def _route(self, method: str, path: str, state: ConsulState) -> None:
        if path == "/v1/status/leader" and method == "GET":
            self.send_json(200, "127.0.0.1:8300")
        elif path.startswith("/v1/kv/"):
            self._kv(method, path[len("/v1/kv/") :], state)
        elif path.startswith("/v1/session/"):
            self._session(method, path[len("/v1/session/") :], state)
        elif path.startswith("/v1/agent/"):
            self._agent(method, path[len("/v1/agent/") :], state)
        else:
            raise ConsulError(404, f"no handler for {method} {path}")

    def _kv(self, method: str, key: str, state: ConsulState) -> None:
        recurse = "recurse" in self.query
        if method == "GET":
            index = self._int("index")
            if index:
                wait = min(parse_duration(self.query.get("wait"), DEFAULT_WAIT_S), MAX_WAIT_S)
                state.wait_for_index(key, recurse or "keys" in self.query, index, wait, self.owner.running)
            current, entries = state.kv_get(key, recurse or "keys" in self.query)
            if not entries:
                self._reply_read(404, None, current)
            elif "keys" in self.query:
                self._reply_read(200, [e.key for e in entries], current)
            elif "raw" in self.query:
                self.send_raw(200, entries[0].value or b"", {"X-Consul-Index": str(current)})
            else:
                self._reply_read(200, [entry_json(e) for e in entries], current)
        elif method == "PUT":
            if "acquire" in self.query and "release" in self.query:
                raise ConsulError(400, "Conflicting flags: acquire=&release=")
            applied = state.kv_put(
                key,
                self.body,
                cas=self._int("cas"),
                flags=self._int("flags"),
                acquire=self.query.get("acquire") or None,
                release=self.query.get("release") or None,
            )
            self.send_json(200, applied)
        elif method == "DELETE":
            self.send_json(200, state.kv_delete(key, recurse=recurse, cas=self._int("cas")))
        else:
            raise ConsulError(405, "method not allowed")

    def _session(self, method: str, rest: str, state: ConsulState) -> None:
        verb, _, session_id = rest.partition("/")
        if verb == "create" and method == "PUT":
            try:
                body = json.loads(self.body or b"{}")
            except ValueError:
                raise ConsulError(400, "Request decode failed")
            self.send_json(200, {"ID": state.session_create(body if isinstance(body, dict) else {})})
        elif verb == "renew" and method == "PUT":
            session = state.session_renew(session_id)
            if session is None:
                raise ConsulError(404, f"Session id '{session_id}' not found")
            self.send_json(200, [session.to_json()])
        elif verb == "destroy" and method == "PUT":
            state.session_destroy(session_id)
            self.send_json(200, True)
        elif verb == "info" and method == "GET":
            session = state.session_get(session_id)
            self._reply_read(200, [session.to_json()] if session else [], state.index)
        elif verb == "list" and method == "GET":
            self._reply_read(200, [s.to_json() for s in state.session_list()], state.index)
        else:
            raise ConsulError(404, f"no handler for {method} /v1/session/{rest}")

    def _agent(self, method: str, rest: str, state: ConsulState) -> None:
        if rest == "service/register" and method == "PUT":
            try:
                body = json.loads(self.body or b"{}")
            except ValueError:
                raise ConsulError(400, "Request decode failed")
            state.service_register(body)
            self.send_raw(200, b"")
        elif rest.startswith("service/deregister/") and method == "PUT":
            if not state.service_deregister(rest[len("service/deregister/") :]):
                raise ConsulError(404, "Unknown service ID")
            self.send_raw(200, b"")
        elif rest == "services" and method == "GET":
            with state.cond:
                self.send_json(200, {k: dict(v) for k, v in state.services.items()})
        elif rest == "checks" and method == "GET":
            with state.cond:
                self.send_json(200, {k: dict(v) for k, v in state.checks.items()})
        else:
            raise ConsulError(404, f"no handler for {method} /v1/agent/{rest}")


class ConsulServer(DcsServer):
    """The Consul test server for the contract suite and the Consul tests. Its session_ttl_min is 1 s (a real
    agent's default is 10 s), and the backend is told so (`min_session_ttl`), so that tests can use small ttls."""

    kind = "consul"
    min_ttl: ClassVar[float] = 4.0
    TOKEN = "haven-consul-test-token"
    SESSION_TTL_MIN_S = 1.0

    def __init__(self, token: str | None = TOKEN) -> None:
        super().__init__()
        self.state = ConsulState(session_ttl_min=self.SESSION_TTL_MIN_S)
        self.api = ConsulApi(self.state, token)
        self.http = HttpTestServer(ConsulHandler, self.api)
        self.http.on_stop.append(self._wake_waiters)

    @property
    def url(self) -> str:
        return self.http.url

    def _wake_waiters(self) -> None:
        with self.state.cond:
            self.state.cond.notify_all()

    def start(self) -> None:
        self.state.reset_session_timers()  # what a newly elected Consul leader does
        self.http.start()

    def stop(self) -> None:
        self.http.stop()

    def section(self, name: str) -> dict[str, Any]:
        section: dict[str, Any] = {"url": self.url, "min_session_ttl": self.SESSION_TTL_MIN_S}
        if self.api.token is not None:
            section["token"] = self.api.token
        return section
