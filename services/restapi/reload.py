"""D31: what POST /reload changes in the running REST API, read again from the node's configuration file: the
access policy (credentials, allowlist, verify_client), the extra headers, the client certificate for calls to
the other members, and the server certificate. A new listen address, or turning TLS on or off, needs a node
restart (logged)."""

from __future__ import annotations

import logging
import ssl
from typing import Protocol

from services.restapi.auth import AccessPolicy, policy_from_config
from services.restapi.peers import PeerProber
from services.restapi.tls import replace_context
from shared.config import ConfigError, NodeConfig
from shared.config.reread import reread
from shared.tls import client_context, server_context

log = logging.getLogger("restapi")


class _HasPolicy(Protocol):
    policy: AccessPolicy


class _HasHeaders(Protocol):
    extra_headers: list[tuple[str, str]]


class RestSettings:
    def __init__(
        self, config: NodeConfig, tls_on: bool, controller: _HasPolicy, app: _HasHeaders, prober: PeerProber
    ) -> None:
        self.config = config
        self.tls_on = tls_on
        self.controller, self.app, self.prober = controller, app, prober

    def reload(self) -> None:
        try:
            fresh = reread(self.config)
        except ConfigError as exc:
            log.error("the REST API's settings were not reloaded: %s", exc)
            return
        context: ssl.SSLContext | None = None
        try:
            context = server_context(fresh.restapi)
        except (OSError, ValueError) as exc:
            log.error("restapi.certfile, keyfile or cafile cannot be used, the current ones stay: %s", exc)
        if fresh.restapi_listen != self.config.restapi_listen or bool(fresh.restapi.get("certfile")) != self.tls_on:
            log.warning("restapi.listen, or turning HTTPS on or off, is applied when the node restarts")
        policy = policy_from_config(fresh.restapi, tls=self.tls_on)
        self.controller.policy = policy
        self.app.extra_headers = list(policy.extra_headers)
        self.prober.tls = client_context(fresh.data)
        if self.tls_on and context is not None:
            replace_context(context)
        self.config = fresh
        log.info("reloaded the REST API's settings")
