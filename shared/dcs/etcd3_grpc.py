"""etcd3.py's gRPC helpers: one channel per endpoint with its stubs and auth token, the transaction parts the
backend builds its requests from, and what a gRPC status means for a retry (etcd_common.Failure)."""

# ruff: noqa: E402  (protobuf's implementation is chosen from the environment at its first import)
from __future__ import annotations

import os
import warnings

# As in etcd3.py, which imports this module after the same lines: whichever of the two is imported first sets them.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # etcd3's stubs need it (PLATFORM.md)
warnings.filterwarnings("ignore", message=r"Call to deprecated create function", category=DeprecationWarning)

import time
from collections.abc import Iterable
from typing import Any

import grpc  # type: ignore[import-untyped]

try:
    from etcd3 import etcdrpc
except TypeError as exc:  # protobuf was imported before us with its C implementation: get_backend says so
    raise ImportError(f"etcd3's protobuf stubs need PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python: {exc}") from exc

from shared.dcs.etcd_common import Failure
from shared.dcs.etcd_config import Endpoint, EtcdSettings

GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),  # a restarted etcd is found again within a second,
    ("grpc.min_reconnect_backoff_ms", 100),  # not after gRPC's default backoff of up to two minutes
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),  # etcd refuses pings more often than every 5 s
    ("grpc.keepalive_timeout_ms", 5_000),
]

_NOT_SENT_DETAILS = ("failed to connect", "connection refused", "no leader", "dns resolution failed", "not capable")
_RETRY_DETAILS = ("invalid auth token", "auth store is old", "lease not found")
_FATAL_CODES = {"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
Cmp = etcdrpc.Compare
Metadata = tuple[tuple[str, str], ...]


def classify_grpc(code: str, details: str) -> Failure:
    """A gRPC status (code name, details) from etcd v3: may the request have been applied?"""
    text = details.lower()
    if code == "UNAVAILABLE":
        return Failure.NOT_SENT if any(d in text for d in _NOT_SENT_DETAILS) else Failure.UNKNOWN
    if any(d in text for d in _RETRY_DETAILS):
        return Failure.RETRY  # the token or the lease is renewed before the next try
    if code == "RESOURCE_EXHAUSTED" and "too many requests" in text:
        return Failure.NOT_SENT
    return Failure.FATAL if code in _FATAL_CODES else Failure.UNKNOWN  # DEADLINE_EXCEEDED, CANCELLED...


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that covers every key starting with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def txn_compare(key: bytes, target: Any, result: Any = Cmp.EQUAL, **value: Any) -> Any:
    return Cmp(key=key, target=target, result=result, **value)


def txn_put(key: bytes, value: str, lease: int = 0) -> Any:
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value.encode(), lease=lease))


def txn_range(key: bytes) -> Any:
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key))


def txn_delete(key: bytes, range_end: bytes = b"") -> Any:
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key, range_end=range_end))


def has_writes(responses: Iterable[Any]) -> bool:
    """Whether a transaction's responses include a put or an actual delete (nested transactions too)."""
    for response in responses:
        kind = response.WhichOneof("response")
        if kind == "response_put" or (kind == "response_delete_range" and response.response_delete_range.deleted):
            return True
        if kind == "response_txn" and has_writes(response.response_txn.responses):
            return True
    return False


def time_left(deadline: float) -> float:
    """The seconds left before `deadline` (time.monotonic()), as a gRPC timeout."""
    return max(0.001, deadline - time.monotonic())


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


class Connection:
    """One gRPC channel to one endpoint, its stubs, and its auth token (fetched on first use)."""

    def __init__(self, settings: EtcdSettings, endpoint: Endpoint) -> None:
        self.settings = settings
        if settings.tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(settings.cacert),
                private_key=_read(settings.key or settings.cert) if settings.cert else None,
                certificate_chain=_read(settings.cert),
            )
            self.channel = grpc.secure_channel(str(endpoint), credentials, options=GRPC_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(str(endpoint), options=GRPC_OPTIONS)
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.auth = etcdrpc.AuthStub(self.channel)
        self.cluster = etcdrpc.ClusterStub(self.channel)
        self.token: str | None = None

    def metadata(self, timeout: float) -> Metadata:
        s = self.settings
        if s.username is None:
            return ()
        if self.token is None:
            request = etcdrpc.AuthenticateRequest(name=s.username, password=s.password or "")
            self.token = str(self.auth.Authenticate(request, timeout=timeout).token)
        return (("token", self.token),)
