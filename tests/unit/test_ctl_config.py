"""havenctl's configuration: -d/--dcs-url, the node's own REST address, REST options (E1, E2, E5, D40), and the
GET /cluster body built from a cluster read in the DCS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctl.config import CtlError, load_config, own_rest_url, parse_dcs_url, rest_options
from ctl.dcs_view import cluster_body, sysid_label
from ctl.rest import RestOptions, endpoint_url
from shared.model import Cluster, KeyValue


@pytest.mark.parametrize(
    "url, expected",
    [
        ("etcd3://10.0.0.1:2379/service", {"etcd3": {"host": "10.0.0.1:2379"}, "namespace": "/service"}),
        ("etcd3://10.0.0.1", {"etcd3": {"host": "10.0.0.1:2379"}}),
        ("localhost:8500", {"consul": {"host": "localhost:8500"}}),  # no scheme: chosen by the port
        ("somehost", {"etcd": {"host": "somehost:2379"}}),
        ("zookeeper://zk:2181", {"zookeeper": {"hosts": ["zk:2181"]}}),
        ("exhibitor://ex", {"exhibitor": {"hosts": ["ex"], "port": 8181}}),
    ],
)
def test_e2_dcs_url(url: str, expected: dict[str, Any]) -> None:
    assert parse_dcs_url(url) == expected


def test_e2_unknown_dcs_scheme() -> None:
    with pytest.raises(CtlError, match="Unknown dcs scheme: mongo"):
        parse_dcs_url("mongo://x")


@pytest.mark.parametrize(
    "restapi, expected",
    [
        ({"connect_address": "10.0.0.1:8008", "listen": "0.0.0.0:8008"}, "http://10.0.0.1:8008"),
        ({"listen": "0.0.0.0:8009"}, "http://127.0.0.1:8009"),
        ({"listen": ":8009"}, "http://127.0.0.1:8009"),
        ({"listen": "[::]:8009"}, "http://[::1]:8009"),
        ({"connect_address": "[fe80::1]:8008"}, "http://[fe80::1]:8008"),
        ({"connect_address": "db1", "certfile": "/etc/cert.pem"}, "https://db1:8008"),
        ({}, None),
    ],
)
def test_own_rest_address(restapi: dict[str, Any], expected: str | None) -> None:
    assert own_rest_url({"restapi": restapi}) == expected


def test_e1_rest_options_prefer_ctl_then_restapi() -> None:
    config = {
        "restapi": {"authentication": {"username": "api", "password": "x"}, "cafile": "/ca.pem"},
        "ctl": {"certfile": "/c.pem", "keyfile": "/k.pem", "insecure": "on"},
    }
    assert rest_options(config) == RestOptions(
        username="api", password="x", cacert="/ca.pem", certfile="/c.pem", keyfile="/k.pem", insecure=True
    )
    config["ctl"] = {"authentication": {"username": "ctl", "password": "y"}, "cacert": "/ctl-ca.pem"}
    assert rest_options(config, insecure=True) == RestOptions(
        username="ctl", password="y", cacert="/ctl-ca.pem", insecure=True
    )


def test_endpoint_url_replaces_the_path_of_an_api_url() -> None:
    assert endpoint_url("https://10.0.0.1:8008/patroni", "cluster") == "https://10.0.0.1:8008/cluster"


def test_e2_dcs_url_keeps_the_sections_credentials_and_replaces_its_address(tmp_path: Path) -> None:
    path = tmp_path / "ctl.yml"
    path.write_text(
        "scope: batman\nnamespace: /old\n"
        "etcd3: {hosts: ['a:2379', 'b:2379'], username: u, password: p, cacert: /ca.pem}\n"
        "zookeeper: {hosts: ['z:2181']}\n"
    )
    config = load_config(str(path), "etcd3://10.0.0.1:2379/service", environ={})
    assert config["etcd3"] == {"host": "10.0.0.1:2379", "username": "u", "password": "p", "cacert": "/ca.pem"}
    assert "zookeeper" not in config and config["namespace"] == "/service"
    other = load_config(str(path), "consul://c:8500", environ={})
    assert other["consul"] == {"host": "c:8500"} and "etcd3" not in other and other["namespace"] == "/old"


def keys(**values: Any) -> dict[str, KeyValue]:
    return {
        name.replace("__", "/"): KeyValue(v if isinstance(v, str) else json.dumps(v), 1) for name, v in values.items()
    }


def test_a_cluster_read_from_the_dcs_looks_like_get_cluster() -> None:
    cluster = Cluster.from_keys(
        keys(
            initialize="",
            leader="pg0",
            config={"synchronous_mode": True, "pause": True},
            sync={"leader": "pg0", "sync_standby": "pg1"},
            status={"optime": 3145728},
            failover={"leader": "pg0", "member": "pg2", "scheduled_at": "2030-01-01T00:00:00+00:00"},
            members__pg0={"conn_url": "postgres://10.0.0.1:5432/postgres", "api_url": "http://10.0.0.1:8008/patroni",
                          "state": "running", "role": "master", "timeline": 2, "tags": {"clonefrom": True}},
            members__pg1={"conn_url": "postgres://10.0.0.2:5433/postgres", "state": "running",
                          "replication_state": "streaming", "xlog_location": 1048576, "pending_restart": True},
            members__pg2={"state": "stopped"},
        )
    )  # fmt: skip
    assert sysid_label(cluster) == "initializing"
    assert cluster_body(cluster, "batman") == {
        "members": [
            {"name": "pg0", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni",
             "host": "10.0.0.1", "port": 5432, "timeline": 2, "tags": {"clonefrom": True}},
            {"name": "pg1", "role": "sync_standby", "state": "streaming", "api_url": None, "host": "10.0.0.2",
             "port": 5433, "pending_restart": True, "lag": 2097152},
            {"name": "pg2", "role": "replica", "state": "stopped", "api_url": None, "lag": "unknown"},
        ],
        "scope": "batman",
        "pause": True,
        "scheduled_switchover": {"at": "2030-01-01T00:00:00+00:00", "from": "pg0", "to": "pg2"},
    }  # fmt: skip
    standby = Cluster.from_keys(keys(leader="s0", config={"standby_cluster": {"host": "x"}}, members__s0={}))
    assert cluster_body(standby, "b")["members"][0]["role"] == "standby_leader"
    assert sysid_label(Cluster.from_keys({})) == "uninitialized"
