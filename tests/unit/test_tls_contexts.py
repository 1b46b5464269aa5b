"""The TLS contexts of shared/tls.py (D37, D40): verify_client modes and the members' client context."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from shared.tls import client_context, member_client_context, server_context, verify_client
from tests.support.tls import KEY_PASSWORD, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def section(pki: Pki, **extra: str) -> dict[str, str]:
    return {"certfile": pki.server_cert, "keyfile": pki.server_key, "keyfile_password": KEY_PASSWORD, **extra}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("none", ssl.CERT_NONE), ("optional", ssl.CERT_OPTIONAL), ("required", ssl.CERT_REQUIRED)],
)
def test_verify_client_sets_the_verify_mode(pki: Pki, mode: str, expected: ssl.VerifyMode) -> None:
    context = server_context(section(pki, verify_client=mode, cafile=pki.ca))
    assert context is not None and context.verify_mode == expected


def test_no_certfile_means_plain_http() -> None:
    assert server_context({}) is None and server_context({"certfile": ""}) is None


def test_an_unknown_verify_client_value_counts_as_none() -> None:
    assert verify_client({"verify_client": "sometimes"}) == "none"


def test_a_wrong_key_password_is_an_error(pki: Pki) -> None:
    with pytest.raises(ssl.SSLError):
        server_context(section(pki, keyfile_password="wrong"))


def test_members_present_the_ctl_certificate_and_do_not_check_the_server(pki: Pki, tmp_path: Path) -> None:
    context = member_client_context({"ctl": {"certfile": pki.client_cert, "keyfile": pki.client_key}})
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    missing = {"ctl": {"certfile": str(tmp_path / "missing.pem")}}
    with pytest.raises(OSError):
        member_client_context(missing)
    assert client_context(missing).verify_mode == ssl.CERT_NONE  # logged, and calls go on without a certificate
