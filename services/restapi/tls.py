"""HTTPS for the REST API (D37): restapi.certfile turns it on; the context comes from shared/tls.py.

cheroot wraps each accepted socket in the thread that accepts connections, and its stock adapter completes the
TLS handshake there: a client that connects and never finishes its handshake would hold every other client back
for the socket timeout. Here the accepting thread only wraps the socket; the handshake happens on the first read,
in the worker thread that serves the connection. The request then carries the TLS socket, from which the control
plane learns whether the client presented a certificate (verify_client, D36)."""

from __future__ import annotations

import ssl
from typing import Any

import cheroot.server
import cherrypy
from cheroot.ssl import Adapter
from cheroot.ssl.builtin import BuiltinSSLAdapter

TLS_SOCKET = "haven.tls_socket"  # the WSGI environ key of the connection's ssl.SSLSocket
_ADAPTER = "haven-deferred"


class DeferredHandshakeAdapter(BuiltinSSLAdapter):
    def __init__(self, certificate: Any, private_key: Any, certificate_chain: Any = None, ciphers: Any = None) -> None:
        # not BuiltinSSLAdapter.__init__: it would load the key again, without keyfile_password
        Adapter.__init__(self, certificate, private_key, certificate_chain, ciphers)
        self._server_env: dict[str, Any] = {}

    def wrap(self, sock: Any) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on", TLS_SOCKET: wrapped}


def serve_tls(context: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    """Make CherryPy's server answer HTTPS with `context`."""
    cheroot.server.ssl_adapters[_ADAPTER] = DeferredHandshakeAdapter  # type: ignore[attr-defined]
    cherrypy.config.update(
        {
            "server.ssl_module": _ADAPTER,
            "server.ssl_certificate": certfile,
            "server.ssl_private_key": keyfile or certfile,
        }
    )
    cherrypy.server.ssl_context = context


def replace_context(context: ssl.SSLContext) -> None:
    """New connections use `context` (a reload with a renewed certificate, D31)."""
    server = getattr(cherrypy.server, "httpserver", None)
    adapter = getattr(server, "ssl_adapter", None)
    if adapter is not None:
        adapter.context = context


def presented_certificate(environ: dict[str, Any]) -> bool:
    """Whether the client of this HTTPS request presented a certificate the server verified."""
    sock = environ.get(TLS_SOCKET)
    if sock is None:
        return False
    try:
        return bool(sock.getpeercert())
    except ValueError:  # no handshake: cannot happen once a request was read
        return False
