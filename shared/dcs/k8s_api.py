"""Kubernetes API access for kubernetes.py over plain urllib3 (I9), not the official `kubernetes` client:
that package is 126 MB and takes 0.3-0.4 s to import, and we use six core/v1 calls. urllib3 gives every
call its own deadline, retries on `retriable_http_codes` and Retry-After, TCP keepalives, and watch streams
that close() can cut (Patroni dropped the official client for the same reasons).

Where the API is (first match):
1. `kubernetes.kubeconfig` (a haven extra: a kubeconfig file; `kubernetes.context` picks a context);
2. in-cluster: KUBERNETES_SERVICE_HOST/PORT with the service-account token (re-read every minute: bound
   tokens expire) and CA (`kubernetes.cacert` overrides it);
3. $KUBECONFIG (first file) or ~/.kube/config.
Supported kubeconfig credentials: token, tokenFile, client-certificate(-data)/client-key(-data); the
cluster's certificate-authority(-data) and insecure-skip-tls-verify. Exec and auth-provider plugins are not.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from shared.dcs.base import BackendError, DCSUnavailable

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_REFRESH_S = 60.0
CONNECT_TIMEOUT_S = 2.0
RETRY_PAUSE_S = 0.1
# urllib3's own options (TCP_NODELAY: no 40 ms Nagle stalls) plus keepalives
_KEEPALIVE = [*HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
if hasattr(socket, "TCP_KEEPIDLE"):
    _KEEPALIVE += [(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5), (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)]
    _KEEPALIVE += [(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)]


class ApiError(Exception):
    """The API answered with an error Status: 404 NotFound, 409 Conflict/AlreadyExists, 410 Gone, 422..."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @classmethod
    def from_status(cls, status: int, raw: Any) -> ApiError:
        body = raw if isinstance(raw, dict) else {}
        if not body and isinstance(raw, bytes | str):
            try:
                body = json.loads(raw) or {}
            except ValueError:
                body = {"message": raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw}
        return cls(int(body.get("code") or status), str(body.get("reason") or ""), str(body.get("message") or ""))

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"


@dataclass
class ApiConfig:
    server: str
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    namespace: str | None = None
    temp_files: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        for path in self.temp_files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.temp_files.clear()


def _by_name(items: Any, name: Any, what: str) -> dict[str, Any]:
    for item in items or ():
        if isinstance(item, dict) and item.get("name") == name:
            return dict(item.get(what) or {})
    raise BackendError(f"kubernetes: kubeconfig has no {what} named {name!r}")


def from_kubeconfig(path: str, context: str | None = None, cacert: str | None = None) -> ApiConfig:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BackendError(f"kubernetes: cannot read kubeconfig {path}: {exc}")
    ctx = _by_name(data.get("contexts"), context or data.get("current-context"), "context")
    cluster = _by_name(data.get("clusters"), ctx.get("cluster"), "cluster")
    user = _by_name(data.get("users"), ctx.get("user"), "user") if ctx.get("user") else {}
    if user.get("exec") or user.get("auth-provider"):
        raise BackendError("kubernetes: kubeconfig exec and auth-provider credentials are not supported")
    base = os.path.dirname(os.path.abspath(path))
    config = ApiConfig(server=str(cluster.get("server") or "").rstrip("/"), namespace=ctx.get("namespace"))
    if not config.server:
        raise BackendError(f"kubernetes: kubeconfig {path} names no server")

    def file_of(key: str) -> str | None:
        if cluster.get(key) or user.get(key):
            return os.path.join(base, str(cluster.get(key) or user.get(key)))
        data_value = cluster.get(f"{key}-data") or user.get(f"{key}-data")
        if not data_value:
            return None
        fd, temp = tempfile.mkstemp(prefix="haven-k8s-")
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64decode(data_value))
        config.temp_files.append(temp)
        return temp

    config.ca_file = cacert or file_of("certificate-authority")
    config.cert_file, config.key_file = file_of("client-certificate"), file_of("client-key")
    config.verify = not cluster.get("insecure-skip-tls-verify")
    config.token = user.get("token")
    config.token_file = os.path.join(base, user["tokenFile"]) if user.get("tokenFile") else None
    return config


def in_cluster(host: str, port: str, cacert: str | None = None) -> ApiConfig:
    namespace = None
    try:
        with open(os.path.join(SA_DIR, "namespace"), encoding="utf-8") as f:
            namespace = f.read().strip() or None
    except OSError:
        pass
    host = f"[{host}]" if ":" in host else host
    return ApiConfig(
        server=f"https://{host}:{port}",
        token_file=os.path.join(SA_DIR, "token"),
        ca_file=cacert or os.path.join(SA_DIR, "ca.crt"),
        namespace=namespace,
    )


