"""A small PKI for the TLS tests, made with the openssl command: a CA, a server certificate for 127.0.0.1 (its key
encrypted with a password) and a client certificate, both signed by the CA; plus a client certificate the CA
did not sign."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.ci import skip_unless_ci

KEY_PASSWORD = "s3cret-key"


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str  # encrypted with KEY_PASSWORD
    client_cert: str
    client_key: str
    stranger_cert: str  # self-signed: the CA does not vouch for it
    stranger_key: str
    renewed_cert: str  # another server certificate for 127.0.0.1 from the CA (a renewal)
    renewed_key: str


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(base: Path) -> Pki:
    if shutil.which("openssl") is None:
        skip_unless_ci("openssl")
    p = {name: str(base / name) for name in ("ca.pem", "ca.key", "server.pem", "server.key", "server.csr",
                                              "client.pem", "client.key", "client.csr", "stranger.pem",
                                              "stranger.key", "renewed.pem", "renewed.key", "renewed.csr",
                                              "san.ext")}  # fmt: skip
    Path(p["san.ext"]).write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=haven test CA",
             "-keyout", p["ca.key"], "-out", p["ca.pem"])  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-passout", f"pass:{KEY_PASSWORD}", "-subj", "/CN=127.0.0.1",
             "-keyout", p["server.key"], "-out", p["server.csr"])  # fmt: skip
    _openssl("x509", "-req", "-in", p["server.csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"], "-CAcreateserial",
             "-days", "2", "-extfile", p["san.ext"], "-out", p["server.pem"])  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=haven client",
             "-keyout", p["client.key"], "-out", p["client.csr"])  # fmt: skip
    _openssl("x509", "-req", "-in", p["client.csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"], "-CAcreateserial",
             "-days", "2", "-out", p["client.pem"])  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", p["renewed.key"], "-out", p["renewed.csr"])  # fmt: skip
    _openssl("x509", "-req", "-in", p["renewed.csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"], "-CAcreateserial",
             "-days", "2", "-extfile", p["san.ext"], "-out", p["renewed.pem"])  # fmt: skip
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=stranger",
             "-keyout", p["stranger.key"], "-out", p["stranger.pem"])  # fmt: skip
    for path in base.iterdir():
        path.chmod(0o644)  # the programs of a node started as root read them as other users
    return Pki(p["ca.pem"], p["server.pem"], p["server.key"], p["client.pem"], p["client.key"],
               p["stranger.pem"], p["stranger.key"], p["renewed.pem"], p["renewed.key"])  # fmt: skip
