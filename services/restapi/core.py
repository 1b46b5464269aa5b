"""The REST API as a pure function: (method, path, query, snapshot, now) -> (status, body | None, headers).

Routing follows Patroni 3.2 (D18): only the first path segment selects a dedicated GET handler; every other
GET, and every HEAD and OPTIONS whatever the path, goes to the generic status handler, which matches the path
by substring. GET answers carry the status JSON; HEAD, OPTIONS, /liveness and /readiness only a status code.
Unsafe methods go to a ControlHandler (services/restapi/control.py), which forwards them as ha.* requests.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs

from services.restapi import health, metrics
from services.restapi.snapshot import Snapshot
from shared.model.cluster_json import cluster_as_json

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_QUERY_FIELDS = 64

JSON_TYPE = "application/json"
HTML_TYPE = "text/html;charset=utf-8"
TEXT_TYPE = "text/plain"
# Patroni's write_response() labels its plain-text answers ("Switchover scheduled", "Access is denied") text/html.
ANSWER_TYPE = "text/html"

# The standard library's error page (http.server), which Patroni's send_error() produces.
_ERROR_PAGE = """\
<!DOCTYPE HTML>
<html lang="en">
    <head>
        <meta charset="utf-8">
        <title>Error response</title>
    </head>
    <body>
        <h1>Error response</h1>
        <p>Error code: %(code)d</p>
        <p>Message: %(message)s.</p>
        <p>Error code explanation: %(code)s - %(explain)s.</p>
    </body>
</html>
"""


class Response(NamedTuple):
    status: int
    body: bytes | None  # None: the status code only (no body)
    headers: dict[str, str]


def json_response(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value, default=str).encode(), {"Content-Type": JSON_TYPE})


def text_response(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    """A short text answer, as Patroni's write_response(status, text) sends it."""
    return Response(status, text.encode("utf-8", "replace"), {"Content-Type": ANSWER_TYPE, **(headers or {})})


def status_only(status: int) -> Response:
    return Response(status, None, {})


def error_page(status: int, message: str | None = None) -> Response:
    """The stdlib error page, as Patroni's send_error(status[, message]) writes it."""
    known = HTTPStatus(status)
    page = _ERROR_PAGE % {
        "code": status,
        "message": html.escape(message or known.phrase, quote=False),
        "explain": html.escape(known.description, quote=False),
    }
    return Response(status, page.encode("utf-8", "replace"), {"Content-Type": HTML_TYPE, "Connection": "close"})


def internal_error() -> Response:
    return error_page(500, "Internal error, see the REST API log")


# -- the hook for the control plane ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlRequest:
    """An unsafe request (POST/PUT/PATCH/DELETE) as the HTTP shell received it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str  # the peer address, for allowlists (D38)
    client_cert: bool = False  # over HTTPS, the client presented a certificate the server verified (D36)


class ControlHandler(Protocol):
    """Turns an unsafe request into ha.* requests to the brain (added with the control plane)."""

    def __call__(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response: ...


def not_implemented(request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
    """The ControlHandler until the control plane exists: what http.server answers for a missing do_<METHOD>."""
    return error_page(501, f"Unsupported method ({request.method!r})")


# -- GET handlers selected by the first path segment ------------------------------------------------------------

Query = Mapping[str, list[str]]
Handler = Callable[[str, Query, Snapshot, float], Response]


def _get_patroni(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    return json_response(200, snapshot.status_body(now))  # D19: always 200


def _no_view() -> Response:
    return error_page(503, "No cluster view from the DCS yet")


def _get_cluster(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    if snapshot.cluster is None:
        return _no_view()
    return json_response(200, cluster_as_json(snapshot.cluster, snapshot.identity.scope))


def _get_history(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    if snapshot.cluster is None:
        return _no_view()
    history = snapshot.cluster.history
    return json_response(200, [list(line) for line in history.lines] if history else [])


def _get_config(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    if snapshot.cluster is None or snapshot.cluster.config is None:
        return error_page(502)  # D23
    return json_response(200, snapshot.cluster.config.data)


def _get_failsafe(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    failsafe = snapshot.cluster.failsafe if snapshot.cluster is not None else None
    if not isinstance(failsafe, Mapping):
        return error_page(502)
    return json_response(200, failsafe)


def _get_liveness(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    return status_only(health.liveness(snapshot, now))


def _get_readiness(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    return status_only(health.readiness(snapshot, now))


def _get_metrics(path: str, query: Query, snapshot: Snapshot, now: float) -> Response:
    text = metrics.render(snapshot.status_body(now), snapshot.identity.scope, snapshot.identity.name)
    return Response(200, text.encode(), {"Content-Type": TEXT_TYPE})


GET_HANDLERS: Mapping[str, Handler] = {
    "patroni": _get_patroni,
    "cluster": _get_cluster,
    "history": _get_history,
    "config": _get_config,
    "failsafe": _get_failsafe,
    "liveness": _get_liveness,
    "readiness": _get_readiness,
    "metrics": _get_metrics,
}


def first_segment(path: str) -> str:
    return path.lstrip("/").split("/")[0]


def parse_query(query: str) -> Query:
    """Patroni's parse_qs(): blank values dropped, repeated keys kept in order. ValueError when abusive."""
    return parse_qs(query, max_num_fields=MAX_QUERY_FIELDS, errors="replace")


def respond(method: str, path: str, query: str, snapshot: Snapshot, now: float) -> Response:
    method = method.upper()
    if method not in SAFE_METHODS:
        return not_implemented(ControlRequest(method, path, query, {}, b"", ""), snapshot, now)
    try:
        params = parse_query(query)
    except ValueError:
        return error_page(400, f"Bad request: more than {MAX_QUERY_FIELDS} query parameters")
    if method == "GET":
        handler = GET_HANDLERS.get(first_segment(path))
        if handler is not None:
            return handler(path, params, snapshot, now)
        status = snapshot.status_body(now)
        return json_response(health.status_code(path, params, snapshot, now, status), status)
    return status_only(health.status_code(path, params, snapshot, now))  # HEAD, OPTIONS (D3, K1)
