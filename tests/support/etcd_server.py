"""Real etcd 3.4 servers for tests (/usr/bin/etcd): Etcd3Server for the `etcd3` backend, Etcd2Server (the same
binary with --enable-v2=true) for the `etcd` backend. One member, or `members=3` for a real Raft cluster whose
members a test can kill and start again. Every member listens on 127.0.0.1 only, on free client and peer ports,
with its data under self.dir; it is stopped by pid (SIGTERM, then SIGKILL), never by name. stop() keeps the data
and the ports, so start() brings the same server back (an outage); pause_member()/resume_member() SIGSTOP and
SIGCONT a member (a hung server), and pid() names its process.

min_ttl: etcd grants no lease shorter than 1.5 x its election timeout (1 s by default: 2 s after rounding up) and
expires leases on a 0.5 s tick; the v2 store's TTLs are expired by the leader every 0.5 s as well. Measured here
(time from the write to the key's disappearance as another client's watch sees it): v3 ttl 1 -> 2.3-2.5 s (the
lease is granted 2 s), ttl 2 -> 2.0-2.5 s, ttl 3 -> 3.5 s, ttl 5 -> 5.0 s; v2 ttl 1 -> 1.1-1.5 s, ttl 2 -> 2.5 s,
ttl 3 -> 3.5 s, ttl 5 -> 5.5 s. So 2 s is the smallest ttl honoured reliably by both (never early, <= 0.5 s late).
tls=True serves https only and requires a client certificate of a CA made for the test (make_certificates).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import urllib3

from tests.support.dcs_servers import DcsServer
from tests.support.ports import free_port

ETCD_BIN = os.environ.get("HAVEN_ETCD_BIN", "/usr/bin/etcd")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def etcd_binary() -> str:
    if os.path.exists(ETCD_BIN):
        return ETCD_BIN
    found = shutil.which("etcd")
    if found:
        return found
    raise RuntimeError("etcd is missing: run `make setup-test` (it installs etcd-server)")


def make_certificates(folder: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "haven test CA")])
    paths: dict[str, str] = {}

    def issue(name: str, key: Any, subject: x509.Name, issuer_key: Any, extensions: list[Any]) -> None:
        builder = x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
        builder = builder.serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(1))
        builder = builder.not_valid_after(now + datetime.timedelta(days=2))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        (folder / f"{name}.pem").write_bytes(
            builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (folder / f"{name}-key.pem").write_bytes(pem)
        paths[name], paths[f"{name}-key"] = str(folder / f"{name}.pem"), str(folder / f"{name}-key.pem")

    issue("ca", ca_key, ca_name, ca_key, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    server_san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server_use = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd")])
    issue(
        "server",
        ec.generate_private_key(ec.SECP256R1()),
        server_name,
        ca_key,
        [(server_san, False), (server_use, False)],
    )
    client_use = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    client_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "haven")])
    issue("client", ec.generate_private_key(ec.SECP256R1()), client_name, ca_key, [(client_use, False)])
    return paths


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class EtcdServer(DcsServer):
    """One etcd cluster of `members` members on loopback; `section()` names them all."""

    kind: ClassVar[str] = "etcd3"
    min_ttl: ClassVar[float] = 2.0
    enable_v2: ClassVar[bool] = False
    extra_args: ClassVar[tuple[str, ...]] = ()

    def __init__(self, members: int = 1, tls: bool = False) -> None:
        """tls: clients must speak https and show a certificate of the test CA (--client-cert-auth)."""
        super().__init__()
        self.token = f"haven-{uuid.uuid4().hex[:12]}"
        scheme = "https" if tls else "http"
        self.members = [
            Member(f"m{i}", free_port(), free_port(), self.dir / f"m{i}.etcd", scheme=scheme) for i in range(members)
        ]
        self.certs = make_certificates(self.dir / "tls") if tls else {}
        self.http = urllib3.PoolManager(
            retries=False,
            timeout=urllib3.Timeout(connect=0.5, read=2.0),
            ca_certs=self.certs.get("ca"),
            cert_file=self.certs.get("client"),
            key_file=self.certs.get("client-key"),
        )

    # --- the DcsServer interface ---

    def start(self) -> None:
        for i, member in enumerate(self.members):
            if not member.is_running():
                self._spawn(i)
        for i in range(len(self.members)):
            self.wait_member(i)

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.stop_member(i)

    def section(self, name: str) -> dict[str, Any]:
        if len(self.members) == 1:
            section: dict[str, Any] = {"host": f"127.0.0.1:{self.members[0].client_port}"}
        else:
            section = {"hosts": [f"127.0.0.1:{m.client_port}" for m in self.members]}
        if self.certs:
            files = {"cacert": self.certs["ca"], "cert": self.certs["client"], "key": self.certs["client-key"]}
            section.update(protocol="https", **files)
        return section

    # --- members ---

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _spawn(self, i: int) -> None:
        member = self.members[i]
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        cmd = [
            etcd_binary(),
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-token={self.token}",
            "--initial-cluster-state=new",
            f"--enable-v2={'true' if self.enable_v2 else 'false'}",
            *self.extra_args,
        ]
        if self.certs:
            cmd += [
                f"--cert-file={self.certs['server']}",
                f"--key-file={self.certs['server-key']}",
                f"--trusted-ca-file={self.certs['ca']}",
                "--client-cert-auth=true",
            ]
        with open(member.log_path, "ab") as log:
            member.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def is_member_healthy(self, i: int) -> bool:
        try:
            response = self.http.request("GET", self.members[i].client_url + "/health")
            return response.status == 200 and json.loads(response.data).get("health") == "true"
        except (urllib3.exceptions.HTTPError, ValueError):
            return False

    def wait_member(self, i: int, timeout: float = START_TIMEOUT_S) -> None:
        member = self.members[i]
        deadline = time.monotonic() + timeout
        while not self.is_member_healthy(i):
            if not member.is_running():
                raise RuntimeError(f"etcd {member.name} exited: {self.log_tail(i)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd {member.name} not healthy after {timeout}s: {self.log_tail(i)}")
            time.sleep(0.05)

    def start_member(self, i: int) -> None:
        """Start a stopped member again; returns at once (the others decide when it is healthy)."""
        if not self.members[i].is_running():
            self._spawn(i)

    def kill_member(self, i: int) -> None:
        """A crash: SIGKILL, no goodbye to the peers."""
        self._signal(i, signal.SIGKILL, STOP_TIMEOUT_S)

    def stop_member(self, i: int) -> None:
        if not self._signal(i, signal.SIGTERM, STOP_TIMEOUT_S):
            self._signal(i, signal.SIGKILL, STOP_TIMEOUT_S)

    def pid(self, i: int = 0) -> int | None:
        """The process id of a running member."""
        member = self.members[i]
        return member.process.pid if member.process is not None and member.is_running() else None

    def pause_member(self, i: int = 0) -> None:
        """A hung server: SIGSTOP, so connections stay open and requests get no answer. resume_member() ends it
        (a test must call it in a `finally`)."""
        pid = self.pid(i)
        if pid is None:
            raise RuntimeError(f"etcd {self.members[i].name} is not running")
        os.kill(pid, signal.SIGSTOP)

    def resume_member(self, i: int = 0) -> None:
        """SIGCONT to a member paused by pause_member(); nothing when it is not running."""
        pid = self.pid(i)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _signal(self, i: int, sig: signal.Signals, timeout: float) -> bool:
        member = self.members[i]
        process = member.process
        if process is None:
            return True
        if process.poll() is None:
            try:
                os.kill(process.pid, sig)
                if sig != signal.SIGKILL:
                    os.kill(process.pid, signal.SIGCONT)  # a paused member must run to handle SIGTERM
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        member.process = None
        return True

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            return "\n".join(self.members[i].log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        super().close()
        self.http.clear()

    # --- raw clients, independent of the backends under test ---

    def v3(self, path: str, body: dict[str, Any], i: int = 0, token: str | None = None) -> dict[str, Any]:
        """POST to the v3 gRPC gateway (JSON; keys and values base64, int64 as strings)."""
        headers = {"Authorization": token} if token else {}
        response = self.http.request("POST", self.members[i].client_url + path, body=json.dumps(body), headers=headers)
        data: dict[str, Any] = json.loads(response.data)
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data}")
        return data

    def v3_range(self, prefix: str, i: int = 0, token: str | None = None) -> dict[str, dict[str, Any]]:
        """Every key under `prefix` as a raw v3 client sees it: key -> kv with value decoded."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        data = self.v3("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)}, i, token)
        return {unb64(kv["key"]): {**kv, "value": unb64(kv.get("value", ""))} for kv in data.get("kvs", [])}

    def v2(self, method: str, path: str, i: int = 0, **fields: str) -> tuple[int, dict[str, Any]]:
        """A request to the v2 API (path from /v2/...)."""
        response = self.http.request(method, self.members[i].client_url + path, fields=fields or None)
        return response.status, json.loads(response.data or b"{}")

    def raft_leader(self) -> int | None:
        """The index of the member that is etcd's Raft leader now."""
        for i, member in enumerate(self.members):
            if member.is_running():
                try:
                    status = self.v3("/v3/maintenance/status", {}, i)
                except (urllib3.exceptions.HTTPError, RuntimeError, ValueError):
                    continue
                if status.get("leader") == status["header"]["member_id"]:
                    return i
        return None

    def enable_auth(self, user: str, password: str, prefix: str) -> None:
        """Turn authentication on: root/rootpw, and `user` with read-write access under `prefix` only."""
        raise NotImplementedError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


