"""The Exhibitor DCS (section `exhibitor:`, B32/F34/F60): ZooKeeper whose ensemble is discovered from
Exhibitor's REST API, GET http://<host>:<port>/exhibitor/v1/cluster/list -> {"servers": [...], "port": N}.

Everything else is the ZooKeeper backend (zookeeper/). A poller thread asks the Exhibitor hosts in random
order at start (every few seconds until one answers) and then every poll_interval (default 300 s); the
servers it returns become the Exhibitor hosts asked next time, as in Patroni. When the ensemble changes,
kazoo gets the new host list; if the server we are connected to left the ensemble, a new session is opened
on the new ensemble and our ephemeral znodes (leader, member) move to it in one transaction.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

from shared.config import NodeConfig
from shared.dcs.base import BackendError, OnChange
from shared.dcs.zookeeper import ZooKeeperBackend, ZooKeeperSettings, parse_hosts
from shared.model.member import parse_int

log = logging.getLogger(__name__)

CLUSTER_LIST = "/exhibitor/v1/cluster/list"
DEFAULT_POLL_INTERVAL_S = 300.0
FIRST_POLL_RETRY_S = 2.0  # until an Exhibitor answers for the first time
REQUEST_TIMEOUT_S = 3.0


def parse_exhibitors(value: Any) -> tuple[str, ...]:
    """Exhibitor hosts: "h1,h2" (PATRONI_EXHIBITOR_HOSTS) or a list; names only, the port is separate."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else str(value or "").strip("[] ").split(",")
    hosts = (str(item).strip().strip("'\"").strip() for item in items)
    return tuple(dict.fromkeys(h for h in hosts if h))


def parse_cluster_list(body: bytes | str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Exhibitor's answer -> (its servers, the ZooKeeper hosts "server:port"). ValueError when unusable."""
    data = json.loads(body)
    if not isinstance(data, Mapping):
        raise ValueError("not a JSON object")
    servers = data.get("servers")
    port = parse_int(data.get("port"))
    if not isinstance(servers, list) or not servers or port is None or port <= 0:
        raise ValueError(f"no servers or no port in {data!r}")
    names = parse_exhibitors(servers)
    return names, parse_hosts([f"{s}:{port}" for s in names])


class ExhibitorBackend(ZooKeeperBackend):
    name = "exhibitor"

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        super().__init__(config, on_change)
        section = config.dcs
        self.exhibitors = parse_exhibitors(section.get("hosts"))
        if not self.exhibitors:
            raise BackendError("exhibitor: hosts is not set")
        port = parse_int(section.get("port"))
        if port is None or port <= 0:
            raise BackendError("exhibitor: port is not set")
        self.exhibitor_port = port
        self.poll_interval = float(parse_int(section.get("poll_interval")) or DEFAULT_POLL_INTERVAL_S)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def _read_settings(self, section: Mapping[str, Any]) -> ZooKeeperSettings:
        return ZooKeeperSettings.from_section(section, hosts=())  # the ZooKeeper hosts come from Exhibitor

    def start(self) -> None:
        super().start()
        self._poller = threading.Thread(target=self._poll_loop, name="exhibitor-poll", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=REQUEST_TIMEOUT_S * len(self.exhibitors) + 5)
        super().close()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            found = self.poll()
            if found is not None and not self._stop.is_set():
                servers, hosts = found
                self.exhibitors = servers
                if set(hosts) != set(self._hosts) or self._session is None:
                    log.info("exhibitor: the ZooKeeper ensemble is %s", ",".join(hosts))
                    try:
                        self._use_hosts(hosts, timeout=max(self._retry_timeout, 5.0))
                    except Exception as exc:  # DCSUnavailable: the new ensemble did not answer; next poll
                        log.warning("exhibitor: cannot connect to the ensemble %s: %s", ",".join(hosts), exc)
            first = self._session is None
            self._stop.wait(FIRST_POLL_RETRY_S if first else self.poll_interval)

    def poll(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """Ask the Exhibitor hosts in random order; (servers, ZooKeeper hosts) from the first that answers."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy from the environment
        for host in random.sample(self.exhibitors, len(self.exhibitors)):
            url = f"http://{host}:{self.exhibitor_port}{CLUSTER_LIST}"
            try:
                with opener.open(url, timeout=REQUEST_TIMEOUT_S) as response:
                    return parse_cluster_list(response.read())
            except (OSError, ValueError, http.client.HTTPException) as exc:
                log.warning("exhibitor: %s: %s", url, exc)
        return None
