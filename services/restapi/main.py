"""The REST API's shell: one thread follows the published events, CherryPy's threads answer HTTP from them.

The subscriber thread is the only writer of the current Snapshot: it builds a new immutable one per event
and swaps it in with a single assignment. A request thread reads `holder.current` once and answers from
that value alone, so no health check ever waits on a lock, a socket to another program, SQL or the DCS.
Unsafe requests go to the control plane (control.py), which asks the brain and may sleep on the holder
until the published state shows the result.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit

import cherrypy
import zmq

from services.restapi import core
from services.restapi.auth import policy_from_config
from services.restapi.control import Controller, ZmqBrain
from services.restapi.peers import PeerProber
from services.restapi.reload import RestSettings
from services.restapi.snapshot import Identity, MalformedEvent, Snapshot, apply_event, initial
from services.restapi.tls import presented_certificate, serve_tls
from shared import log as haven_log
from shared.model.member import parse_int
from shared.protocol.endpoints import Service, Topic, pub_path, router_path
from shared.protocol.transport import Subscriber
from shared.runtime import Runtime
from shared.tls import client_context, server_context
from shared.version import __version__

log = logging.getLogger("restapi")

THREAD_POOL = 16
DEFAULT_QUEUE_SIZE = 5  # D2: the listen backlog
MAX_CONTROL_BODY = 1024 * 1024
_POLL_MS = 200

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class SnapshotHolder:
    """The latest Snapshot. Written by the event thread only; read by any number of request threads."""

    def __init__(self, identity: Identity) -> None:
        self.current: Snapshot = initial(identity)
        self.generation = 0  # counts the snapshots applied; waiters sleep until it grows
        self.received = 0
        self.dropped = 0
        self._changed = threading.Condition()

    def apply(self, topic: str, body: Any, now: float) -> bool:
        try:
            snapshot = apply_event(self.current, topic, body, now)
        except MalformedEvent as exc:
            self.dropped += 1
            log.warning("dropped a %s event: %s", topic, exc)
            return False
        with self._changed:
            self.current = snapshot
            self.generation += 1
            self._changed.notify_all()
        self.received += 1
        return True

    def wait_newer(self, generation: int, timeout: float) -> int:
        """Sleep until a snapshot newer than `generation` is applied, or `timeout` passes; the current generation."""
        with self._changed:
            self._changed.wait_for(lambda: self.generation > generation, timeout=max(0.0, timeout))
            return self.generation


class EventFeed:
    """The background thread that subscribes to node_status (ha_loop) and cluster_view (dcs_proxy)."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        run_dir: str,
        holder: SnapshotHolder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._subscriber = Subscriber(
            ctx,
            [pub_path(run_dir, Service.HA_LOOP), pub_path(run_dir, Service.DCS_PROXY)],
            [Topic.NODE_STATUS, Topic.CLUSTER_VIEW],
        )
        self._holder = holder
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restapi-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._subscriber.socket.poll(_POLL_MS):
                    continue
                for event in self._subscriber.drain():
                    self._holder.apply(event.topic, event.body, self._clock())
            except zmq.ContextTerminated:
                return
            except Exception:  # never let one bad event end the feed
                log.exception("event feed error; carrying on")
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._subscriber.close()

    @property
    def dropped(self) -> int:
        return self._subscriber.dropped + self._holder.dropped


