"""The REST API over HTTPS (D36, D37, J3): restapi.certfile with an encrypted key (keyfile_password), cafile and
verify_client, against the real restapi program and real TLS clients."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from services.ha_loop.probes import probe_members
from services.restapi.peers import PeerProber
from shared.model import Member
from shared.tls import client_context
from tests.service.test_restapi import NAME, FakePeers, restapi_process
from tests.support.fake_ha_loop import FakeHaLoop
from tests.support.tls import KEY_PASSWORD, Pki, make_pki
from tests.support.waiting import wait_until
from tests.unit.test_restapi_core import node_status

AUTH = {"username": "admin", "password": "pw"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class TlsNode:
    def __init__(self, port: int, pki: Pki, peers: FakePeers, config_path: Path) -> None:
        self.port, self.pki, self.peers, self.config_path = port, pki, peers, config_path

    def context(self, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.pki.ca)  # the server's certificate is checked
        if cert is not None:
            context.load_cert_chain(*cert)
        return context

    def request(
        self,
        method: str,
        path: str,
        cert: tuple[str, str] | None = None,
        timeout: float = 5,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.context(cert))
        try:
            conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def started(pki: Pki, verify_client: str) -> Iterator[TlsNode]:
    restapi = {
        "certfile": pki.server_cert,
        "keyfile": pki.server_key,
        "keyfile_password": KEY_PASSWORD,
        "cafile": pki.ca,
        "verify_client": verify_client,
        "authentication": AUTH,
    }
    brains: list[FakeHaLoop] = []  # answers POST /reload
    try:
        with restapi_process(restapi, before=lambda run_dir: brains.append(FakeHaLoop(run_dir))) as process:
            node = TlsNode(process.port, pki, process.peers, Path(process.run_dir) / "node.yml")
            client = (pki.client_cert, pki.client_key)
            wait_until(lambda: node.request("GET", "/patroni", client)[0] == 200, 15, what="the REST API over HTTPS")
            yield node
    finally:
        for brain in brains:
            brain.close()


@pytest.fixture
def optional(pki: Pki) -> Iterator[TlsNode]:
    yield from started(pki, "optional")


@pytest.fixture
def required(pki: Pki) -> Iterator[TlsNode]:
    yield from started(pki, "required")


def test_https_with_an_encrypted_key_and_optional_client_certificates_D36_D37(optional: TlsNode) -> None:
    client = (optional.pki.client_cert, optional.pki.client_key)
    assert optional.request("GET", "/patroni")[0] == 200  # safe: no certificate needed (nothing published yet)
    assert optional.request("POST", "/restart") == (403, b"client certificate required")  # before the auth check
    assert optional.request("POST", "/restart", client) == (401, b"no auth header received")
    with pytest.raises(ssl.SSLError):
        http.client.HTTPSConnection("127.0.0.1", optional.port, context=ssl.create_default_context()).request(
            "GET", "/patroni"
        )  # the server's certificate is not one the system trusts: a client checking it refuses


def test_a_certificate_the_ca_did_not_sign_is_refused_J3(optional: TlsNode) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        optional.request("GET", "/patroni", (optional.pki.stranger_cert, optional.pki.stranger_key))


def test_required_client_certificates_for_every_call_D37(required: TlsNode) -> None:
    assert required.request("GET", "/patroni", (required.pki.client_cert, required.pki.client_key))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        required.request("GET", "/patroni")


def test_a_client_that_never_completes_its_handshake_holds_nobody_back_D37(optional: TlsNode) -> None:
    stalled = [socket.create_connection(("127.0.0.1", optional.port)) for _ in range(3)]  # connect, send nothing
    try:
        # served while those wait: within 3 s, well below the 10 s the stalled handshakes may last
        assert optional.request("GET", "/patroni", timeout=3)[0] == 200
    finally:
        for sock in stalled:
            sock.close()


def test_members_probe_each_other_with_the_ctl_certificate_D40(required: TlsNode) -> None:
    url = f"https://127.0.0.1:{required.port}/patroni"
    pki = required.pki
    required.peers.node_status = node_status("replica")  # a usable answer carries xlog
    wait_until(lambda: b"xlog" in required.request("GET", "/patroni", (pki.client_cert, pki.client_key))[1], 10)
    with_cert = client_context({"ctl": {"certfile": pki.client_cert, "keyfile": pki.client_key}})
    assert probe_members([(NAME, url)], tls=with_cert)[NAME].reachable  # the brain's leader-race probe
    assert not probe_members([(NAME, url)], tls=client_context({}))[NAME].reachable
    prober = PeerProber(tls=with_cert)  # the REST API's own checks of its peers (switchover candidates)
    try:
        member = Member.from_node(None, NAME, None, json.dumps({"api_url": url}))
        assert prober([member])[NAME] is not None
    finally:
        prober.close()


def served_certificate(node: TlsNode) -> bytes:
    context = node.context((node.pki.client_cert, node.pki.client_key))
    with (
        socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.getpeercert(binary_form=True) or b""


def test_a_reload_takes_new_credentials_and_a_renewed_certificate_D31(optional: TlsNode) -> None:
    client = (optional.pki.client_cert, optional.pki.client_key)
    before = served_certificate(optional)
    config = yaml.safe_load(optional.config_path.read_text())
    config["restapi"]["authentication"]["password"] = "rotated"
    config["restapi"].update(certfile=optional.pki.renewed_cert, keyfile=optional.pki.renewed_key, keyfile_password="")
    optional.config_path.write_text(yaml.safe_dump(config))
    old = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
    new = {"Authorization": "Basic " + base64.b64encode(b"admin:rotated").decode()}
    assert optional.request("POST", "/reload", client, headers=old) == (202, b"reload scheduled")
    assert optional.request("POST", "/reload", client, headers=old) == (401, b"not authenticated")
    assert optional.request("POST", "/reload", client, headers=new) == (202, b"reload scheduled")
    assert served_certificate(optional) not in (b"", before)
