"""The Consul backend's parts that need no server: the `consul:` section (F31), service names (B30),
Go durations, and the key prefix without a leading slash."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import NodeConfig
from shared.dcs import BackendError
from shared.dcs.consul import ConsulBackend
from shared.dcs.consul_http import ConsulSettings, go_duration, service_name


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"host": "127.0.0.1:8500"}, ("http", "127.0.0.1", 8500)),
        ({"host": "consul.local"}, ("http", "consul.local", 8500)),
        ({"host": "consul.local:8501", "port": 9000}, ("http", "consul.local", 9000)),  # port wins over host's
        ({"host": "consul.local", "scheme": "https"}, ("https", "consul.local", 8500)),
        ({"url": "https://10.0.0.5:8501"}, ("https", "10.0.0.5", 8501)),
        ({"url": "https://10.0.0.5:8501", "port": 1}, ("https", "10.0.0.5", 8501)),  # url's own port wins
        ({"url": "http://[::1]:8500"}, ("http", "::1", 8500)),
    ],
)
def test_the_agent_address_comes_from_host_or_url(section: dict[str, Any], expected: tuple[str, str, int]) -> None:
    s = ConsulSettings.from_section(section)
    assert (s.scheme, s.host, s.port) == expected


def test_host_or_url_is_required() -> None:
    with pytest.raises(BackendError, match="host or url"):
        ConsulSettings.from_section({"port": 8500})


def test_defaults_follow_patroni() -> None:
    s = ConsulSettings.from_section({"host": "h"})
    assert s.consistency == "default" and s.checks == () and not s.register_service
    assert s.service_check_interval == "5s" and s.service_tags == () and s.verify
    assert s.min_session_ttl == 10.0 and s.lock_delay == 0.001


def test_tls_and_service_options_are_read() -> None:
    s = ConsulSettings.from_section(
        {
            "url": "https://h:8501",
            "verify": False,
            "cacert": "/ca.pem",
            "cert": "/c.pem",
            "key": "/k.pem",
            "token": "secret",
            "dc": "dc2",
            "consistency": "consistent",
            "checks": ["serfHealth"],
            "register_service": True,
            "service_tags": ["a", "b"],
            "service_check_tls_server_name": "pg.example",
        }
    )
    assert s.verify  # a CA file turns verification on
    assert (s.cacert, s.cert, s.key, s.token, s.dc) == ("/ca.pem", "/c.pem", "/k.pem", "secret", "dc2")
    assert s.checks == ("serfHealth",) and s.service_tags == ("a", "b") and s.register_service
    assert s.service_check_tls_server_name == "pg.example"
    assert not ConsulSettings.from_section({"host": "h", "verify": False}).verify


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("batman", "batman"),
        ("Bat_Man cluster", "bat-man-cluster"),
        ("a.b-c", "a.b-c"),
        ("été", "u0233tu0233"),
        ("x" * 300, "x" * 230),
    ],
)
def test_the_service_name_is_the_scope_as_a_dns_label(scope: str, expected: str) -> None:
    assert service_name(scope) == expected


@pytest.mark.parametrize(("seconds", "text"), [(15, "15s"), (2.5, "2.5s"), (0.001, "1ms"), (0.25, "250ms")])
def test_durations_are_written_the_go_way(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_keys_live_under_the_namespace_without_a_leading_slash() -> None:
    config = NodeConfig({"name": "n1", "scope": "batman", "consul": {"host": "127.0.0.1:1"}})
    backend = ConsulBackend(config, lambda: None)
    assert backend.kv_prefix == "service/batman/"
    config = NodeConfig({"name": "n1", "scope": "batman", "namespace": "/haven/", "consul": {"host": "h"}})
    assert ConsulBackend(config, lambda: None).kv_prefix == "haven/batman/"