class RestApp:
    """The WSGI callable CherryPy serves: it hands each request to core.respond()."""

    def __init__(
        self,
        holder: SnapshotHolder,
        control: core.ControlHandler = core.not_implemented,
        clock: Callable[[], float] = time.time,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.holder = holder
        self.control = control
        self.clock = clock
        self.extra_headers = list(extra_headers)  # D39: added to every answer

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        target = str(environ.get("REQUEST_URI") or "")
        try:
            path, query = split_target(target, environ)
            snapshot = self.holder.current
            if method in core.UNSAFE_METHODS:
                response = self.control(control_request(method, path, query, environ), snapshot, self.clock())
            else:
                response = core.respond(method, path, query, snapshot, self.clock())
        except Exception:
            log.exception("%s %s failed", method, target)
            response = core.internal_error()
        body = response.body or b""
        headers = [*response.headers.items(), *self.extra_headers, ("Content-Length", str(len(body)))]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %d %.2fms", method, target, response.status, (time.monotonic() - started) * 1000)
        return [b"" if method == "HEAD" else body]


def split_target(target: str, environ: dict[str, Any]) -> tuple[str, str]:
    """The raw request target as Patroni sees it (not percent-decoded); absolute URIs are reduced to the path."""
    if not target:
        target = quote(str(environ.get("PATH_INFO") or "/"))
        if environ.get("QUERY_STRING"):
            target += "?" + str(environ["QUERY_STRING"])
    if target.startswith("/"):  # origin-form, the usual case: a leading // is a path, not a host
        path, _, query = target.partition("?")
        return path, query
    parts = urlsplit(target)  # absolute-form (http://host/primary) or '*'
    return parts.path or "/", parts.query


def control_request(method: str, path: str, query: str, environ: dict[str, Any]) -> core.ControlRequest:
    headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    if environ.get("CONTENT_LENGTH") is not None:  # absent when the request had no Content-Length (D24: 411)
        headers["content-length"] = str(environ["CONTENT_LENGTH"])
    length = parse_int(environ.get("CONTENT_LENGTH")) or 0
    body = b""
    if 0 < length <= MAX_CONTROL_BODY:
        body = environ["wsgi.input"].read(length)
    client = str(environ.get("REMOTE_ADDR") or "")
    return core.ControlRequest(method, path, query, headers, body, client, presented_certificate(environ))


def bind_problem(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, checked before CherryPy tries (D1: a helpful message)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def configure_cherrypy(app: RestApp, host: str, port: int, queue_size: int) -> None:
    cherrypy.config.update(
        {
            "environment": "production",
            "engine.autoreload.on": False,
            "log.screen": False,
            "server.socket_host": host,
            "server.socket_port": port,
            "server.thread_pool": THREAD_POOL,
            "server.socket_queue_size": queue_size,
            "server.nodelay": True,  # PLATFORM.md: keep-alive stalls 40 ms per request without it
            "server.max_request_body_size": MAX_CONTROL_BODY,
            "server.shutdown_timeout": 2,
            "server.server_name": f"haven/{__version__}",
        }
    )
    cherrypy.tree.graft(app, "")


def run(runtime: Runtime) -> int:
    config = runtime.config
    holder = SnapshotHolder(Identity(config.name, config.scope))
    host, port = config.restapi_listen
    queue_size = parse_int(config.restapi.get("request_queue_size"))
    queue_size = DEFAULT_QUEUE_SIZE if queue_size is None or queue_size < 0 else queue_size
    problem = bind_problem(host, port)
    if problem is not None:
        log.error("%s", problem)
        haven_log.shutdown()
        return 1

    try:
        tls = server_context(config.restapi)
    except (OSError, ValueError, ssl.SSLError) as exc:
        log.error("restapi.certfile, keyfile or cafile cannot be used: %s", exc)
        haven_log.shutdown()
        return 1

    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hup = threading.Event()  # D31: the node got SIGHUP (shared/launcher/supervise.py passes it on)
    signal.signal(signal.SIGHUP, lambda signum, frame: hup.set())

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    feed = EventFeed(ctx, runtime.run_dir, holder)
    feed.start()
    policy = policy_from_config(config.restapi, tls=tls is not None)
    brain = ZmqBrain(ctx, router_path(runtime.run_dir, Service.HA_LOOP))
    prober = PeerProber(tls=client_context(config.data))
    controller = Controller(holder, brain, policy, prober=prober)
    app = RestApp(holder, controller, extra_headers=policy.extra_headers)
    controller.on_reload = RestSettings(config, tls is not None, controller, app, prober).reload
    configure_cherrypy(app, host, port, queue_size)
    if tls is not None:
        serve_tls(tls, str(config.restapi["certfile"]), config.restapi.get("keyfile"))
    try:
        cherrypy.engine.start()
        log.info("serving the REST API on %s://%s:%d", "https" if tls else "http", host, port)
        while not stopping.wait(1.0):
            if hup.is_set():
                hup.clear()
                log.info("SIGHUP: reloading (%d)", controller.reload().status)
    finally:
        cherrypy.engine.exit()
        feed.stop()
        prober.close()
        brain.close()
        ctx.destroy(linger=0)
        log.info("stopped (%d events applied, %d dropped)", holder.received, feed.dropped)
        haven_log.shutdown()
    return 0