class Etcd3Server(EtcdServer):
    """etcd for the `etcd3` backend (v3 API over gRPC)."""

    kind = "etcd3"
    min_ttl = 2.0

    def enable_auth(self, user: str, password: str, prefix: str) -> None:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        self.v3("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
        self.v3("/v3/auth/role/add", {"name": "root"})
        self.v3("/v3/auth/user/grant", {"user": "root", "role": "root"})
        self.v3("/v3/auth/user/add", {"name": user, "password": password})
        self.v3("/v3/auth/role/add", {"name": user})
        perm = {"permType": "READWRITE", "key": b64(prefix), "range_end": b64(end)}
        self.v3("/v3/auth/role/grant", {"name": user, "perm": perm})
        self.v3("/v3/auth/user/grant", {"user": user, "role": user})
        self.v3("/v3/auth/enable", {})


class Etcd2Server(EtcdServer):
    """etcd for the `etcd` backend: the v2 API, which etcd 3.4 serves only with --enable-v2=true."""

    kind = "etcd"
    min_ttl = 2.0
    enable_v2 = True

    def enable_auth(self, user: str, password: str, prefix: str) -> None:
        root = urllib3.make_headers(basic_auth="root:rootpw")

        def put(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            url = self.members[0].client_url + path
            response = self.http.request("PUT", url, body=json.dumps(body), headers=headers)
            if response.status >= 300:
                raise RuntimeError(f"{path}: {response.status} {response.data!r}")

        put("/v2/auth/users/root", {"user": "root", "password": "rootpw"})
        kv = {"read": [prefix + "*"], "write": [prefix + "*"]}
        put(f"/v2/auth/roles/{user}", {"role": user, "permissions": {"kv": kv}})
        put(f"/v2/auth/users/{user}", {"user": user, "password": password, "roles": [user]})
        put("/v2/auth/enable", {})
        everything = {"read": ["/*"], "write": ["/*"]}  # the guest role starts with full access
        put("/v2/auth/roles/guest", {"role": "guest", "revoke": {"kv": everything}}, root)
