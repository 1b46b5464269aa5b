"""The etcd backends' parts that need no server: the `etcd:`/`etcd3:` section, failure classification, the walk
over endpoints within a deadline, the watched key cache, and the v2/v3 message helpers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import urllib3

from shared.config import NodeConfig
from shared.dcs import BackendError, DCSUnavailable, get_backend
from shared.dcs.etcd import EtcdBackend, Reply, classify_http, classify_transport, flatten
from shared.dcs.etcd3 import Etcd3Backend, classify_grpc, has_writes, prefix_end
from shared.dcs.etcd_common import (
    CachedKey,
    Endpoint,
    EndpointError,
    Endpoints,
    EtcdSettings,
    Failure,
    KeyCache,
    attempt_seconds,
    call_with_retries,
    lease_ttl,
    parse_endpoint,
    parse_hosts,
    srv_names,
)

# --- the section (F32) ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:2379", Endpoint("10.0.0.1", 2379)),
        ("etcd1", Endpoint("etcd1", 2379)),
        ("http://etcd1:4001", Endpoint("etcd1", 4001)),
        ("https://user:pw@etcd1:4001/", Endpoint("etcd1", 4001)),
        ("[::1]:2379", Endpoint("::1", 2379)),
        (" etcd1:2381 ", Endpoint("etcd1", 2381)),
    ],
)
def test_an_endpoint_is_host_and_port_with_2379_by_default(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


def test_ipv6_endpoints_are_bracketed_when_printed() -> None:
    assert str(Endpoint("::1", 2379)) == "[::1]:2379"
    assert str(Endpoint("etcd1", 2379)) == "etcd1:2379"


@pytest.mark.parametrize("bad", ["etcd1:port", ":2379"])
def test_a_bad_endpoint_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(BackendError):
        parse_endpoint(bad)


@pytest.mark.parametrize(
    "value",
    [
        "h1:2379,h2:2380",
        "h1:2379, h2:2380",
        "'h1:2379','h2:2380'",  # PATRONI_ETCD_HOSTS
        ["h1:2379", "h2:2380"],
        "h1:2379,h2:2380,h1:2379",  # duplicates dropped
    ],
)
def test_hosts_is_a_list_or_a_comma_separated_string_B28(value: Any) -> None:
    assert parse_hosts(value) == (Endpoint("h1", 2379), Endpoint("h2", 2380))


def test_the_section_needs_one_of_host_hosts_url_proxy_srv_F32() -> None:
    with pytest.raises(BackendError, match="one of host, hosts, url, proxy or srv"):
        EtcdSettings.from_section({"protocol": "http"}, "etcd3")


def test_url_gives_protocol_and_credentials_F58() -> None:
    s = EtcdSettings.from_section({"url": "https://bob:s%40cret@etcd1:2379"})
    assert (s.endpoints, s.protocol, s.username, s.password) == ((Endpoint("etcd1", 2379),), "https", "bob", "s@cret")
    assert s.url(s.endpoints[0]) == "https://etcd1:2379"
    assert not s.use_proxies


def test_explicit_credentials_win_over_the_url_and_proxy_means_no_discovery() -> None:
    s = EtcdSettings.from_section({"proxy": "http://a:b@proxy:2379", "username": "u", "password": "p"})
    assert (s.username, s.password, s.use_proxies) == ("u", "p", True)


def test_protocol_https_and_tls_files() -> None:
    s = EtcdSettings.from_section({"host": "etcd1:2379", "cacert": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"})
    assert s.tls and (s.cacert, s.cert, s.key) == ("/ca.pem", "/c.pem", "/k.pem")
    assert not EtcdSettings.from_section({"host": "etcd1", "protocol": "http"}).tls
    with pytest.raises(BackendError):
        EtcdSettings.from_section({"host": "etcd1", "protocol": "ftp"})


def test_username_without_password_is_refused() -> None:
    with pytest.raises(BackendError, match="together"):
        EtcdSettings.from_section({"host": "etcd1", "username": "bob"})


def test_srv_names_follow_patronis_order_with_the_suffix_B28() -> None:
    assert srv_names("example.org", "foo") == [
        "_etcd-client-ssl-foo._tcp.example.org",
        "_etcd-client-foo._tcp.example.org",
        "_etcd-ssl-foo._tcp.example.org",
        "_etcd-foo._tcp.example.org",
        "_etcd-server-ssl-foo._tcp.example.org",
        "_etcd-server-foo._tcp.example.org",
    ]
    assert srv_names("example.org", None)[1] == "_etcd-client._tcp.example.org"
    settings = EtcdSettings.from_section({"srv": "example.org", "srv_suffix": "foo"})
    assert (settings.endpoints, settings.srv, settings.srv_suffix) == ((), "example.org", "foo")


@pytest.mark.parametrize(("ttl", "seconds"), [(30, 30), (30.0, 30), (2.5, 3), (0.2, 1), (4.0000000001, 4)])
def test_ttls_round_up_to_whole_seconds(ttl: float, seconds: int) -> None:
    assert lease_ttl(ttl) == seconds


@pytest.mark.parametrize("kind", ["etcd3", "etcd"])
def test_the_registry_builds_both_backends_from_their_sections(kind: str) -> None:
    config = NodeConfig({"name": "n1", "scope": "batman", kind: {"hosts": "h1:2379,h2:2379"}})
    backend = get_backend(config, lambda: None)
    assert isinstance(backend, Etcd3Backend if kind == "etcd3" else EtcdBackend)
    assert backend.path("leader") == "/service/batman/leader"
    assert not backend.is_healthy()
    with pytest.raises(DCSUnavailable):
        backend.load()
    backend.close()


# --- failure classification ---


@pytest.mark.parametrize(
    ("code", "details", "failure"),
    [
        ("UNAVAILABLE", "failed to connect to all addresses; last error: Connection refused", Failure.NOT_SENT),
        ("UNAVAILABLE", "etcdserver: no leader", Failure.NOT_SENT),
        ("UNAVAILABLE", "etcdserver: request timed out", Failure.UNKNOWN),
        ("UNAVAILABLE", "Socket closed", Failure.UNKNOWN),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", Failure.UNKNOWN),
        ("UNAUTHENTICATED", "etcdserver: invalid auth token", Failure.RETRY),
        ("FAILED_PRECONDITION", "etcdserver: revision of auth store is old", Failure.RETRY),
        ("NOT_FOUND", "etcdserver: requested lease not found", Failure.RETRY),
        ("INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password", Failure.FATAL),
        ("PERMISSION_DENIED", "etcdserver: permission denied", Failure.FATAL),
        ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded", Failure.FATAL),
        ("RESOURCE_EXHAUSTED", "etcdserver: too many requests", Failure.NOT_SENT),
    ],
)
def test_grpc_errors_are_classified_by_whether_the_request_may_have_been_applied(
    code: str, details: str, failure: Failure
) -> None:
    assert classify_grpc(code, details) is failure


@pytest.mark.parametrize(
    ("status", "error_code", "failure"),
    [(500, 300, Failure.UNKNOWN), (503, None, Failure.UNKNOWN), (401, None, Failure.FATAL), (400, 209, Failure.FATAL)],
)
def test_v2_error_answers_are_classified(status: int, error_code: int | None, failure: Failure) -> None:
    assert classify_http(status, error_code) is failure


def test_v2_transport_errors_tell_whether_the_request_was_sent() -> None:
    refused = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    assert classify_transport(refused) is Failure.NOT_SENT
    assert classify_transport(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")) is Failure.UNKNOWN  # type: ignore[arg-type]
    assert classify_transport(urllib3.exceptions.ProtocolError("reset")) is Failure.UNKNOWN


@pytest.mark.parametrize(
    ("status", "body", "is_compare"),
    [
        (404, {"errorCode": 100}, True),
        (412, {"errorCode": 101}, True),
        (412, {"errorCode": 105}, True),
        (400, {"errorCode": 401}, False),
        (500, {"errorCode": 300}, False),
    ],
)
def test_v2_compare_results_are_answers_not_failures(status: int, body: dict[str, Any], is_compare: bool) -> None:
    assert Reply(status, body, 7).is_compare_result is is_compare


def test_a_v2_recursive_read_is_flattened_to_its_leaves() -> None:
    node = {
        "key": "/service/b",
        "dir": True,
        "nodes": [
            {"key": "/service/b/leader", "value": "n1", "ttl": 30, "modifiedIndex": 6},
            {"key": "/service/b/members", "dir": True, "nodes": [{"key": "/service/b/members/n1", "value": "{}"}]},
            {"key": "/service/b/empty", "dir": True},
        ],
    }
    assert [n["key"] for n in flatten(node)] == ["/service/b/leader", "/service/b/members/n1"]


# --- v3 message helpers ---


def test_the_prefix_range_covers_exactly_the_cluster() -> None:
    assert prefix_end(b"/service/batman/") == b"/service/batman0"


def test_only_puts_and_actual_deletes_count_as_writes() -> None:
    from etcd3 import etcdrpc  # here: shared.dcs.etcd3, imported above, chose protobuf's implementation first

    put = etcdrpc.ResponseOp(response_put=etcdrpc.PutResponse())
    nothing_deleted = etcdrpc.ResponseOp(response_delete_range=etcdrpc.DeleteRangeResponse(deleted=0))
    deleted = etcdrpc.ResponseOp(response_delete_range=etcdrpc.DeleteRangeResponse(deleted=1))
    nested = etcdrpc.ResponseOp(response_txn=etcdrpc.TxnResponse(responses=[put]))
    empty_nested = etcdrpc.ResponseOp(response_txn=etcdrpc.TxnResponse())
    assert has_writes([put]) and has_writes([deleted]) and has_writes([nested])
    assert not has_writes([]) and not has_writes([nothing_deleted]) and not has_writes([empty_nested])


# --- endpoints and retries ---


def endpoints(n: int = 3) -> Endpoints:
    return Endpoints(Endpoint(f"h{i}", 2379) for i in range(n))


def test_a_failed_endpoint_moves_every_thread_to_the_next_once() -> None:
    e = endpoints()
    first = e.current()
    e.failed(first)
    e.failed(first)  # a second report of the same failure does not skip a healthy endpoint
    assert e.current() == Endpoint("h1", 2379)


def test_an_unsent_request_is_tried_on_the_next_endpoint() -> None:
    tried: list[str] = []

    def attempt(endpoint: Endpoint, remaining: float) -> str:
        tried.append(endpoint.host)
        if endpoint.host != "h2":
            raise EndpointError(Failure.NOT_SENT, "refused")
        return "ok"

    assert call_with_retries(endpoints(), attempt, timeout=2, idempotent=False, what="op") == "ok"
    assert tried == ["h0", "h1", "h2"]


def test_an_unknown_outcome_is_retried_only_when_idempotent() -> None:
    calls: list[Endpoint] = []

    def attempt(endpoint: Endpoint, remaining: float) -> bool:
        calls.append(endpoint)
        if len(calls) == 1:
            raise EndpointError(Failure.UNKNOWN, "timed out")
        return True

    assert call_with_retries(endpoints(), attempt, timeout=2, idempotent=True, what="op")
    calls.clear()
    with pytest.raises(DCSUnavailable, match="outcome is unknown"):
        call_with_retries(endpoints(), attempt, timeout=2, idempotent=False, what="op")


def test_a_fatal_failure_is_not_retried() -> None:
    calls: list[Endpoint] = []

    def attempt(endpoint: Endpoint, remaining: float) -> bool:
        calls.append(endpoint)
        raise EndpointError(Failure.FATAL, "bad password")

    with pytest.raises(DCSUnavailable, match="bad password"):
        call_with_retries(endpoints(), attempt, timeout=2, idempotent=True, what="op")
    assert len(calls) == 1


def test_retries_stop_at_the_timeout_A7() -> None:
    def attempt(endpoint: Endpoint, remaining: float) -> bool:
        raise EndpointError(Failure.NOT_SENT, "refused")

    started = time.monotonic()
    with pytest.raises(DCSUnavailable, match="refused"):
        call_with_retries(endpoints(), attempt, timeout=0.5, idempotent=True, what="op")
    assert 0.45 <= time.monotonic() - started < 1.0


def test_an_idempotent_attempt_leaves_time_for_another() -> None:
    assert attempt_seconds(5.0, idempotent=True) == 2.5
    assert attempt_seconds(1.5, idempotent=True) == 1.0
    assert attempt_seconds(0.3, idempotent=True) == 0.3
    assert attempt_seconds(5.0, idempotent=False) == 5.0


# --- the key cache ---


def test_the_cache_serves_only_while_current_and_reports_versions_and_ttls() -> None:
    changes: list[int] = []
    cache = KeyCache(lambda: changes.append(1))
    with pytest.raises(DCSUnavailable, match="not loaded yet"):
        cache.snapshot("etcd3")
    cache.replace({"leader": CachedKey("n1", 5, lease=77), "config": CachedKey("{}", 3)}, 9)
    cache.note_lease(77, 20.0)
    cache.set_current(True)
    snap = cache.snapshot("etcd3")
    assert snap.revision == 9
    assert (snap.keys["leader"].value, snap.keys["leader"].version, snap.keys["leader"].session) == ("n1", 5, None)
    assert 19 < (snap.keys["leader"].ttl or 0) <= 20
    assert snap.keys["config"].ttl is None
    cache.set_current(False, "the watch broke")
    with pytest.raises(DCSUnavailable, match="the watch broke"):
        cache.snapshot("etcd3")
    assert len(changes) == 2  # became current, then not


def test_the_leader_lease_is_always_due_and_the_others_when_their_reading_is_old() -> None:
    cache = KeyCache(lambda: None)
    keys = {"leader": CachedKey("n1", 1, lease=7), "members/n1": CachedKey("{}", 2, lease=7)}
    keys |= {"members/n2": CachedKey("{}", 3, lease=8), "config": CachedKey("{}", 4)}
    cache.replace(keys, 4)
    assert cache.leases_due(5.0) == {7, 8}  # nothing read yet
    cache.note_lease(7, 30.0)
    cache.note_lease(8, 30.0)
    assert cache.leases_due(5.0) == {7}  # the leader's lease, every time
    assert cache.leases_due(0.0) == {7, 8}  # the member's, once its reading is old enough
    cache.apply({"leader": CachedKey("n2", 5, lease=8)}, [], 5)
    assert cache.leases_due(5.0) == {8}


def test_watch_batches_put_delete_and_remove_directories() -> None:
    cache = KeyCache(lambda: None)
    keys = {"leader": CachedKey("n1", 1), "members/n1": CachedKey("{}", 2), "members/n2": CachedKey("{}", 3)}
    cache.replace(keys, 3)
    cache.set_current(True)
    cache.apply({"config": CachedKey("{}", 4, expires_at=time.monotonic() + 10)}, ["members/"], 4)
    snap = cache.snapshot("etcd")
    assert set(snap.keys) == {"leader", "config"} and snap.revision == 4
    assert 9 < (snap.keys["config"].ttl or 0) <= 10
    cache.apply({}, [""], 5)  # the cluster directory itself
    assert cache.snapshot("etcd").keys == {}


def test_a_writer_waits_for_its_write_to_come_back_through_the_watch() -> None:
    cache = KeyCache(lambda: None)
    cache.replace({}, 10)
    cache.set_current(True)
    assert cache.wait_revision(10, 0)
    threading.Timer(0.05, lambda: cache.apply({"leader": CachedKey("n1", 11)}, [], 11)).start()
    assert cache.wait_revision(11, 2)
    assert not cache.wait_revision(12, 0.05)


def test_health_needs_a_current_view_and_recent_contact() -> None:
    cache = KeyCache(lambda: None)
    cache.replace({}, 1)
    assert not cache.is_healthy(3)
    cache.set_current(True)
    assert cache.is_healthy(3)
    cache.last_contact -= 5
    assert not cache.is_healthy(3)
    cache.contact()
    cache.closed = True
    assert not cache.is_healthy(3)
