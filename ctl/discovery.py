"""Finding a cluster: over REST from the node's own API (then any member learned from an earlier answer), or
from the DCS when the configuration names only the cluster - or when no REST API answers and a DCS is
configured, as patronictl, which always reads the DCS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctl.config import CtlError, own_rest_url, rest_options
from ctl.dcs_reader import DcsReader, client_config, has_dcs
from ctl.dcs_view import cluster_body, sysid_label
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


class _OtherCluster(CtlError):
    """The REST API that answered belongs to another cluster."""


@dataclass
class ClusterSource:
    client: RestClient
    start_url: str | None
    dcs: DcsReader | None = None
    learned: list[str] = field(default_factory=list)  # base URLs of members seen in earlier answers

    def candidates(self) -> list[str]:
        return _unique([*([self.start_url] if self.start_url else []), *self.learned])

    def fetch(self, name: str) -> ClusterInfo:
        """The cluster from the first REST API that answers GET /cluster, else from the DCS."""
        if not self.candidates():
            if self.dcs is None:
                raise CtlError(
                    "No REST API address to start from: set restapi.connect_address (or restapi.listen) "
                    "in the configuration file, or give a DCS section (or -d/--dcs-url)"
                )
            return self.from_dcs(name)
        try:
            return self.from_rest(name)
        except CtlError as rest_error:
            if self.dcs is None:
                raise
            try:
                return self.from_dcs(name)
            except CtlError as dcs_error:
                raise CtlError(f"{rest_error.message}; from the DCS: {dcs_error.message}")

    def from_rest(self, name: str) -> ClusterInfo:
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
        raise CtlError(f'Can not find accessible cluster member of cluster "{name}", tried: ' + ", ".join(tried))

    def from_dcs(self, name: str) -> ClusterInfo:
        assert self.dcs is not None
        cluster = self.dcs.cluster(name)
        if not cluster.keys:
            config = client_config(self.dcs.config, name)
            raise CtlError(f'Cluster "{name}" not found in the DCS: no key under {config.namespace}/{name}/')
        return ClusterInfo(name, sysid_label(cluster), cluster_body(cluster, name), dcs=cluster)

    def _accept(self, name: str, base: str, body: Mapping[str, Any]) -> ClusterInfo:
        scope = body.get("scope")
        if scope is not None and scope != name:
            raise _OtherCluster(f'Cluster "{name}" is not known at {base}: its members belong to cluster "{scope}"')
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
    _dcs: DcsReader | None = None

    @property
    def scope(self) -> str | None:
        scope = self.config.get("scope")
        return str(scope) if scope not in (None, "") else None

    def client(self) -> RestClient:
        return self.source().client

    def dcs(self) -> DcsReader | None:
        """The DCS client factory, when the configuration has a DCS section (clients start on first use)."""
        if self._dcs is None and has_dcs(self.config):
            self._dcs = DcsReader(self.config)
        return self._dcs

    def source(self) -> ClusterSource:
        if self._source is None:
            client = RestClient(rest_options(self.config, self.insecure))
            self._source = ClusterSource(client, own_rest_url(self.config), self.dcs())
        return self._source

    def fetch(self, name: str) -> ClusterInfo:
        return self.source().fetch(name)

    def close(self) -> None:
        if self._dcs is not None:
            self._dcs.close()