def load_api_config(section: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ApiConfig:
    env = os.environ if environ is None else environ
    cacert = str(section["cacert"]) if section.get("cacert") else None
    if section.get("kubeconfig"):
        return from_kubeconfig(str(section["kubeconfig"]), section.get("context"), cacert)
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"):
        return in_cluster(env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"], cacert)
    path = (env.get("KUBECONFIG") or "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    if os.path.exists(path):
        return from_kubeconfig(path, section.get("context"), cacert)
    raise BackendError("kubernetes: not running in a pod (no KUBERNETES_SERVICE_HOST) and no kubeconfig found")


class WatchStream:
    """Newline-delimited JSON events of one watch request; close() from another thread ends it."""

    def __init__(self, response: Any) -> None:
        self.response = response

    def events(self) -> Iterator[dict[str, Any]]:
        pending = b""
        for chunk in self.response.stream(65536, decode_content=True):
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)

    def close(self) -> None:
        try:
            self.response.shutdown()
        except Exception:  # the connection may be gone already
            pass
        self.response.release_conn()


def _ssl_context(config: ApiConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file)
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_file:
        try:
            context.load_cert_chain(config.cert_file, config.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise BackendError(f"kubernetes: cannot load the client certificate {config.cert_file}: {exc}")
    return context


class K8sClient:
    def __init__(self, config: ApiConfig, retriable_codes: frozenset[int]) -> None:
        self.config = config
        self.retriable = retriable_codes
        tls: dict[str, Any] = {}
        if config.server.startswith("https"):
            tls = {"ssl_context": _ssl_context(config)}
        config.cleanup()  # the context holds the certificates now: no decoded key stays on disk
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=6, retries=False, socket_options=_KEEPALIVE, **tls)
        self._token: str | None = config.token
        self._token_read = 0.0

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        if self.config.token_file and time.monotonic() - self._token_read > TOKEN_REFRESH_S:
            try:
                with open(self.config.token_file, encoding="utf-8") as f:
                    self._token = f.read().strip()
                self._token_read = time.monotonic()
            except OSError as exc:
                raise DCSUnavailable(f"kubernetes: cannot read the token {self.config.token_file}: {exc}")
        headers = {"Accept": "application/json", "User-Agent": "haven"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        return self.config.server + path + (f"?{urlencode(params)}" if params else "")

    def request(
        self,
        method: str,
        path: str,
        deadline: float,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """The decoded answer; ApiError for an error Status; DCSUnavailable when no answer came in time.
        Retried while time remains: no connection, a code in retriable_http_codes or any Retry-After."""
        data = None if body is None else json.dumps(body).encode()
        problem = "no time left"
        while (remaining := deadline - time.monotonic()) > 0:
            timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, remaining), read=remaining)
            try:
                r = self.pool.request(
                    method, self.url(path, params), body=data, headers=self._headers(content_type), timeout=timeout
                )
            except (NewConnectionError, ConnectTimeoutError) as exc:
                problem = f"cannot connect: {exc}"
                time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))
                continue
            except HTTPError as exc:
                raise DCSUnavailable(f"kubernetes: {method} {path}: {exc}; the outcome is unknown")
            if r.status < 400:
                try:
                    return json.loads(r.data) if r.data else None
                except ValueError:
                    raise DCSUnavailable(f"kubernetes: {method} {path}: an answer that is not JSON")
            retry_after = r.headers.get("Retry-After")
            if r.status in self.retriable or retry_after is not None:
                pause = float(retry_after) if retry_after and retry_after.strip().isdigit() else RETRY_PAUSE_S
                problem = f"{r.status} (retry after {pause:g}s)"
                if time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
                continue
            error = ApiError.from_status(r.status, r.data)
            if error.status in (401, 403):
                raise DCSUnavailable(f"kubernetes: {method} {path}: {error}")
            raise error
        raise DCSUnavailable(f"kubernetes: {method} {path}: {problem}")

    def watch(self, path: str, params: Mapping[str, Any], read_timeout: float) -> WatchStream:
        timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=read_timeout)
        r = self.pool.request(
            "GET",
            self.url(path, {**params, "watch": "1"}),
            headers=self._headers(),
            timeout=timeout,
            preload_content=False,
        )
        if r.status != 200:
            raw = r.read()
            r.release_conn()
            raise ApiError.from_status(r.status, raw)
        return WatchStream(r)

    def close(self) -> None:
        self.pool.clear()
        self.config.cleanup()
