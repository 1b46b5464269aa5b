"""havenctl's configuration: -d/--dcs-url, the node's own REST address, REST options (E1, E2, E5, D40)."""

from __future__ import annotations

from typing import Any

import pytest

from ctl.config import CtlError, own_rest_url, parse_dcs_url, rest_options
from ctl.rest import RestOptions, endpoint_url


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
