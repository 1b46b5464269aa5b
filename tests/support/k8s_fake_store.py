"""The state of the Kubernetes API test server (kubernetes_server.py): namespaced core/v1 objects (pods,
endpoints, configmaps, services) with the API server's concurrency rules.

- One resourceVersion counter (etcd's revision) grows with every write; each object carries the version of
  its last write, as a string. An update (PUT) or a patch whose body carries metadata.resourceVersion is
  applied only when it equals the stored one, else 409 Conflict; without it the write is unconditional.
  A create of an existing name is 409 AlreadyExists; a delete may carry preconditions.resourceVersion.
- PATCH: application/merge-patch+json (RFC 7386) and application/strategic-merge-patch+json (treated the
  same: maps merge, null deletes, lists are replaced - exact for metadata labels/annotations and the lists
  we send whole, e.g. Endpoints subsets). application/json-patch+json is refused (415).
- Validation the client could trip over: annotation values must be strings (400), label keys/values and
  object names must be valid (422), a pod's spec cannot change (422), a pod's status is kept on updates,
  empty Endpoints subsets are dropped (the API returns them as absent, I6).
- Watch history: the last `history` events; a watch from an older resourceVersion is "too old" (410 Gone).
  `compact()` drops the whole history, like an etcd compaction.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RESOURCES = {"pods": "Pod", "endpoints": "Endpoints", "configmaps": "ConfigMap", "services": "Service"}
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_REQUIREMENT = re.compile(
    r"\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*"
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class Event:
    rv: int
    resource: str
    namespace: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    prev: dict[str, Any] | None


class Selector:
    """A label selector: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b), comma-separated (ANDed)."""

    def __init__(self, text: str | None) -> None:
        self.requirements: list[tuple[str, str, set[str]]] = []
        for part in re.split(r",(?![^(]*\))", text or ""):
            if not part.strip():
                continue
            m = _REQUIREMENT.fullmatch(part)
            if m is None:
                raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
            neg, key, op, value, set_op, values = m.groups()
            if neg:
                self.requirements.append((key, "!exists", set()))
            elif op:
                self.requirements.append((key, "!=" if op == "!=" else "=", {value}))
            elif set_op:
                self.requirements.append((key, set_op, {v.strip() for v in values.split(",") if v.strip()}))
            else:
                self.requirements.append((key, "exists", set()))

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        labels = obj.get("metadata", {}).get("labels") or {}
        for key, op, values in self.requirements:
            present, value = key in labels, labels.get(key)
            ok = {
                "=": present and value in values,
                "!=": not present or value not in values,
                "in": present and value in values,
                "notin": not present or value not in values,
                "exists": present,
                "!exists": not present,
            }[op]
            if not ok:
                return False
        return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _validate(resource: str, obj: dict[str, Any], name: str) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ApiError(400, "BadRequest", "metadata must be an object")
    if not _NAME.fullmatch(name):
        raise ApiError(422, "Invalid", f'{RESOURCES[resource]} "{name}" is invalid: metadata.name: Invalid value')
    for field in ("annotations", "labels"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ApiError(
                400, "BadRequest", f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{field}"
            )
    for key, value in (meta.get("labels") or {}).items():
        if not _LABEL_NAME.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise ApiError(422, "Invalid", f'{RESOURCES[resource]} "{name}" is invalid: metadata.labels: {key}={value}')


class K8sState:
    def __init__(self, history: int = 1000, first_rv: int = 1000) -> None:
        self.cond = threading.Condition()
        self.rv = first_rv
        self.compacted = first_rv  # events at or below this resourceVersion are no longer kept
        self.history = history
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: deque[Event] = deque()

    # --- writes ---

    def _store(
        self, resource: str, ns: str, name: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        _validate(resource, obj, name)
        obj = copy.deepcopy(obj)
        self.rv += 1
        meta = obj["metadata"]
        meta.update(name=name, namespace=ns, resourceVersion=str(self.rv))
        meta["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["creationTimestamp"] = old["metadata"]["creationTimestamp"] if old else stamp
        for field in ("labels", "annotations"):
            if not meta.get(field):
                meta.pop(field, None)
        obj.update(kind=RESOURCES[resource], apiVersion="v1")
        if resource == "endpoints" and not obj.get("subsets"):
            obj.pop("subsets", None)
        if resource == "pods" and old is not None:
            if obj.get("spec") != old.get("spec"):
                raise ApiError(
                    422, "Invalid", f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change spec'
                )
            obj["status"] = copy.deepcopy(old.get("status"))
        self.objects[(resource, ns, name)] = obj
        self._record(Event(self.rv, resource, ns, "MODIFIED" if old else "ADDED", copy.deepcopy(obj), old))
        return copy.deepcopy(obj)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        while len(self.events) > self.history:
            self.compacted = self.events.popleft().rv
        self.cond.notify_all()

    def _current(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((resource, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        return obj

    @staticmethod
    def _check_version(current: dict[str, Any], wanted: Any, resource: str, name: str) -> None:
        if wanted not in (None, "") and str(wanted) != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )

    def create(self, resource: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        name = str((body.get("metadata") or {}).get("name") or "")
        with self.cond:
            if (resource, ns, name) in self.objects:
                raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
            if (body.get("metadata") or {}).get("resourceVersion"):
                raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
            return self._store(resource, ns, name, body, None)

    def replace(self, resource: str, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.cond:
            current = self._current(resource, ns, name)
            self._check_version(current, (body.get("metadata") or {}).get("resourceVersion"), resource, name)
            return self._store(resource, ns, name, body, current)

    def patch(self, resource: str, ns: str, name: str, patch: Any, content_type: str) -> dict[str, Any]:
        if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        with self.cond:
            current = self._current(resource, ns, name)
            merged = merge_patch(current, patch)
            self._check_version(current, (merged.get("metadata") or {}).get("resourceVersion"), resource, name)
            if (merged.get("metadata") or {}).get("name") != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            return self._store(resource, ns, name, merged, current)

    def delete(self, resource: str, ns: str, name: str, precondition_rv: str | None = None) -> dict[str, Any]:
        with self.cond:
            current = self._current(resource, ns, name)
            self._check_version(current, precondition_rv, resource, name)
            del self.objects[(resource, ns, name)]
            self.rv += 1
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self._record(Event(self.rv, resource, ns, "DELETED", gone, current))
            return copy.deepcopy(gone)

    def compact(self) -> None:
        with self.cond:
            self.events.clear()
            self.compacted = self.rv

    # --- reads ---

    def get(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        with self.cond:
            return copy.deepcopy(self._current(resource, ns, name))

    def list_objects(self, resource: str, ns: str, selector: Selector) -> tuple[list[dict[str, Any]], int]:
        with self.cond:
            items = [
                copy.deepcopy(o)
                for (r, n, _), o in sorted(self.objects.items())
                if r == resource and n == ns and selector.matches(o)
            ]
            return items, self.rv

    def events_after(
        self, resource: str, ns: str, since: int, wait_s: float, running: threading.Event
    ) -> tuple[list[Event], int]:
        """Events of (resource, ns) after `since`, waiting up to wait_s for one; (events, new position).
        Raises 410 Gone when events after `since` were already dropped."""
        deadline = time.monotonic() + wait_s
        with self.cond:
            while True:
                if since < self.compacted:
                    raise ApiError(410, "Expired", f"too old resource version: {since} ({self.compacted})")
                found = [e for e in self.events if e.rv > since and e.resource == resource and e.namespace == ns]
                position = max(since, self.rv)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0 or not running.is_set():
                    return found, position
                self.cond.wait(min(remaining, 0.2))
