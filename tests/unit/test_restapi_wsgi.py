"""The WSGI adapter of the REST API (services.restapi.main.RestApp), called directly: no sockets."""

from __future__ import annotations

import io
import json
from typing import Any

from services.restapi import core
from services.restapi.main import RestApp, SnapshotHolder, split_target
from services.restapi.snapshot import Identity, Snapshot
from shared.protocol.endpoints import Topic
from tests.unit.test_restapi_core import NAME, NOW, SCOPE, cluster_view, node_status


def call(app: RestApp, method: str, target: str, body: bytes = b"") -> tuple[str, dict[str, str], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    environ = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": target,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": "Basic eDp5",
        "REMOTE_ADDR": "10.0.0.9",
        "wsgi.input": io.BytesIO(body),
    }
    chunks = app(environ, start_response)
    return captured["status"], captured["headers"], b"".join(chunks)


def primary_app(**kwargs: Any) -> RestApp:
    holder = SnapshotHolder(Identity(NAME, SCOPE))
    assert holder.apply(Topic.CLUSTER_VIEW, cluster_view(NAME), NOW)
    assert holder.apply(Topic.NODE_STATUS, node_status("master"), NOW)
    return RestApp(holder, clock=lambda: NOW, **kwargs)


def test_status_line_length_and_empty_body_for_head_and_options() -> None:
    app = primary_app()
    assert call(app, "OPTIONS", "/primary") == ("200 OK", {"Content-Length": "0"}, b"")
    assert call(app, "HEAD", "/replica") == ("503 Service Unavailable", {"Content-Length": "0"}, b"")
    status, headers, body = call(app, "GET", "/patroni?x=1")
    assert status == "200 OK" and headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(body)) and json.loads(body)["role"] == "master"


def test_malformed_events_leave_the_snapshot_alone() -> None:
    app = primary_app()
    before = app.holder.current
    assert not app.holder.apply(Topic.NODE_STATUS, "garbage", NOW)
    assert app.holder.current is before and app.holder.dropped == 1


def test_unexpected_errors_give_500_and_the_app_keeps_serving() -> None:
    def broken(request: core.ControlRequest, snapshot: Snapshot, now: float) -> core.Response:
        raise RuntimeError("bug")

    app = primary_app(control=broken)
    status, _, body = call(app, "POST", "/restart")
    assert status == "500 Internal Server Error" and b"Internal error" in body
    assert call(app, "OPTIONS", "/")[0] == "200 OK"


def test_unsafe_requests_reach_the_control_hook_with_their_body_and_headers() -> None:
    seen: list[core.ControlRequest] = []

    def control(request: core.ControlRequest, snapshot: Snapshot, now: float) -> core.Response:
        seen.append(request)
        return core.Response(202, b"Switchover scheduled", {"Content-Type": "text/plain"})

    app = primary_app(control=control)
    assert call(app, "POST", "/switchover?x=1", b'{"leader": "pg1"}')[::2] == ("202 Accepted", b"Switchover scheduled")
    assert seen == [
        core.ControlRequest(
            "POST",
            "/switchover",
            "x=1",
            {"authorization": "Basic eDp5", "content-type": "application/json", "content-length": "17"},
            b'{"leader": "pg1"}',
            "10.0.0.9",
        )
    ]
    assert call(primary_app(), "DELETE", "/switchover")[0] == "501 Not Implemented"


def test_request_targets_split_as_patroni_reads_them() -> None:
    assert split_target("/replica?lag=1MB", {}) == ("/replica", "lag=1MB")
    assert split_target("//replica", {}) == ("//replica", "")
    assert split_target("http://10.0.0.1:8008/primary?tag_a=b", {}) == ("/primary", "tag_a=b")
    assert split_target("", {"PATH_INFO": "/read only", "QUERY_STRING": "a=1"}) == ("/read%20only", "a=1")


def test_d39_extra_headers_are_added_to_every_answer() -> None:
    extra = [("X-Frame-Options", "SAMEORIGIN"), ("X-Content-Type-Options", "nosniff")]
    app = primary_app(extra_headers=extra)
    for method, target in [("GET", "/patroni"), ("OPTIONS", "/primary"), ("GET", "/config"), ("POST", "/nothing")]:
        headers = call(app, method, target)[1]
        assert headers["X-Frame-Options"] == "SAMEORIGIN" and headers["X-Content-Type-Options"] == "nosniff"


def test_unsafe_requests_without_content_length_carry_none() -> None:
    seen: list[core.ControlRequest] = []

    def control(request: core.ControlRequest, snapshot: Snapshot, now: float) -> core.Response:
        seen.append(request)
        return core.text_response(200, "ok")

    app = primary_app(control=control)
    environ = {
        "REQUEST_METHOD": "PATCH",
        "REQUEST_URI": "/config",
        "REMOTE_ADDR": "10.0.0.9",
        "wsgi.input": io.BytesIO(),
    }
    app(environ, lambda status, headers: None)
    assert "content-length" not in seen[0].headers and seen[0].body == b""
