"""Finding a cluster over REST: the node's own API first, then any member learned from an earlier answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctl.config import CtlError, own_rest_url, rest_options
from ctl.render import ClusterInfo
from ctl.rest import RestClient, RestError, endpoint_url

SYSID_TIMEOUT = 2.0
# Member states while the initialize key holds "" (a bootstrap is running).
_BOOTSTRAPPING = ("initializing new cluster", "running custom bootstrap script")


def _unique(urls: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for url in urls:
        seen.setdefault(url, None)
    return list(seen)


@dataclass
class ClusterSource:
    client: RestClient
    start_url: str | None
    learned: list[str] = field(default_factory=list)  # base URLs of members seen in earlier answers

    def candidates(self) -> list[str]:
        return _unique([*([self.start_url] if self.start_url else []), *self.learned])

    def fetch(self, name: str) -> ClusterInfo:
        """GET /cluster from the first member that answers, and the system identifier for the header."""
        tried: list[str] = []
        for base in self.candidates():
            try:
                body = self.client.get_json(endpoint_url(base, "cluster"))
            except RestError as exc:
                tried.append(f"{base} ({exc})")
                continue
            if not isinstance(body, Mapping) or not isinstance(body.get("members"), list):
                tried.append(f"{base} (not a GET /cluster answer)")
                continue
            return self._accept(name, base, body)
        if not tried:
            raise CtlError(
                "No REST API address to start from: set restapi.connect_address (or restapi.listen) "
                "in the configuration file"
            )
        raise CtlError(f'Can not find accessible cluster member of cluster "{name}", tried: ' + ", ".join(tried))

    def _accept(self, name: str, base: str, body: Mapping[str, Any]) -> ClusterInfo:
        scope = body.get("scope")
        if scope is not None and scope != name:
            raise CtlError(f'Cluster "{name}" is not known at {base}: its members belong to cluster "{scope}"')
        members = [m for m in body["members"] if isinstance(m, Mapping)]
        urls = [str(m["api_url"]) for m in members if isinstance(m.get("api_url"), str) and m["api_url"]]
        self.learned = _unique([endpoint_url(url, "").rstrip("/") for url in urls])
        return ClusterInfo(name, self._sysid(base, members), body)

    def _sysid(self, base: str, members: list[Mapping[str, Any]]) -> str:
        """database_system_identifier from GET /patroni: the leader's first, then the member that answered."""
        leaders = [m for m in members if str(m.get("role", "")).endswith("leader")]
        others = [m for m in members if m not in leaders]
        urls = [str(m["api_url"]) for m in [*leaders] if isinstance(m.get("api_url"), str)]
        urls.append(endpoint_url(base, "patroni"))
        urls.extend(str(m["api_url"]) for m in others if isinstance(m.get("api_url"), str))
        for url in _unique([endpoint_url(u, "patroni") for u in urls]):
            try:
                status = self.client.get_json(url, timeout=SYSID_TIMEOUT)
            except RestError:
                continue
            sysid = status.get("database_system_identifier") if isinstance(status, Mapping) else None
            if sysid:
                return str(sysid)
        if any(m.get("state") in _BOOTSTRAPPING for m in members):
            return "initializing"
        return "uninitialized"


@dataclass
class CtlContext:
    """What the global options give every command (click's ctx.obj)."""

    config: dict[str, Any]
    insecure: bool = False
    _source: ClusterSource | None = None

    @property
    def scope(self) -> str | None:
        scope = self.config.get("scope")
        return str(scope) if scope not in (None, "") else None

    def client(self) -> RestClient:
        return self.source().client

    def source(self) -> ClusterSource:
        if self._source is None:
            client = RestClient(rest_options(self.config, self.insecure))
            self._source = ClusterSource(client, own_rest_url(self.config))
        return self._source
