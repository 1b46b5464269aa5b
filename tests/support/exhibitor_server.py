"""Exhibitor for tests: a real ZooKeeper (zookeeper_server.py) plus a small HTTP server implementing the
one Exhibitor API the backend uses, GET /exhibitor/v1/cluster/list -> {"servers": [...], "port": N}.
Exhibitor itself (a Java web application) is not installed here.

`set_ensemble()` changes what the API answers, and `TcpForwarder` gives the same ZooKeeper a second
address, so that a test can move the ensemble and watch the backend follow it.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.dcs_servers import DcsServer
from tests.support.ports import free_port
from tests.support.zookeeper_server import ZooKeeperServer

CLUSTER_LIST = "/exhibitor/v1/cluster/list"


class ExhibitorServer(DcsServer):
    kind = "exhibitor"
    min_ttl = ZooKeeperServer.min_ttl
    poll_interval = 1  # seconds, in the sections handed out

    def __init__(self) -> None:
        super().__init__()
        self.zookeeper = ZooKeeperServer()
        self.port = free_port()
        self.ensemble: tuple[list[str], int] = (["127.0.0.1"], self.zookeeper.port)
        self.requests = 0
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def set_ensemble(self, servers: list[str], port: int) -> None:
        self.ensemble = (list(servers), port)

    def section(self, name: str) -> dict[str, Any]:
        return {"hosts": ["127.0.0.1"], "port": self.port, "poll_interval": self.poll_interval}

    def start(self) -> None:
        self.zookeeper.start()
        if self._http is not None:
            return
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if self.path.split("?")[0] != CLUSTER_LIST:
                    self.send_error(404)
                    return
                servers, port = server.ensemble
                body = json.dumps({"servers": servers, "port": port}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="exhibitor-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.zookeeper.stop()

    def close(self) -> None:
        self.stop()
        self.zookeeper.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpForwarder:
    """127.0.0.1:<port> forwarding every connection to `target_port`: the same server at another address."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, name="forwarder", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                continue
            self.connections += 1
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            source.settimeout(None)
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass
