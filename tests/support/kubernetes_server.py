"""A Kubernetes API test server (no API server can be installed here) and its DcsServer adapter.

It runs in-process on a free 127.0.0.1 port (plain HTTP, bearer-token authentication) and implements the
core/v1 subset that shared/dcs/kubernetes.py uses, with the semantics of k8s_fake_store.py (resourceVersion
and optimistic concurrency, merge patches, validation, watch history):

    GET    /version
    GET    /api/v1/namespaces/{ns}/{resource}         ?labelSelector=   ({kind: <Kind>List, metadata, items})
    GET    /api/v1/namespaces/{ns}/{resource}?watch=1 ?resourceVersion= ?timeoutSeconds= ?labelSelector=
               newline-delimited JSON events {type: ADDED|MODIFIED|DELETED|ERROR, object}, chunked; without a
               resourceVersion (or "0") the current objects come first as ADDED; an object that starts or stops
               matching the selector comes as ADDED or DELETED; a too old resourceVersion gets one ERROR event
               carrying a 410 Status (as a real API server does), then the stream ends
    POST   /api/v1/namespaces/{ns}/{resource}                       201 | 409 AlreadyExists
    GET|PUT|PATCH|DELETE /api/v1/namespaces/{ns}/{resource}/{name}  404 NotFound | 409 Conflict | 410 | 415 | 422
    resource: pods, endpoints, configmaps, services

Errors are Status objects. Not implemented: other API groups, deletecollection, field selectors, bookmarks,
server-side apply, json-patch, subresources. The data lives in memory and survives stop()/start().
The adapter creates the pods n1..n3 (as a StatefulSet would: Patroni runs inside its pod) and writes a
kubeconfig for the backend; section() names it with the haven extra key `kubeconfig`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

from tests.support.consul_fake_http import HttpTestServer, JsonHandler
from tests.support.dcs_servers import DcsServer
from tests.support.k8s_fake_store import RESOURCES, ApiError, Event, K8sState, Selector

DEFAULT_WATCH_TIMEOUT_S = 1800.0


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    """Items of a list carry no kind/apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _event_type(event: Event, selector: Selector) -> str | None:
    now, before = selector.matches(event.obj), selector.matches(event.prev)
    if event.type == "DELETED":
        return "DELETED" if before else None
    if now:
        return "MODIFIED" if before else "ADDED"
    return "DELETED" if before else None


class K8sApi:
    def __init__(self, state: K8sState, token: str | None) -> None:
        self.state = state
        self.token = token


