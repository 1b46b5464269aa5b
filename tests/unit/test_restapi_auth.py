"""Who may call the unsafe endpoints (services.restapi.auth): D36 Basic auth, D38 allowlists, D39 extra headers."""

from __future__ import annotations

import base64
from ipaddress import ip_network

import pytest

from services.restapi import auth
from services.restapi.core import ControlRequest
from shared.model import Cluster
from tests.unit.test_restapi_core import cluster_view, member

CREDENTIALS = {"authentication": {"username": "admin", "password": "s3cret"}}
GOOD = "Basic " + base64.b64encode(b"admin:s3cret").decode()


def resolver(table: dict[str, list[str]]) -> auth.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        return table.get(host, [])

    return resolve


def request(authorization: str | None = None, client: str = "10.0.0.9") -> ControlRequest:
    headers = {"authorization": authorization} if authorization is not None else {}
    return ControlRequest("POST", "/restart", "", headers, b"", client)


def outcome(policy: auth.AccessPolicy, req: ControlRequest, members: list[str] | None = None) -> tuple[int, str] | None:
    response = auth.check_access(policy, req, lambda: auth._networks(members or []))
    if response is None:
        return None
    assert response.body is not None
    if response.status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Patroni"'
    return response.status, response.body.decode()


def test_d36_without_authentication_configured_anyone_passes() -> None:
    assert outcome(auth.policy_from_config({}), request()) is None


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, (401, "no auth header received")),
        ("", (401, "not authenticated")),
        ("Basic " + base64.b64encode(b"admin:wrong").decode(), (401, "not authenticated")),
        ("basic " + GOOD[6:], (401, "not authenticated")),
        ("Bearer " + GOOD[6:], (401, "not authenticated")),
        (GOOD, None),
    ],
)
def test_d36_basic_auth(header: str | None, expected: tuple[int, str] | None) -> None:
    policy = auth.policy_from_config(CREDENTIALS)
    assert outcome(policy, request(header)) == expected


def test_d36_the_key_is_compared_in_constant_time_on_its_base64_form() -> None:
    policy = auth.policy_from_config(CREDENTIALS)
    assert policy.auth_key == GOOD[6:].encode()
    assert auth.auth_key({"authentication": {"username": "u"}}) == base64.b64encode(b"u:")
    assert auth.auth_key({"authentication": {}}) is None


def test_d38_allowlist_entries_are_networks_addresses_or_names() -> None:
    networks = auth.build_allowlist(
        ["10.1.0.0/16", "192.168.1.7", "db.example", "nowhere", "10.1.2.3/8"],
        resolver({"192.168.1.7": ["192.168.1.7"], "db.example": ["172.16.0.5", "fe80::1%eth0"]}),
    )
    assert networks == (
        ip_network("10.1.0.0/16"),
        ip_network("192.168.1.7/32"),
        ip_network("172.16.0.5/32"),
        ip_network("fe80::1/128"),
    )  # "10.1.2.3/8" has host bits set: refused and logged, as Patroni's ip_network() does


@pytest.mark.parametrize(
    "client, header, expected",
    [
        ("10.1.2.3", GOOD, None),
        ("::ffff:10.1.2.3", GOOD, None),
        ("10.2.0.1", GOOD, (403, "Access is denied")),
        ("10.2.0.1", None, (403, "Access is denied")),  # the allowlist is checked before the credentials
        ("10.1.2.3", None, (401, "no auth header received")),
        ("", GOOD, (403, "Access is denied")),
        ("not-an-ip", GOOD, (403, "Access is denied")),
    ],
)
def test_d38_allowlist_then_auth(client: str, header: str | None, expected: tuple[int, str] | None) -> None:
    policy = auth.policy_from_config({**CREDENTIALS, "allowlist": ["10.1.0.0/16"]})
    assert outcome(policy, request(header, client)) == expected


def test_d38_allowlist_include_members_allows_the_members_api_hosts() -> None:
    policy = auth.policy_from_config({"allowlist_include_members": True})
    assert policy.checks_source and not policy.allowlist
    assert outcome(policy, request(client="10.0.0.2"), ["10.0.0.2"]) is None
    assert outcome(policy, request(client="10.0.0.9"), ["10.0.0.2"]) == (403, "Access is denied")
    assert outcome(policy, request(client="10.0.0.9")) == (403, "Access is denied")


def test_d38_member_endpoints_come_from_the_api_urls() -> None:
    members = {
        "pg1": member("pg1", host="10.0.0.1"),
        "pg2": member("pg2", api_url="https://node2.example/patroni"),
        "pg3": member("pg3", api_url=None),
        "pg4": member("pg4", api_url="http://10.0.0.4:bad/patroni"),
    }
    cluster = Cluster.from_wire(cluster_view("pg1", members=members)["keys"])
    endpoints = auth.member_endpoints(cluster)
    assert endpoints == (("10.0.0.1", 8008), ("node2.example", 443))
    assert auth.resolve_endpoints(endpoints, resolver({"node2.example": ["10.0.0.2"]})) == (ip_network("10.0.0.2/32"),)
    assert auth.member_endpoints(None) == ()


def test_d39_extra_headers_https_ones_only_with_tls() -> None:
    section = {"http_extra_headers": {"X-Frame-Options": "SAMEORIGIN"}, "https_extra_headers": {"HSTS": "1"}}
    assert auth.policy_from_config(section).extra_headers == (("X-Frame-Options", "SAMEORIGIN"),)
    assert auth.policy_from_config(section, tls=True).extra_headers == (
        ("X-Frame-Options", "SAMEORIGIN"),
        ("HSTS", "1"),
    )


@pytest.mark.parametrize(
    "client, cert, header, expected",
    [
        ("10.1.2.3", True, GOOD, None),
        ("10.1.2.3", False, GOOD, (403, "client certificate required")),
        ("10.1.2.3", False, None, (403, "client certificate required")),  # the certificate before the credentials
        ("10.1.2.3", True, None, (401, "no auth header received")),
        ("10.2.0.1", False, GOOD, (403, "Access is denied")),  # the allowlist before the certificate
    ],
)
def test_d36_allowlist_then_client_certificate_then_auth(
    client: str, cert: bool, header: str | None, expected: tuple[int, str] | None
) -> None:
    section = {**CREDENTIALS, "allowlist": ["10.1.0.0/16"], "verify_client": "optional"}
    policy = auth.policy_from_config(section, tls=True)
    req = request(header, client)
    assert outcome(policy, ControlRequest(req.method, req.path, req.query, req.headers, req.body, client, cert)) == (
        expected
    )


@pytest.mark.parametrize(
    ("section", "tls", "required"),
    [
        ({"verify_client": "optional"}, True, True),
        ({"verify_client": "REQUIRED"}, True, True),
        ({"verify_client": "none"}, True, False),
        ({}, True, False),
        ({"verify_client": "optional"}, False, False),  # plain HTTP has no client certificates
    ],
)
def test_d37_which_policies_ask_for_a_client_certificate(section: dict[str, str], tls: bool, required: bool) -> None:
    assert auth.policy_from_config(section, tls=tls).client_cert_required is required
