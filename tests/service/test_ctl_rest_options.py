"""The `ctl` section on every REST call (E1, E2, E5, D36, D37, D40): Basic auth always sent when configured (falling
back to restapi.authentication), TLS verified against ctl.cacert (falling back to restapi.cafile), -k/--insecure and
ctl.insecure skipping the check, a client certificate from ctl.certfile/keyfile."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.ci import skip_unless_ci
from tests.support.fake_members import (
    NAMES,
    FakeCluster,
    FakeMember,
    batman,
    batman_members,
    config_file,
    havenctl,
)

__all__ = ["batman"]  # the fixture


def test_e5_basic_auth_is_sent_on_every_call_unsafe_ones_included(batman: FakeCluster, tmp_path: Path) -> None:
    for member in batman:
        member.route("POST", "/restart", (200, "restarted successfully"))
    auth = {"authentication": {"username": "admin", "password": "s3cret"}}
    config = config_file(tmp_path, batman, ctl=auth)
    result = havenctl(config, "restart", "batman", "postgresql1", "--force")
    assert result.exit_code == 0, result.output
    requests = [r for m in batman for r in m.requests]
    assert ("POST", "/restart") in [r.call for r in requests]
    assert {r.headers.get("authorization") for r in requests} == {"Basic YWRtaW46czNjcmV0"}
    assert all(r.headers["user-agent"].startswith("Patroni/3.2.2 Python/") for r in requests)


def test_e1_restapi_authentication_is_the_fallback(batman: FakeCluster, tmp_path: Path) -> None:
    batman["postgresql0"].route("PATCH", "/config", (200, {}))
    path = tmp_path / "node.yml"
    path.write_text(
        "scope: batman\nrestapi:\n"
        f"  connect_address: 127.0.0.1:{batman['postgresql1'].port}\n"
        "  authentication: {username: api, password: pw}\n"
    )
    assert havenctl(str(path), "pause").exit_code == 0
    assert batman["postgresql0"].requests[-1].headers["authorization"] == "Basic YXBpOnB3"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, which also serves as the CA and as the client's certificate."""
    if shutil.which("openssl") is None:
        skip_unless_ci("openssl")
    base = tmp_path_factory.mktemp("tls")
    cert, key = str(base / "cert.pem"), str(base / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_cluster(certificate: tuple[str, str]) -> Iterator[FakeCluster]:
    cluster = FakeCluster(())
    cluster.members = {name: FakeMember(name, tls=certificate) for name in NAMES}
    for member in cluster:
        member.route("GET", "/cluster", lambda _r: (200, cluster.body))
        member.route("GET", "/patroni", lambda _r, m=member: (200, cluster.status(m.name)))
    cluster.set_members(*batman_members())
    yield cluster
    cluster.close()


def https_config(tmp_path: Path, cluster: FakeCluster, restapi: dict[str, str] | None = None, **extra: object) -> str:
    """A node configuration whose REST API is https (restapi.certfile set), plus the given sections."""
    section = {"connect_address": f"127.0.0.1:{cluster['postgresql1'].port}", "certfile": "/etc/ssl/node.pem"}
    path = tmp_path / "tls.yml"
    path.write_text(yaml.safe_dump({"scope": "batman", "restapi": {**section, **(restapi or {})}, **extra}))
    return str(path)


def test_d37_tls_is_verified_unless_insecure(
    https_cluster: FakeCluster, certificate: tuple[str, str], tmp_path: Path
) -> None:
    unverified = havenctl(https_config(tmp_path, https_cluster), "list")
    assert unverified.exit_code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in unverified.stderr
    assert havenctl(https_config(tmp_path, https_cluster), "-k", "list").exit_code == 0
    assert havenctl(https_config(tmp_path, https_cluster, ctl={"insecure": True}), "list").exit_code == 0
    cert, _ = certificate
    assert havenctl(https_config(tmp_path, https_cluster, ctl={"cacert": cert}), "list").exit_code == 0
    assert havenctl(https_config(tmp_path, https_cluster, restapi={"cafile": cert}), "list").exit_code == 0


def test_d40_client_certificate_from_the_ctl_section(
    https_cluster: FakeCluster, certificate: tuple[str, str], tmp_path: Path
) -> None:
    cert, key = certificate
    for member in https_cluster:  # verify_client: required
        context = member.server.socket.context  # type: ignore[attr-defined]
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cert)
    without = havenctl(https_config(tmp_path, https_cluster, ctl={"cacert": cert}), "list")
    assert without.exit_code == 1
    with_cert = havenctl(
        https_config(tmp_path, https_cluster, ctl={"cacert": cert, "certfile": cert, "keyfile": key}), "list"
    )
    assert with_cert.exit_code == 0, with_cert.output
