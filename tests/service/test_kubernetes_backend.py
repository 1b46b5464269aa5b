"""The Kubernetes backend against the Kubernetes API test server, for what the contract suite does not
cover: the objects, annotations and labels a raw API client sees in ConfigMap and Endpoints modes (I1-I3,
I6, I7), the pod role label (I5), the lease rule by renewTime + ttl (I4), 409 on a concurrent update (I4),
retries on 503 with Retry-After (I9), a re-LIST after 410 Gone (I8), and members that are pods."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3

from shared.config import NodeConfig
from shared.dcs import DCSUnavailable
from shared.dcs.k8s_objects import iso, parse_iso
from shared.dcs.kubernetes import KubernetesBackend
from tests.support.kubernetes_server import KubernetesServer
from tests.support.waiting import wait_until

TIMEOUT = 5.0
NS = "/api/v1/namespaces/default"
MEMBER = {
    "conn_url": "postgres://10.0.0.1:5432/postgres",
    "api_url": "http://10.0.0.1:8008/patroni",
    "state": "running",
}


@pytest.fixture(scope="module")
def server() -> Iterator[KubernetesServer]:
    s = KubernetesServer()
    s.start()
    yield s
    s.close()


@pytest.fixture
def scope() -> str:
    return f"k-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backends(server: KubernetesServer, scope: str) -> Iterator[Callable[..., KubernetesBackend]]:
    made: list[KubernetesBackend] = []

    def make(name: str = "n1", **extra: Any) -> KubernetesBackend:
        config = NodeConfig({"name": name, "scope": scope, "kubernetes": {**server.section(name), **extra}})
        backend = KubernetesBackend(config, lambda: None)
        backend.start()
        made.append(backend)
        wait_until(backend.is_healthy, 10, what=f"{name} to be healthy")
        return backend

    yield make
    for backend in made:
        backend.close()


def raw(server: KubernetesServer, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {server.TOKEN}", "Content-Type": "application/merge-patch+json"}
    data = None if body is None else json.dumps(body).encode()
    r = urllib3.request(method, server.url + NS + path, body=data, headers=headers, timeout=5)
    return json.loads(r.data) if r.status < 300 else None


def ann_of(obj: Any) -> dict[str, str]:
    return dict((obj or {}).get("metadata", {}).get("annotations") or {})


def member(role: str, state: str = "running") -> str:
    return json.dumps({**MEMBER, "role": role, "state": state}, separators=(",", ":"))


def test_configmaps_hold_the_cluster_as_patroni_writes_it_I2_I3(
    server: KubernetesServer, scope: str, backends: Callable[..., KubernetesBackend]
) -> None:
    b = backends()
    before = time.time()
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    assert b.touch_member("n1", member("master"), 30, timeout=TIMEOUT)
    assert b.initialize(True, "7268616322854375442", timeout=TIMEOUT)
    for key, value in {
        "config": '{"ttl":30}',
        "history": '[[1,25623960,"no recovery target specified"]]',
        "status": '{"optime":67395656,"slots":{"n2":67395656}}',
        "failsafe": '{"n1":"http://10.0.0.1:8008/patroni"}',
        "sync": '{"leader":"n1","sync_standby":"n2"}',
        "failover": '{"leader":"n1","member":"n2","scheduled_at":"2026-01-14T10:09:57+00:00"}',
    }.items():
        assert b.write(key, value, None, None, timeout=TIMEOUT)[0], key
    leader = raw(server, "GET", f"/configmaps/{scope}-leader")
    ann = ann_of(leader)
    assert {k: ann[k] for k in ("leader", "transitions", "ttl", "optime", "slots")} == {
        "leader": "n1",
        "transitions": "0",
        "ttl": "30",
        "optime": "67395656",
        "slots": '{"n2":67395656}',
    }
    assert ann["failsafe"] == '{"n1":"http://10.0.0.1:8008/patroni"}'
    assert before - 1 <= (parse_iso(ann["renewTime"]) or 0) <= time.time() and ann["acquireTime"] == ann["renewTime"]
    assert leader["metadata"]["labels"] == {"application": "haven", "cluster-name": scope}
    config = ann_of(raw(server, "GET", f"/configmaps/{scope}-config"))
    assert config == {
        "config": '{"ttl":30}',
        "initialize": "7268616322854375442",
        "history": '[[1,25623960,"no recovery target specified"]]',
    }
    assert ann_of(raw(server, "GET", f"/configmaps/{scope}-sync")) == {"leader": "n1", "sync_standby": "n2"}
    failover = ann_of(raw(server, "GET", f"/configmaps/{scope}-failover"))
    assert failover == {"leader": "n1", "member": "n2", "scheduled_at": "2026-01-14T10:09:57+00:00"}
    pod = raw(server, "GET", "/pods/n1")
    assert ann_of(pod)["status"] == member("master")
    assert pod["metadata"]["labels"]["role"] == "master" and pod["metadata"]["labels"]["cluster-name"] == scope
    assert raw(server, "GET", f"/endpoints/{scope}") is None
    keys = b.load().keys
    assert keys["leader"].version == int(leader["metadata"]["resourceVersion"])
    assert keys["members/n1"].version == int(pod["metadata"]["resourceVersion"])


def test_endpoints_mode_moves_the_leader_address_with_the_lock_I1_I6_I7(
    server: KubernetesServer, scope: str, backends: Callable[..., KubernetesBackend]
) -> None:
    b = backends(use_endpoints=True)
    assert b.touch_member("n1", member("replica"), 30, timeout=TIMEOUT)
    wait_until(lambda: b.pods.get("n1") is not None, 5, what="the pod in the cache")
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    assert b.write("config", "{}", None, None, timeout=TIMEOUT)[0]
    leader = raw(server, "GET", f"/endpoints/{scope}")
    assert ann_of(leader)["leader"] == "n1"
    address = {"ip": server.pod_ips["n1"], "targetRef": {"kind": "Pod", "name": "n1", "namespace": "default"}}
    assert leader["subsets"] == [
        {
            "addresses": [{**address, "nodeName": "node-1"}],
            "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}],
        }
    ]
    assert ann_of(raw(server, "GET", f"/endpoints/{scope}-config")) == {"config": "{}"}
    assert raw(server, "GET", f"/configmaps/{scope}-leader") is None
    assert raw(server, "GET", f"/services/{scope}-config")["spec"] == {"clusterIP": "None"}
    assert b.release_leader("n1", timeout=TIMEOUT)
    released = raw(server, "GET", f"/endpoints/{scope}")
    assert "leader" not in ann_of(released) and "subsets" not in released


def test_the_pod_role_label_follows_the_member_I5(
    server: KubernetesServer, backends: Callable[..., KubernetesBackend]
) -> None:
    leader, replica = backends("n1", tmp_role_label="tmp_role"), backends("n2", follower_label_value="secondary")
    assert leader.take_leader("n1", 30, timeout=TIMEOUT)
    assert leader.touch_member("n1", member("master"), 30, timeout=TIMEOUT)
    assert replica.touch_member("n2", member("replica"), 30, timeout=TIMEOUT)
    labels = raw(server, "GET", "/pods/n1")["metadata"]["labels"]
    assert (labels["role"], labels["tmp_role"]) == ("master", "master")
    assert raw(server, "GET", "/pods/n2")["metadata"]["labels"]["role"] == "secondary"
    assert replica.touch_member("n2", member("replica", state="stopped"), 30, timeout=TIMEOUT)
    assert "role" not in raw(server, "GET", "/pods/n2")["metadata"]["labels"]


def test_a_holder_that_stops_refreshing_loses_the_lock_after_ttl_although_it_lives_I4(
    server: KubernetesServer, scope: str, backends: Callable[..., KubernetesBackend]
) -> None:
    holder, other = backends("n1"), backends("n2")
    assert holder.take_leader("n1", 4, timeout=TIMEOUT)
    taken = time.monotonic()
    wait_until(lambda: "leader" in other.load().keys, 5, interval=0.02, what="the other node to see the lock")
    wait_until(lambda: "leader" not in other.load().keys, 10, interval=0.05, what="the lock to expire")
    assert time.monotonic() - taken >= 3.5
    assert ann_of(raw(server, "GET", f"/configmaps/{scope}-leader"))["leader"] == "n1"  # no TTL in the API
    assert other.take_leader("n2", 4, timeout=TIMEOUT)
    assert ann_of(raw(server, "GET", f"/configmaps/{scope}-leader"))["transitions"] == "1"
    assert not holder.refresh_leader("n1", 4, timeout=TIMEOUT)


def test_a_concurrent_update_is_a_409_and_the_decision_is_made_again_I4(
    server: KubernetesServer, scope: str, backends: Callable[..., KubernetesBackend]
) -> None:
    b = backends()
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    b.objects.stop()  # its cache no longer follows the API: its next update carries a stale resourceVersion
    path = f"/configmaps/{scope}-leader"
    raw(server, "PATCH", path, {"metadata": {"annotations": {"failsafe": "{}"}}})
    assert b.refresh_leader("n1", 30, timeout=TIMEOUT)  # 409, read again: still ours, so renewed
    assert ann_of(raw(server, "GET", path))["failsafe"] == "{}"
    conflicts = [a for a in server.http.answered if a[0] == "PATCH" and scope in a[1] and a[2] == 409]
    assert len(conflicts) == 1
    raw(server, "PATCH", path, {"metadata": {"annotations": {"leader": "n2", "renewTime": iso(time.time())}}})
    assert not b.refresh_leader("n1", 30, timeout=TIMEOUT)  # 409, read again: n2 holds it now
    assert not b.release_leader("n1", timeout=TIMEOUT)


def test_503_with_retry_after_is_retried_within_the_timeout_I9(
    server: KubernetesServer, backends: Callable[..., KubernetesBackend]
) -> None:
    b = backends()
    fault = server.http.inject(2, 503, {"kind": "Status", "code": 503}, {"Retry-After": "1"}, methods=("PATCH", "POST"))
    started = time.monotonic()
    assert b.write("config", "{}", None, None, timeout=TIMEOUT)[0]
    assert fault.hits == 2 and time.monotonic() - started >= 2.0
    server.http.inject(1, 503, {"kind": "Status", "code": 503}, {"Retry-After": "10"}, methods=("PATCH",))
    started = time.monotonic()
    with pytest.raises(DCSUnavailable, match="retry after 10s"):
        b.write("config", "{}", None, None, timeout=2.0)
    assert time.monotonic() - started < 1.0  # no point waiting past the deadline
    server.http.inject(2, 500, {"kind": "Status", "code": 500})
    assert b.write("config", "{}", None, None, timeout=TIMEOUT)[0]
    server.http.faults.clear()


def test_a_compacted_history_makes_the_caches_list_again_I8(
    server: KubernetesServer, scope: str, backends: Callable[..., KubernetesBackend]
) -> None:
    b, writer = backends("n1"), backends("n2")
    lists_before = sum(1 for m, p, _ in server.http.answered if m == "GET" and "watch" not in p and scope in p)
    server.state.history = 0  # every event is dropped at once: open watches get 410 Gone
    try:
        assert writer.write("config", '{"ttl":20}', None, None, timeout=TIMEOUT)[0]
        wait_until(lambda: b.load().keys.get("config", None) is not None, 10, what="the change through a new LIST")
    finally:
        server.state.history = 1000
    lists_after = sum(1 for m, p, _ in server.http.answered if m == "GET" and "watch" not in p and scope in p)
    assert lists_after > lists_before and b.is_healthy()


def test_a_member_is_its_pod_and_vanishes_with_it(
    server: KubernetesServer, backends: Callable[..., KubernetesBackend]
) -> None:
    b, other = backends("n3"), backends("n2")
    assert b.touch_member("n3", member("replica"), 30, timeout=TIMEOUT)
    wait_until(lambda: "members/n3" in other.load().keys, 5, what="the member")
    raw(server, "DELETE", "/pods/n3")
    try:
        for view in (other, b):
            wait_until(lambda v=view: "members/n3" not in v.load().keys, 5, what="the member to vanish with its pod")
        assert not b.touch_member("n3", member("replica"), 30, timeout=TIMEOUT)  # no pod: nothing to write
    finally:
        server.ensure_pod("n3")