class K8sHandler(JsonHandler):
    def route(self, method: str) -> None:
        api: K8sApi = self.api
        try:
            if api.token is not None and self.headers.get("Authorization") != f"Bearer {api.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if self.url_path == "/version" and method == "GET":
                self.send_json(200, {"major": "1", "minor": "29", "gitVersion": "v1.29.0-haven-test"})
                return
            parts = self.url_path.strip("/").split("/")
            if parts[:3] != ["api", "v1", "namespaces"] or len(parts) not in (5, 6) or parts[4] not in RESOURCES:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            ns, resource = parts[3], parts[4]
            if len(parts) == 5:
                self._collection(method, api.state, resource, ns)
            else:
                self._item(method, api.state, resource, ns, parts[5])
        except ApiError as exc:
            self.send_json(exc.code, exc.status())

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON: {exc}")

    def _collection(self, method: str, state: K8sState, resource: str, ns: str) -> None:
        if method == "GET":
            selector = Selector(self.query.get("labelSelector"))
            if self.query.get("watch") in ("1", "true", "True"):
                self._watch(state, resource, ns, selector)
                return
            items, rv = state.list_objects(resource, ns, selector)
            kind = f"{RESOURCES[resource]}List"
            self.send_json(
                200,
                {
                    "kind": kind,
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(rv)},
                    "items": [_strip(o) for o in items],
                },
            )
        elif method == "POST":
            body = self._json_body()
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be an object")
            self.send_json(201, state.create(resource, ns, body))
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")

    def _item(self, method: str, state: K8sState, resource: str, ns: str, name: str) -> None:
        if method == "GET":
            self.send_json(200, state.get(resource, ns, name))
        elif method == "PUT":
            body = self._json_body()
            if not isinstance(body, dict) or (body.get("metadata") or {}).get("name") != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            self.send_json(200, state.replace(resource, ns, name, body))
        elif method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            self.send_json(200, state.patch(resource, ns, name, self._json_body(), content_type))
        elif method == "DELETE":
            body = self._json_body() if self.body else {}
            precondition = ((body or {}).get("preconditions") or {}).get("resourceVersion")
            state.delete(resource, ns, name, precondition)
            self.send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _send_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.write_chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    def _watch(self, state: K8sState, resource: str, ns: str, selector: Selector) -> None:
        raw_rv = self.query.get("resourceVersion")
        try:
            since = int(raw_rv) if raw_rv not in (None, "", "0") else None
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {raw_rv!r}")
        deadline = time.monotonic() + float(self.query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
        self.start_chunked(200)
        if since is None:
            items, since = state.list_objects(resource, ns, selector)
            for obj in items:
                self._send_event("ADDED", obj)
        running = self.owner.running
        try:
            while running.is_set() and (remaining := deadline - time.monotonic()) > 0:
                events, since = state.events_after(resource, ns, since, min(remaining, 1.0), running)
                for event in events:
                    kind = _event_type(event, selector)
                    if kind is not None:
                        self._send_event(kind, event.obj)
        except ApiError as exc:
            self._send_event("ERROR", exc.status())
        self.end_chunked()


class KubernetesServer(DcsServer):
    """The Kubernetes API test server for the contract suite and the Kubernetes tests."""

    kind = "kubernetes"
    min_ttl: ClassVar[float] = 4.0
    NAMESPACE = "default"
    TOKEN = "haven-k8s-test-token"
    PODS = ("n1", "n2", "n3")

    def __init__(self, token: str | None = TOKEN) -> None:
        super().__init__()
        self.state = K8sState()
        self.api = K8sApi(self.state, token)
        self.http = HttpTestServer(K8sHandler, self.api)
        self.http.on_stop.append(self._wake_watchers)
        self.kubeconfig = self.dir / "kubeconfig"
        self.pod_ips: dict[str, str] = {}

    @property
    def url(self) -> str:
        return self.http.url

    def _wake_watchers(self) -> None:
        with self.state.cond:
            self.state.cond.notify_all()

    def start(self) -> None:
        self.http.start()
        for name in self.PODS:
            self.ensure_pod(name)

    def stop(self) -> None:
        self.http.stop()

    def ensure_pod(self, name: str, namespace: str = NAMESPACE) -> str:
        """Create the pod `name` (the node's pod) when missing; return its IP."""
        ip = self.pod_ips.setdefault(name, f"10.0.0.{len(self.pod_ips) + 1}")
        try:
            self.state.get("pods", namespace, name)
        except ApiError:
            self.state.create(
                "pods",
                namespace,
                {
                    "metadata": {"name": name, "labels": {"app": "haven-test"}},
                    "spec": {"containers": [{"name": "postgres", "image": "haven:test"}], "nodeName": "node-1"},
                    "status": {"phase": "Running", "podIP": ip},
                },
            )
        return ip

    def write_kubeconfig(self, path: Path, token: str | None = None) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": token or self.api.token or ""}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": self.NAMESPACE}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def section(self, name: str) -> dict[str, Any]:
        ip = self.ensure_pod(name)
        if not self.kubeconfig.exists():
            self.write_kubeconfig(self.kubeconfig)
        return {
            "namespace": self.NAMESPACE,
            "kubeconfig": str(self.kubeconfig),
            "labels": {"application": "haven"},
            "pod_ip": ip,
        }
