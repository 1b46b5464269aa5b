"""The Kubernetes API test server is only worth something if it is faithful: optimistic concurrency on
resourceVersion (409), merge patches, watch streams with ADDED/MODIFIED/DELETED from a resourceVersion and
across label-selector changes, 410 Gone for a compacted history, validation, auth, and restarts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from tests.support.k8s_fake_store import merge_patch
from tests.support.kubernetes_server import KubernetesServer
from tests.support.waiting import wait_until

BASE = "/api/v1/namespaces/default"
MERGE = "application/merge-patch+json"


@pytest.fixture
def server() -> Iterator[KubernetesServer]:
    s = KubernetesServer()
    s.start()
    yield s
    s.close()


class Api:
    def __init__(self, server: KubernetesServer, token: str | None = KubernetesServer.TOKEN) -> None:
        self.url = server.url
        self.http = urllib3.PoolManager(retries=False)
        self.token = token

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> tuple[int, Any]:
        headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        data = None if body is None else json.dumps(body).encode()
        r = self.http.request(method, self.url + path, body=data, headers=headers, timeout=5)
        return r.status, json.loads(r.data) if r.data else None

    def watch(self, path: str, events: list[dict[str, Any]], stop: threading.Event) -> threading.Thread:
        headers = {"Authorization": f"Bearer {self.token}"}

        def run() -> None:
            r = self.http.request("GET", self.url + path, headers=headers, preload_content=False, timeout=10)
            pending = b""
            try:
                for chunk in r.stream(1024):
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        events.append(json.loads(line))
                    if stop.is_set():
                        break
            except urllib3.exceptions.ProtocolError:
                events.append({"type": "CUT"})  # the server went away mid-stream
            r.release_conn()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def configmap(name: str, labels: dict[str, str] | None = None, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {"cluster-name": "c"}, "annotations": annotations}}


def test_a_stale_resource_version_gets_409_and_the_current_one_applies(server: KubernetesServer) -> None:
    api = Api(server)
    status, created = api.call("POST", f"{BASE}/configmaps", configmap("c-leader", leader="n1"))
    assert status == 201
    rv = created["metadata"]["resourceVersion"]
    assert api.call("POST", f"{BASE}/configmaps", configmap("c-leader"))[1]["reason"] == "AlreadyExists"
    ok, patched = api.call(
        "PATCH",
        f"{BASE}/configmaps/c-leader",
        {"metadata": {"resourceVersion": rv, "annotations": {"leader": "n2"}}},
        MERGE,
    )
    assert ok == 200 and int(patched["metadata"]["resourceVersion"]) > int(rv)
    status, conflict = api.call(
        "PATCH",
        f"{BASE}/configmaps/c-leader",
        {"metadata": {"resourceVersion": rv, "annotations": {"leader": "n3"}}},
        MERGE,
    )
    assert status == 409 and conflict["reason"] == "Conflict" and conflict["kind"] == "Status"
    stale = {
        **configmap("c-leader", leader="n3"),
        "metadata": {**configmap("c-leader")["metadata"], "resourceVersion": rv},
    }
    assert api.call("PUT", f"{BASE}/configmaps/c-leader", stale)[0] == 409
    assert api.call("DELETE", f"{BASE}/configmaps/c-leader", {"preconditions": {"resourceVersion": rv}})[0] == 409
    assert api.call("GET", f"{BASE}/configmaps/c-leader")[1]["metadata"]["annotations"]["leader"] == "n2"
    assert (
        api.call("PATCH", f"{BASE}/configmaps/c-leader", {"metadata": {"annotations": {"leader": None}}}, MERGE)[0]
        == 200
    )
    assert "annotations" not in api.call("GET", f"{BASE}/configmaps/c-leader")[1]["metadata"]  # null removed it
    assert api.call("PATCH", f"{BASE}/configmaps/nothing", {"metadata": {}}, MERGE)[0] == 404


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "x": None}) == {"a": {"c": 2, "d": 3}, "l": [3]}


def test_a_watch_streams_changes_after_its_resource_version_and_selector_transitions(server: KubernetesServer) -> None:
    api = Api(server)
    _, first = api.call("POST", f"{BASE}/configmaps", configmap("c-config", config="{}"))
    events: list[dict[str, Any]] = []
    stop = threading.Event()
    rv = first["metadata"]["resourceVersion"]
    watcher = api.watch(f"{BASE}/configmaps?watch=1&labelSelector=cluster-name%3Dc&resourceVersion={rv}", events, stop)
    api.call("PATCH", f"{BASE}/configmaps/c-config", {"metadata": {"annotations": {"initialize": "1"}}}, MERGE)
    api.call("POST", f"{BASE}/configmaps", configmap("other", {"cluster-name": "d"}))  # not selected
    api.call("PATCH", f"{BASE}/configmaps/other", {"metadata": {"labels": {"cluster-name": "c"}}}, MERGE)
    api.call("PATCH", f"{BASE}/configmaps/other", {"metadata": {"labels": {"cluster-name": "e"}}}, MERGE)
    api.call("DELETE", f"{BASE}/configmaps/c-config")
    wait_until(lambda: len(events) >= 4, 5, what="four events")
    stop.set()
    api.call("POST", f"{BASE}/configmaps", configmap("wake-the-stream"))
    watcher.join(5)
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen[:4] == [("MODIFIED", "c-config"), ("ADDED", "other"), ("DELETED", "other"), ("DELETED", "c-config")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(rv)
    assert events[0]["object"]["kind"] == "ConfigMap"


def test_a_watch_from_a_compacted_resource_version_gets_410(server: KubernetesServer) -> None:
    api = Api(server)
    _, obj = api.call("POST", f"{BASE}/configmaps", configmap("c-sync"))
    api.call("PATCH", f"{BASE}/configmaps/c-sync", {"metadata": {"annotations": {"leader": "n1"}}}, MERGE)
    server.state.compact()
    events: list[dict[str, Any]] = []
    watcher = api.watch(
        f"{BASE}/configmaps?watch=1&resourceVersion={obj['metadata']['resourceVersion']}", events, threading.Event()
    )
    watcher.join(5)
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_a_list_carries_the_resource_version_to_watch_from_and_filters_by_labels(server: KubernetesServer) -> None:
    api = Api(server)
    api.call("POST", f"{BASE}/configmaps", configmap("a", {"cluster-name": "c", "application": "x"}))
    api.call("POST", f"{BASE}/configmaps", configmap("b", {"cluster-name": "d"}))
    status, listed = api.call("GET", f"{BASE}/configmaps?labelSelector=cluster-name%3Dc,application")
    assert status == 200 and listed["kind"] == "ConfigMapList"
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"] and "kind" not in listed["items"][0]
    assert int(listed["metadata"]["resourceVersion"]) >= int(listed["items"][0]["metadata"]["resourceVersion"])
    names = [
        o["metadata"]["name"]
        for o in api.call("GET", f"{BASE}/configmaps?labelSelector=cluster-name+notin+(c)")[1]["items"]
    ]
    assert names == ["b"]


def test_what_a_real_api_server_refuses_is_refused(server: KubernetesServer) -> None:
    api = Api(server)
    assert api.call("POST", f"{BASE}/configmaps", {"metadata": {"name": "x", "annotations": {"ttl": 30}}})[0] == 400
    assert api.call("POST", f"{BASE}/configmaps", configmap("Bad_Name"))[0] == 422
    assert api.call("POST", f"{BASE}/configmaps", configmap("x", {"role": "not valid!"}))[0] == 422
    assert api.call("PATCH", f"{BASE}/pods/n1", {"spec": {"nodeName": "elsewhere"}}, MERGE)[0] == 422
    assert api.call("PATCH", f"{BASE}/pods/n1", [{"op": "add"}], "application/json-patch+json")[0] == 415
    assert Api(server, token=None).call("GET", f"{BASE}/pods")[0] == 401
    status, pod = api.call(
        "PATCH", f"{BASE}/pods/n1", {"metadata": {"labels": {"role": "master"}}, "status": {"phase": "Failed"}}, MERGE
    )
    assert status == 200 and pod["status"]["phase"] == "Running"  # the status is not changed through the pod
    _, ep = api.call("POST", f"{BASE}/endpoints", {"metadata": {"name": "c"}, "subsets": []})
    assert "subsets" not in ep  # empty subsets come back absent (I6)


def test_stop_cuts_watch_streams_and_start_brings_the_same_state_back(server: KubernetesServer) -> None:
    api = Api(server)
    api.call("POST", f"{BASE}/configmaps", configmap("kept", leader="n1"))
    events: list[dict[str, Any]] = []
    watcher = api.watch(f"{BASE}/configmaps?watch=1", events, threading.Event())
    wait_until(lambda: events, 5, what="the initial ADDED event")
    server.stop()
    watcher.join(5)
    assert not watcher.is_alive() and events[-1]["type"] == "CUT"
    server.start()
    status, obj = api.call("GET", f"{BASE}/configmaps/kept")
    assert status == 200 and obj["metadata"]["annotations"] == {"leader": "n1"}
