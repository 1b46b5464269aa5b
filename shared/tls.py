"""TLS of the REST API (D37, D40, J3): the server's context from the restapi section, and the one a member uses
to call the others' APIs (the leader-race probe, POST /failsafe, the REST API's own checks of its peers)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

VERIFY_CLIENT = ("none", "optional", "required")


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def verify_client(restapi: Mapping[str, Any]) -> str:
    """none (default), optional (a client certificate for unsafe methods) or required (for every call)."""
    value = str(restapi.get("verify_client") or "none").lower()
    return value if value in VERIFY_CLIENT else "none"


def server_context(restapi: Mapping[str, Any]) -> ssl.SSLContext | None:
    """None when restapi.certfile is empty or unset (plain HTTP). Raises OSError or ssl.SSLError on bad files."""
    certfile = _text(restapi.get("certfile"))
    if certfile is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, _text(restapi.get("keyfile")), _text(restapi.get("keyfile_password")))
    if ciphers := _text(restapi.get("ciphers")):
        context.set_ciphers(ciphers)
    mode = verify_client(restapi)
    if mode != "none":
        context.verify_mode = ssl.CERT_REQUIRED if mode == "required" else ssl.CERT_OPTIONAL
        if cafile := _text(restapi.get("cafile")):
            context.load_verify_locations(cafile)
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


def member_client_context(config: Mapping[str, Any]) -> ssl.SSLContext:
    """Members call each other without checking the server's certificate (as Patroni's own calls do), and
    present the client certificate of the ctl section when there is one (D40: restapi.certfile is not used)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    ctl = config.get("ctl")
    ctl = ctl if isinstance(ctl, Mapping) else {}
    if certfile := _text(ctl.get("certfile")):
        context.load_cert_chain(certfile, _text(ctl.get("keyfile")), _text(ctl.get("keyfile_password")))
    return context


def client_context(config: Mapping[str, Any]) -> ssl.SSLContext:
    """member_client_context(), or without a client certificate when ctl's files cannot be used (logged)."""
    try:
        return member_client_context(config)
    except (OSError, ValueError, ssl.SSLError) as exc:
        log.error("ctl.certfile or keyfile cannot be used, members are called without a client certificate: %s", exc)
        return member_client_context({})
