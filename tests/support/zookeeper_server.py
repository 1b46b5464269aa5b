"""A real standalone ZooKeeper 3.8 (Debian's jars) for tests, run as a bare JVM: Debian's zkServer.sh
insists on /etc/zookeeper and /var/log/zookeeper (PLATFORM.md).

- clientPort on 127.0.0.1 from free_port(); data and log in the server's own directory; no admin server
  (it would open port 8080); stopped by pid, SIGTERM then SIGKILL.
- tickTime 250 ms: sessions may be 0.5 s (2 ticks) to 60 s (maxSessionTimeout), so the session timeout is
  exactly the ttl asked for. min_ttl = 2 s: the lease and session expiry are precise to a few hundred ms,
  and 2 s leaves room for a ping (every 1/3 of the session) to be late once.
- tls=True adds a TLS port (Netty) with a test CA, a server certificate for 127.0.0.1 and a client
  certificate whose subject is CLIENT_PRINCIPAL, authenticated by the x509 provider (for set_acls).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from typing import Any

from tests.support.dcs_servers import DcsServer
from tests.support.ports import free_port

JAVA = "/usr/bin/java"
JARS = "/usr/share/java"
# zookeeper.jar's manifest names most of its dependencies; Netty's codec and resolver it forgets (TLS),
# and slf4j-simple makes the server log to stderr instead of warning that it has no logger.
CLASSPATH = [
    f"{JARS}/zookeeper.jar",
    f"{JARS}/netty-codec.jar",
    f"{JARS}/netty-resolver.jar",
    f"{JARS}/netty-transport-native-unix-common.jar",
    f"{JARS}/slf4j-simple.jar",
]
TICK_MS = 250
CLIENT_PRINCIPAL = "CN=haven-client"
READY_TIMEOUT_S = 30.0


def is_ready(port: int) -> bool:
    """ZooKeeper answers the four-letter word `ruok` with `imok`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"ruok")
            return sock.recv(16) == b"imok"
    except OSError:
        return False


_running: set[ZooKeeperServer] = set()


@atexit.register
def _stop_all() -> None:
    """No JVM outlives the test run, even when a test forgot close()."""
    for server in list(_running):
        server.stop()


class ZooKeeperServer(DcsServer):
    kind = "zookeeper"
    min_ttl = 2.0

    def __init__(self, tls: bool = False) -> None:
        super().__init__()
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "zookeeper.log"
        if tls:
            self._make_certificates()
        self._write_config()

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{self.port}"]

    def section(self, name: str) -> dict[str, Any]:
        return {"hosts": self.hosts}

    def tls_section(self) -> dict[str, Any]:
        """A section that connects over TLS with the client certificate (CLIENT_PRINCIPAL)."""
        tls = self.dir / "tls"
        return {
            "hosts": [f"127.0.0.1:{self.tls_port}"],
            "use_ssl": True,
            "cacert": str(tls / "ca.pem"),
            "cert": str(tls / "client.crt"),
            "key": str(tls / "client.key"),
            "verify": True,
        }

    def _write_config(self) -> None:
        conf = self.dir / "conf"
        conf.mkdir(exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        lines = [
            f"tickTime={TICK_MS}",
            f"dataDir={self.dir / 'data'}",
            f"clientPort={self.port}",
            "clientPortAddress=127.0.0.1",
            f"minSessionTimeout={2 * TICK_MS}",
            "maxSessionTimeout=60000",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,cons",
            "maxClientCnxns=0",
            "autopurge.purgeInterval=0",
        ]
        if self.tls_port is not None:
            tls = self.dir / "tls"
            lines += [
                f"secureClientPort={self.tls_port}",
                "secureClientPortAddress=127.0.0.1",
                "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                f"ssl.keyStore.location={tls / 'server.pem'}",
                "ssl.keyStore.type=PEM",
                f"ssl.trustStore.location={tls / 'ca.pem'}",
                "ssl.trustStore.type=PEM",
                "authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider",
            ]
        (conf / "zoo.cfg").write_text("\n".join(lines) + "\n")

    def _make_certificates(self) -> None:
        tls = self.dir / "tls"
        tls.mkdir()

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True)

        key = ["-newkey", "rsa:2048", "-nodes", "-days", "2"]
        openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=haven-test-ca")
        (tls / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for name, subject in (("server", "/CN=localhost"), ("client", "/" + CLIENT_PRINCIPAL)):
            openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
            sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", f"{name}.crt"]
            extension = ["-extfile", "server.ext"] if name == "server" else []
            openssl("x509", "-req", "-in", f"{name}.csr", *sign, *extension)
        (tls / "server.pem").write_text((tls / "server.key").read_text() + (tls / "server.crt").read_text())

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        command = [
            JAVA,
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-Dzookeeper.admin.enableServer=false",
            "-cp",
            ":".join([str(self.dir / "conf"), *CLASSPATH]),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(self.dir / "conf" / "zoo.cfg"),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        _running.add(self)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not is_ready(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ZooKeeper on port {self.port} did not start:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        _running.discard(self)
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def kill(self) -> None:
        """kill -9: no goodbye to the clients."""
        _running.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
