"""A 3-node cluster whose REST APIs serve HTTPS and require client certificates (D37, D40, J3): a member's REST API
checks a switchover candidate with the ctl section's certificate, and havenctl reaches the members with the same
section. The brain's own probes over HTTPS are tested against the real REST API in test_restapi_tls.py."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator

import pytest

from tests.cluster.test_havenctl import ctl
from tests.support.cluster import Cluster, running_cluster
from tests.support.postgres import make_shared_tmpdir
from tests.support.tls import KEY_PASSWORD, Pki, make_pki
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cluster

AUTH = ("admin", "s3cret")


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    base = make_shared_tmpdir("haven-pki-")  # readable by the node's programs, which do not run as root
    try:
        yield make_pki(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(pki: Pki) -> Iterator[Cluster]:
    extra = {
        "restapi": {
            "certfile": pki.server_cert,
            "keyfile": pki.server_key,
            "keyfile_password": KEY_PASSWORD,
            "cafile": pki.ca,
            "verify_client": "required",
            "authentication": {"username": AUTH[0], "password": AUTH[1]},
        },
        "ctl": {"certfile": pki.client_cert, "keyfile": pki.client_key, "cacert": pki.ca},
    }
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    with running_cluster(3, scope="tls", extra=extra, tls=context) as c:
        yield c


def test_a_switchover_and_havenctl_over_https_with_client_certificates_D37_D40_J3(cluster: Cluster) -> None:
    leader = cluster.wait_healthy(timeout=120)
    status, body = leader.rest("/cluster")
    assert status == 200 and all(m["api_url"].startswith("https://") for m in body["members"]), body
    candidate = next(n for n in cluster.nodes if n is not leader)
    # the leader's REST API checks the candidate's GET /patroni with the ctl certificate before accepting
    out = ctl(cluster, "switchover", "tls", "--leader", leader.name, "--candidate", candidate.name, "--force").stdout
    assert "Successfully switched over" in out, out
    wait_until(lambda: cluster.leader() is candidate, 60, what=f"{candidate.name} to lead")
    cluster.wait_healthy(timeout=90)
    out = ctl(cluster, "restart", "tls", leader.name, "--force").stdout
    assert "Success: restart on member" in out, out
