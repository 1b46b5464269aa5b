"""The Kubernetes backend's parts that need no API server: settings (F35), object names per mode (I2),
keys <-> annotations (I3), the lock's expiry by renewTime + ttl (I4), pod role labels (I5), leader subsets
(I6), and where the API is found (kubeconfig, in-cluster; I9)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from shared.dcs import BackendError
from shared.dcs.k8s_api import load_api_config
from shared.dcs.k8s_objects import (
    K8sSettings,
    ObjectNames,
    cluster_keys,
    delete_annotations,
    iso,
    leader_subsets,
    lock_holder,
    object_keys,
    role_labels,
    take_annotations,
    write_annotations,
)

T0 = 1_700_000_000.0


def test_settings_defaults_and_environment_strings() -> None:
    s = K8sSettings.from_section({})
    assert (s.namespace, s.scope_label, s.role_label) == ("default", "cluster-name", "role")
    assert (s.leader_label_value, s.follower_label_value, s.standby_leader_label_value) == (
        "master",
        "replica",
        "master",
    )
    assert not s.use_endpoints and s.tmp_role_label is None and s.retriable_http_codes == {500, 503, 504}
    assert s.ports == ({"name": "postgresql", "port": 5432},)
    s = K8sSettings.from_section(
        {
            "labels": '{"application": "patroni"}',  # PATRONI_KUBERNETES_LABELS is YAML/JSON
            "ports": '[{"name": "pg", "port": 6432}]',
            "use_endpoints": "false",
            "retriable_http_codes": 429,
        }
    )
    assert s.labels == {"application": "patroni"} and s.ports == ({"name": "pg", "port": 6432},)
    assert not s.use_endpoints and s.retriable_http_codes == {429, 500, 503, 504}
    assert s.selector_labels("batman") == {"application": "patroni", "cluster-name": "batman"}


def test_object_names_depend_on_the_mode_I2() -> None:
    assert ObjectNames.for_scope("batman", True) == ObjectNames(
        "batman", "batman-config", "batman-sync", "batman-failover"
    )
    configmaps = ObjectNames.for_scope("batman", False)
    assert configmaps.leader == "batman-leader"
    assert [configmaps.holder(k) for k in ("leader", "status", "failsafe", "config", "initialize", "history")] == [
        "batman-leader",
        "batman-leader",
        "batman-leader",
        "batman-config",
        "batman-config",
        "batman-config",
    ]
    assert configmaps.holder("sync") == "batman-sync" and configmaps.holder("failover") == "batman-failover"


def test_status_sync_and_failover_are_stored_as_separate_annotations_I3() -> None:
    assert write_annotations("status", '{"optime":67395656,"slots":{"n2":67395656}}') == {
        "optime": "67395656",
        "slots": '{"n2":67395656}',
    }
    assert write_annotations("status", '{"optime":5}') == {"optime": "5"}  # the slots annotation is kept (I12)
    assert write_annotations("sync", '{"leader":"n1","sync_standby":null}') == {"leader": "n1", "sync_standby": None}
    assert write_annotations("failover", "n1:n2") == {"leader": "n1", "member": "n2", "scheduled_at": None}
    assert write_annotations("config", '{"ttl":30}') == {"config": '{"ttl":30}'}
    assert write_annotations("optime/leader", "42") == {"optime": "42"}
    assert delete_annotations("sync") == {"leader": None, "sync_standby": None, "quorum": None}
    with pytest.raises(ValueError):
        write_annotations("members/n1", "{}")


def test_values_are_rebuilt_from_the_annotations() -> None:
    leader = {"leader": "n1", "renewTime": iso(T0), "ttl": "30", "optime": "7", "slots": '{"s":7}', "failsafe": "{}"}
    assert object_keys("leader", leader, T0 + 1) == {
        "leader": "n1",
        "status": json.dumps({"optime": 7, "slots": {"s": 7}}),
        "failsafe": "{}",
    }
    assert object_keys("sync", {"leader": "n1", "sync_standby": "n2"}, T0) == {
        "sync": json.dumps({"leader": "n1", "sync_standby": "n2"})
    }
    assert object_keys("sync", {}, T0) == {}
    assert object_keys("failover", {"member": "n2"}, T0) == {"failover": '{"member": "n2"}'}
    assert object_keys("config", {"initialize": "", "other": "x"}, T0) == {"initialize": ""}


def test_the_lock_is_held_until_renew_time_plus_ttl_by_the_readers_clock_I4() -> None:
    ann = {"leader": "n1", "renewTime": iso(T0), "ttl": "30"}
    assert lock_holder(ann, T0 + 29.9) == "n1"
    assert lock_holder(ann, T0 + 30) is None
    assert lock_holder({**ann, "leader": ""}, T0) is None
    assert lock_holder({"leader": "n1", "ttl": "30"}, T0) is None  # no renewTime: expired
    keys = cluster_keys(
        {"c-leader": {"metadata": {"resourceVersion": "12", "annotations": ann}}},
        [],
        ObjectNames.for_scope("c", False),
        T0 + 10,
    )
    assert keys["leader"].value == "n1" and keys["leader"].version == 12 and keys["leader"].ttl == pytest.approx(20)


def test_taking_the_lock_counts_transitions_and_keeps_acquire_time_on_a_retake() -> None:
    first = take_annotations(None, "n1", 30, T0)
    assert first == {"leader": "n1", "acquireTime": iso(T0), "renewTime": iso(T0), "transitions": "0", "ttl": "30"}
    assert take_annotations(first, "n2", 30, T0 + 40)["transitions"] == "1"
    again = take_annotations(first, "n1", 4.5, T0 + 40)
    assert again["transitions"] == "0" and again["acquireTime"] == iso(T0) and again["ttl"] == "4.5"


def test_members_are_the_status_annotations_of_the_pods() -> None:
    pods: list[dict[str, Any]] = [
        {"metadata": {"name": "n1", "resourceVersion": "5", "annotations": {"status": '{"role":"master"}'}}},
        {"metadata": {"name": "n2", "resourceVersion": "6"}},
    ]
    keys = cluster_keys({}, pods, ObjectNames.for_scope("c", False), T0)
    assert list(keys) == ["members/n1"] and keys["members/n1"].version == 5


@pytest.mark.parametrize(
    ("data", "holds", "expected"),
    [
        ({"role": "master", "state": "running"}, True, {"role": "master", "tmp": "master"}),
        ({"role": "standby_leader", "state": "running"}, True, {"role": "standby", "tmp": "master"}),
        ({"role": "replica", "state": "running"}, False, {"role": "follower", "tmp": "replica"}),
        ({"role": "replica", "state": "starting"}, False, {"role": None, "tmp": None}),
        ({"role": "master", "state": "running"}, False, {"role": None, "tmp": None}),  # a primary without the lock
    ],
)
def test_the_pod_role_label_follows_the_member_I5(
    data: dict[str, str], holds: bool, expected: dict[str, str | None]
) -> None:
    s = K8sSettings.from_section(
        {"follower_label_value": "follower", "standby_leader_label_value": "standby", "tmp_role_label": "tmp"}
    )
    assert role_labels(s, data, holds) == expected


def test_leader_subsets_point_at_the_pod_I6() -> None:
    s = K8sSettings.from_section({"pod_ip": "10.0.0.7", "namespace": "db"})
    assert leader_subsets(s, "n1", "node-a") == [
        {
            "addresses": [
                {"ip": "10.0.0.7", "targetRef": {"kind": "Pod", "name": "n1", "namespace": "db"}, "nodeName": "node-a"}
            ],
            "ports": [{"name": "postgresql", "port": 5432, "protocol": "TCP"}],
        }
    ]
    assert leader_subsets(K8sSettings.from_section({}), "n1", None) is None


def test_a_kubeconfig_gives_the_server_credentials_and_namespace(tmp_path: Path) -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    (tmp_path / "token").write_text("from-file\n")
    config = {
        "clusters": [{"name": "c", "cluster": {"server": "https://k8s:6443/", "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": {"tokenFile": "token"}}],
        "contexts": [
            {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "db"}},
            {"name": "y", "context": {"cluster": "c"}},
        ],
        "current-context": "x",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    api = load_api_config({"kubeconfig": str(tmp_path / "kubeconfig")}, environ={})
    assert api.server == "https://k8s:6443" and api.namespace == "db" and api.verify
    assert api.token_file == str(tmp_path / "token") and api.ca_file and os.path.exists(api.ca_file)
    api.cleanup()
    assert not os.path.exists(str(api.ca_file))
    other = load_api_config({"kubeconfig": str(tmp_path / "kubeconfig"), "context": "y"}, environ={})
    other.cleanup()
    assert other.namespace is None
    with pytest.raises(BackendError, match="no context"):
        load_api_config({"kubeconfig": str(tmp_path / "kubeconfig"), "context": "z"}, environ={})


def test_in_a_pod_the_service_account_is_used_and_without_either_it_fails(tmp_path: Path) -> None:
    api = load_api_config(
        {"cacert": "/my/ca.crt"}, environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    )
    assert api.server == "https://10.96.0.1:443" and api.ca_file == "/my/ca.crt"
    assert api.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    with pytest.raises(BackendError, match="no kubeconfig"):
        load_api_config({}, environ={"KUBECONFIG": str(tmp_path / "missing")})
