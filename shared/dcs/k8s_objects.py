"""How the contract's relative keys live in Kubernetes objects (I2-I6): pure functions, no I/O.

Objects (the Kubernetes namespace is not part of the name; every object carries `labels` + scope_label):
    Endpoints mode: `<scope>` (leader; its subsets point at the leader pod) and `<scope>-config`
    ConfigMap mode: `<scope>-leader` and `<scope>-config`
    both modes:     `<scope>-sync`, `<scope>-failover`
Annotations (strings):
    leader object   leader, acquireTime, renewTime, transitions, ttl   -> key `leader`
                    optime, slots                                       -> key `status` {"optime", "slots"}
                    failsafe                                            -> key `failsafe` (verbatim)
    config object   config, initialize, history                        -> keys of the same names (verbatim)
    sync object     leader, sync_standby (quorum)                      -> key `sync` {"leader", "sync_standby"}
    failover object leader, member, scheduled_at                       -> key `failover`
    pod <name>      status                                             -> key `members/<name>` (verbatim)
`status`, `sync` and `failover` are stored as separate annotations, so the value load() returns is rebuilt
from them (json.dumps with its default separators): byte-exact for values written that way, equal as JSON
otherwise. A `status` without "slots" keeps the current slots annotation (I12).
The lock (I4) has no TTL in the API: it is held while `leader` is set and renewTime + ttl has not passed,
by the reader's clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from shared.dcs.base import BackendError, KeyValueTTL

DEFAULT_RETRIABLE = frozenset({500, 503, 504})
DEFAULT_PORTS = ({"name": "postgresql", "port": 5432},)
CONFIG_KEYS = ("config", "initialize", "history")
FAILOVER_FIELDS = ("leader", "member", "scheduled_at")
_DELETE: dict[str, tuple[str, ...]] = {
    "status": ("optime", "slots"),
    "optime/leader": ("optime",),
    "sync": ("leader", "sync_standby", "quorum"),
    "failover": FAILOVER_FIELDS,
}


def _parse(value: Any) -> Any:
    return yaml.safe_load(value) if isinstance(value, str) else value


def _bool(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)


@dataclass(frozen=True)
class K8sSettings:
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    scope_label: str = "cluster-name"
    role_label: str = "role"
    leader_label_value: str = "master"
    follower_label_value: str = "replica"
    standby_leader_label_value: str = "master"
    tmp_role_label: str | None = None
    use_endpoints: bool = False
    pod_ip: str | None = None
    ports: tuple[Mapping[str, Any], ...] = DEFAULT_PORTS
    bypass_api_service: bool = False
    retriable_http_codes: frozenset[int] = DEFAULT_RETRIABLE

    @classmethod
    def from_section(cls, s: Mapping[str, Any]) -> K8sSettings:
        try:
            labels = _parse(s.get("labels")) or {}
            ports = _parse(s.get("ports")) or list(DEFAULT_PORTS)
            codes = _parse(s.get("retriable_http_codes"))
            codes = [] if codes is None else [codes] if isinstance(codes, int | str) else list(codes)
            return cls(
                namespace=str(s.get("namespace") or "default"),
                labels={str(k): str(v) for k, v in dict(labels).items()},
                scope_label=str(s.get("scope_label") or "cluster-name"),
                role_label=str(s.get("role_label") or "role"),
                leader_label_value=str(s.get("leader_label_value") or "master"),
                follower_label_value=str(s.get("follower_label_value") or "replica"),
                standby_leader_label_value=str(s.get("standby_leader_label_value") or "master"),
                tmp_role_label=str(s["tmp_role_label"]) if s.get("tmp_role_label") else None,
                use_endpoints=_bool(s.get("use_endpoints", False)),
                pod_ip=str(s["pod_ip"]) if s.get("pod_ip") else None,
                ports=tuple(dict(p) for p in ports),
                bypass_api_service=_bool(s.get("bypass_api_service", False)),
                retriable_http_codes=DEFAULT_RETRIABLE | frozenset(int(c) for c in codes),
            )
        except (TypeError, ValueError, yaml.YAMLError) as exc:
            raise BackendError(f"kubernetes: invalid settings: {exc}")

    def selector_labels(self, scope: str) -> dict[str, str]:
        return {**self.labels, self.scope_label: scope}


@dataclass(frozen=True)
class ObjectNames:
    leader: str
    config: str
    sync: str
    failover: str

    @classmethod
    def for_scope(cls, scope: str, use_endpoints: bool) -> ObjectNames:
        return cls(
            scope if use_endpoints else f"{scope}-leader", f"{scope}-config", f"{scope}-sync", f"{scope}-failover"
        )

    def all(self) -> tuple[tuple[str, str], ...]:
        """(role, object name) of every object of the cluster."""
        return (("leader", self.leader), ("config", self.config), ("sync", self.sync), ("failover", self.failover))

    def holder(self, key: str) -> str:
        """The name of the object that stores `key`."""
        if key in ("leader", "status", "failsafe", "optime/leader"):
            return self.leader
        if key in CONFIG_KEYS:
            return self.config
        if key in ("sync", "failover"):
            return self.sync if key == "sync" else self.failover
        raise ValueError(f"kubernetes: no object stores the key {key!r}")

    def role_of(self, name: str) -> str:
        return next(role for role, n in self.all() if n == name)


def annotations_of(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def parse_iso(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() if text else None
    except ValueError:
        return None


def ttl_text(ttl: float) -> str:
    return f"{float(ttl):g}"


def lock_expiry(ann: Mapping[str, str]) -> float | None:
    """renewTime + ttl, or None when either cannot be read (then the lock counts as expired)."""
    renewed = parse_iso(ann.get("renewTime"))
    try:
        ttl = float(ann.get("ttl") or "")
    except ValueError:
        return None
    return None if renewed is None else renewed + ttl


def lock_holder(ann: Mapping[str, str], now: float) -> str | None:
    """Who holds the lock at `now`: `leader` while renewTime + ttl has not passed (I4)."""
    leader, expiry = ann.get("leader"), lock_expiry(ann)
    return leader if leader and expiry is not None and expiry > now else None


def take_annotations(observed: Mapping[str, str] | None, name: str, ttl: float, now: float) -> dict[str, str]:
    """Taking a free or expired lock: transitions counts changes of holder; acquireTime stays on a re-take."""
    stamp = iso(now)
    taken = {"leader": name, "acquireTime": stamp, "renewTime": stamp, "transitions": "0", "ttl": ttl_text(ttl)}
    if observed is not None:
        try:
            transitions = int(observed.get("transitions") or 0)
        except ValueError:
            transitions = 0
        if observed.get("leader") == name:
            taken["acquireTime"] = observed.get("acquireTime") or stamp
        else:
            transitions += 1
        taken["transitions"] = str(transitions)
    return taken


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def write_annotations(key: str, value: str) -> dict[str, str | None]:
    """The annotation changes that store `value` as `key` (None removes an annotation)."""
    if key in (*CONFIG_KEYS, "failsafe"):
        return {key: value}
    if key == "optime/leader":
        return {"optime": value}
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if key == "status":
        data = data if isinstance(data, dict) else {}
        out: dict[str, str | None] = {"optime": _text(data.get("optime"))}
        if "slots" in data:
            out["slots"] = None if data["slots"] is None else json.dumps(data["slots"], separators=(",", ":"))
        return out
    if key == "sync":
        data = data if isinstance(data, dict) else {}
        out = {"leader": _text(data.get("leader")), "sync_standby": _text(data.get("sync_standby"))}
        if "quorum" in data:
            out["quorum"] = _text(data["quorum"])
        return out
    if key == "failover":
        if not isinstance(data, dict):  # the legacy "leader:candidate" form
            leader, _, member = value.partition(":") if data is None else ("", "", "")
            data = {"leader": leader, "member": member}
        return {f: _text(data.get(f)) for f in FAILOVER_FIELDS}
    raise ValueError(f"kubernetes: the key {key!r} cannot be written")


def delete_annotations(key: str) -> dict[str, str | None]:
    return dict.fromkeys(_DELETE.get(key, (key,)))


def object_keys(role: str, ann: Mapping[str, str], now: float) -> dict[str, str]:
    """The relative keys one object holds now."""
    if role == "config":
        return {k: ann[k] for k in CONFIG_KEYS if k in ann}
    if role == "failover":
        present = {f: ann[f] for f in FAILOVER_FIELDS if f in ann}
        return {"failover": json.dumps(present)} if present else {}
    if role == "sync":
        if not ann.get("leader") and not ann.get("sync_standby"):
            return {}
        sync: dict[str, Any] = {"leader": ann.get("leader"), "sync_standby": ann.get("sync_standby")}
        if (ann.get("quorum") or "").isdigit():
            sync["quorum"] = int(ann["quorum"])
        return {"sync": json.dumps(sync)}
    out: dict[str, str] = {}
    holder = lock_holder(ann, now)
    if holder:
        out["leader"] = holder
    status: dict[str, Any] = {}
    if (ann.get("optime") or "").isdigit():
        status["optime"] = int(ann["optime"])
    if ann.get("slots"):
        try:
            status["slots"] = json.loads(ann["slots"])
        except ValueError:
            pass
    if status:
        out["status"] = json.dumps(status)
    if "failsafe" in ann:
        out["failsafe"] = ann["failsafe"]
    return out


def resource_version(obj: Mapping[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def cluster_keys(
    objects: Mapping[str, Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], names: ObjectNames, now: float
) -> dict[str, KeyValueTTL]:
    keys: dict[str, KeyValueTTL] = {}
    for role, name in names.all():
        obj = objects.get(name)
        if obj is None:
            continue
        ann, version = annotations_of(obj), resource_version(obj)
        for key, value in object_keys(role, ann, now).items():
            expiry = lock_expiry(ann) if key == "leader" else None
            keys[key] = KeyValueTTL(value, version, None, None if expiry is None else max(0.0, expiry - now))
    for pod in pods:
        ann = annotations_of(pod)
        if "status" in ann:
            keys[f"members/{pod['metadata']['name']}"] = KeyValueTTL(ann["status"], resource_version(pod))
    return keys


def role_labels(s: K8sSettings, data: Mapping[str, Any], holds_lock: bool) -> dict[str, str | None]:
    """The pod's role label (I5), and tmp_role_label with the default values; None removes a label."""
    role, state = data.get("role"), data.get("state")
    value: str | None
    default: str | None
    if holds_lock:
        value = s.standby_leader_label_value if role == "standby_leader" else s.leader_label_value
        default = "master"
    elif state == "running" and role not in ("master", "primary") and role:
        value = s.follower_label_value if role == "replica" else str(role)
        default = "replica" if role == "replica" else str(role)
    else:
        value = default = None
    labels = {s.role_label: value}
    if s.tmp_role_label:
        labels[s.tmp_role_label] = default
    return labels


def leader_subsets(s: K8sSettings, pod_name: str, node_name: str | None) -> list[dict[str, Any]] | None:
    """The leader Endpoints' subsets (I6): pod_ip and ports; None when pod_ip is not set."""
    if not s.pod_ip:
        return None
    address: dict[str, Any] = {"ip": s.pod_ip, "targetRef": {"kind": "Pod", "name": pod_name, "namespace": s.namespace}}
    if node_name:
        address["nodeName"] = node_name
    ports = [
        {
            **({"name": str(p["name"])} if p.get("name") else {}),
            "port": int(p["port"]),
            "protocol": str(p.get("protocol") or "TCP"),
        }
        for p in s.ports
    ]
    return [{"addresses": [address], "ports": ports}]
