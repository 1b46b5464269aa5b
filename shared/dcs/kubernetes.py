"""The Kubernetes DCS (section `kubernetes:`, B33, I1-I12, F35): Endpoints or ConfigMaps annotations plus
pod annotations, over the API with urllib3 (k8s_api.py; why not the official client: see there).

- Objects and annotations: k8s_objects.py (I2, I3). Member data is the `status` annotation of the pod named
  after the member; touch_member also sets the pod's role label from the member's role (I5) and the
  cluster's labels (labels + scope_label), so that the pod is found by the label selector.
- The lock (I4) has no TTL in the API: take_leader patches the leader object with the resourceVersion it
  observed, only when `leader` is empty or renewTime + ttl has passed; refresh_leader patches renewTime/ttl
  with the resourceVersion if we hold it; release clears `leader`. A 409 means a concurrent update: the
  object is read again and the decision made again (lost race -> False). In Endpoints mode the leader's
  subsets are written in the same update (I1, I6), emptied on release, and the headless service
  `<scope>-config` is created once (I7; 403 ignored).
- Versions are resourceVersions as integers: of the object holding the key, or of the pod for a member.
- Reads: LIST+WATCH of the cluster's Endpoints/ConfigMaps and of its pods (label selector) into caches,
  one thread each (k8s_cache.py); load() serves them and raises DCSUnavailable while either is not current.
  A thread also calls on_change when the lock's renewTime + ttl passes, since no event marks an expiry.
- close() removes the `status` annotation this backend wrote on its pod (the node is gone: B27); a pod that
  dies takes its member with it.
- Every call honours `timeout`, retrying connection failures and retriable_http_codes/Retry-After (I9).
- bypass_api_service is accepted but not implemented: the configured API address is always used.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.config import NodeConfig
from shared.dcs.base import Backend, DCSUnavailable, OnChange, Snapshot
from shared.dcs.k8s_api import ApiError, K8sClient, load_api_config
from shared.dcs.k8s_cache import ObjectCache
from shared.dcs.k8s_objects import (
    K8sSettings,
    ObjectNames,
    annotations_of,
    cluster_keys,
    delete_annotations,
    iso,
    leader_subsets,
    lock_expiry,
    lock_holder,
    resource_version,
    role_labels,
    take_annotations,
    ttl_text,
    write_annotations,
)

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
MAX_ATTEMPTS = 5  # reads and decisions again after a 409, while time remains
CLOSE_TIMEOUT_S = 1.0
Obj = dict[str, Any]


class KubernetesBackend(Backend):
    name = "kubernetes"

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        super().__init__(config, on_change)
        self.settings = K8sSettings.from_section(config.dcs)
        self.names = ObjectNames.for_scope(config.scope, self.settings.use_endpoints)
        self.client = K8sClient(load_api_config(config.dcs), self.settings.retriable_http_codes)
        base = f"/api/v1/namespaces/{self.settings.namespace}"
        self.kind_path = f"{base}/{'endpoints' if self.settings.use_endpoints else 'configmaps'}"
        self.pod_path = f"{base}/pods"
        self.labels = self.settings.selector_labels(config.scope)
        selector = ",".join(f"{k}={v}" for k, v in self.labels.items())
        self.objects = ObjectCache(self.client, self.kind_path, selector, self._notify, "kubernetes-objects")
        self.pods = ObjectCache(self.client, self.pod_path, selector, self._notify, "kubernetes-pods")
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._touched: str | None = None  # the pod whose status annotation this backend wrote
        self._service_done = not self.settings.use_endpoints
        self._waker = threading.Thread(target=self._wake_on_expiry, name="kubernetes-expiry", daemon=True)

    # --- lifecycle ---

    def start(self) -> None:
        self.objects.start()
        self.pods.start()
        self._waker.start()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
        self.objects.stop()
        self.pods.stop()
        if self._touched is not None:
            try:  # the node is going away: its member goes with it; the role label stays for the Service
                body = {"metadata": {"annotations": {"status": None}}}
                deadline = time.monotonic() + CLOSE_TIMEOUT_S
                self.client.request(
                    "PATCH", f"{self.pod_path}/{self._touched}", deadline, body, content_type=MERGE_PATCH
                )
            except (DCSUnavailable, ApiError) as exc:
                log.warning("kubernetes: could not clear the member data of pod %s: %s", self._touched, exc)
        self.client.close()

    def _notify(self) -> None:
        with self._lock:
            if not self._closed.is_set():
                self.on_change()

    def _wake_on_expiry(self) -> None:
        told: tuple[int, float] | None = None  # the lock record already announced as expired
        pause = 1.0
        while not self._closed.wait(pause):
            obj = self.objects.get(self.names.leader)
            ann = annotations_of(obj)
            expiry = lock_expiry(ann) if ann.get("leader") else None
            pause = 1.0
            if expiry is None:
                continue
            left = expiry - time.time()
            if left > 0:
                pause = min(1.0, left + 0.01)
            elif told != (resource_version(obj), expiry):
                told = (resource_version(obj), expiry)
                self._notify()

    def is_healthy(self) -> bool:
        return self.objects.ready and self.pods.ready and not self._closed.is_set()

    def load(self) -> Snapshot:
        if not self.is_healthy():
            raise DCSUnavailable("kubernetes: the view of the cluster is not current")
        keys = cluster_keys(self.objects.items(), self.pods.items().values(), self.names, time.time())
        return Snapshot(keys, max(self.objects.revision, self.pods.revision))

    # --- API calls that keep the caches current ---

    def _get(self, name: str, deadline: float) -> Obj | None:
        try:
            obj: Obj = self.client.request("GET", f"{self.kind_path}/{name}", deadline)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        self.objects.set(obj)
        return obj

    def _cached_or_get(self, name: str, deadline: float) -> tuple[Obj | None, bool]:
        """(object, fresh): from the cache when it is current, else read now."""
        if self.objects.ready:
            return self.objects.get(name), False
        return self._get(name, deadline), True

    def _patch(self, name: str, changes: dict[str, Any], deadline: float, rv: int | None = None, **extra: Any) -> Obj:
        meta: dict[str, Any] = {"annotations": changes}
        if rv is not None:
            meta["resourceVersion"] = str(rv)
        body = {"metadata": meta, **extra}
        obj: Obj = self.client.request("PATCH", f"{self.kind_path}/{name}", deadline, body, content_type=MERGE_PATCH)
        self.objects.set(obj)
        return obj

    def _create(self, name: str, changes: dict[str, Any], deadline: float, **extra: Any) -> Obj:
        values = {k: v for k, v in changes.items() if v is not None}
        body = {"metadata": {"name": name, "labels": self.labels, "annotations": values}, **extra}
        obj: Obj = self.client.request("POST", self.kind_path, deadline, body)
        self.objects.set(obj)
        return obj

    def _upsert(self, name: str, changes: dict[str, Any], deadline: float) -> Obj:
        for _ in range(MAX_ATTEMPTS):
            try:
                return self._patch(name, changes, deadline)
            except ApiError as exc:
                if exc.status != 404:
                    raise
            try:
                return self._create(name, changes, deadline)
            except ApiError as exc:
                if not exc.already_exists:
                    raise
        raise DCSUnavailable(f"kubernetes: {name} keeps appearing and disappearing")

    def _leader_extra(self, holding: bool) -> dict[str, Any]:
        if not self.settings.use_endpoints:
            return {}
        if not holding:
            return {"subsets": []}
        pod = self.pods.get(self.config.name)
        subsets = leader_subsets(self.settings, self.config.name, ((pod or {}).get("spec") or {}).get("nodeName"))
        return {} if subsets is None else {"subsets": subsets}

    def _cas(self, name: str, deadline: float, decide: Callable[[Obj | None, float], dict[str, Any] | None]) -> bool:
        """Optimistic concurrency on one object: `decide(observed, now)` returns the annotation changes (a
        `_extra` entry holds other fields) or None to give up; a 409 reads the object again and retries."""
        obj, fresh = self._cached_or_get(name, deadline)
        for _ in range(MAX_ATTEMPTS):
            changes = decide(obj, time.time())
            if changes is None:
                if fresh:
                    return False
                obj, fresh = self._get(name, deadline), True  # the cache may be behind: decide on a fresh read
                continue
            extra = changes.pop("_extra", {})
            try:
                if obj is None:
                    self._create(name, changes, deadline, **extra)
                else:
                    self._patch(name, changes, deadline, rv=resource_version(obj), **extra)
                return True
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
            obj, fresh = self._get(name, deadline), True
        return False

    # --- the contract ---

    def take_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        def decide(obj: Obj | None, now: float) -> dict[str, Any] | None:
            observed = None if obj is None else annotations_of(obj)
            if observed is not None and lock_holder(observed, now) is not None:
                return None
            return {**take_annotations(observed, name, ttl, now), "_extra": self._leader_extra(True)}

        return self._cas(self.names.leader, time.monotonic() + timeout, decide)

    def refresh_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        def decide(obj: Obj | None, now: float) -> dict[str, Any] | None:
            if obj is None or annotations_of(obj).get("leader") != name:
                return None
            return {"renewTime": iso(now), "ttl": ttl_text(ttl), "_extra": self._leader_extra(True)}

        return self._cas(self.names.leader, time.monotonic() + timeout, decide)

    def release_leader(self, name: str, *, timeout: float) -> bool:
        def decide(obj: Obj | None, now: float) -> dict[str, Any] | None:
            if obj is None or annotations_of(obj).get("leader") != name:
                return None
            return {"leader": None, "_extra": self._leader_extra(False)}

        return self._cas(self.names.leader, time.monotonic() + timeout, decide)

    def initialize(self, create_new: bool, sysid: str, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not create_new:
            self._upsert(self.names.config, {"initialize": sysid}, deadline)
            return True

        def decide(obj: Obj | None, now: float) -> dict[str, Any] | None:
            return None if "initialize" in annotations_of(obj) else {"initialize": sysid}

        return self._cas(self.names.config, deadline, decide)

    def cancel_initialization(self, *, timeout: float) -> bool:
        return self.delete("initialize", None, timeout=timeout)

    def touch_member(self, name: str, data_json: str, ttl: float, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            data = json.loads(data_json)
        except ValueError:
            data = {}
        holds = lock_holder(annotations_of(self.objects.get(self.names.leader)), time.time()) == name
        labels = {**self.labels, **role_labels(self.settings, data if isinstance(data, dict) else {}, holds)}
        pod = self.pods.get(name) if self.pods.ready else None  # unchanged and seen current: nothing to write
        current = ((pod or {}).get("metadata") or {}).get("labels") or {}
        if annotations_of(pod).get("status") == data_json and all(current.get(k) == v for k, v in labels.items()):
            self._touched = name
            return True
        body = {"metadata": {"labels": labels, "annotations": {"status": data_json}}}
        try:
            obj = self.client.request("PATCH", f"{self.pod_path}/{name}", deadline, body, content_type=MERGE_PATCH)
        except ApiError as exc:
            if exc.status == 404:
                log.error("kubernetes: there is no pod %s in namespace %s", name, self.settings.namespace)
                return False
            raise
        self.pods.set(obj)
        self._touched = name
        if not self._service_done:
            self._create_config_service(deadline)
        return True

    def _create_config_service(self, deadline: float) -> None:
        """I7: a headless service keeps the `<scope>-config` Endpoints from being removed."""
        body = {"metadata": {"name": self.names.config, "labels": self.labels}, "spec": {"clusterIP": "None"}}
        try:
            self.client.request("POST", f"/api/v1/namespaces/{self.settings.namespace}/services", deadline, body)
        except ApiError as exc:
            if exc.status not in (403, 409):
                log.warning("kubernetes: cannot create the service %s: %s", self.names.config, exc)
                return
        except DCSUnavailable as exc:
            log.warning("kubernetes: cannot create the service %s: %s", self.names.config, exc)
            return
        self._service_done = True

    def write(
        self, key: str, value: str, version: int | None, ttl: float | None, *, timeout: float
    ) -> tuple[bool, int | None]:
        """`ttl` is not used: only the lock expires, by its renewTime + ttl."""
        deadline, name, changes = time.monotonic() + timeout, self.names.holder(key), write_annotations(key, value)
        if version is None:
            obj = self._upsert(name, changes, deadline)
        else:
            try:
                obj = self._patch(name, changes, deadline, rv=version)
            except ApiError as exc:
                if exc.status in (404, 409):
                    return False, None
                raise
        return True, resource_version(obj)

    def delete(self, key: str, version: int | None, *, timeout: float) -> bool:
        """Remove the key's annotations, compared on the object's resourceVersion (`version`, else the one read)."""
        deadline, name, changes = time.monotonic() + timeout, self.names.holder(key), delete_annotations(key)
        for _ in range(MAX_ATTEMPTS):
            obj = self._get(name, deadline)
            if obj is None or not any(a in annotations_of(obj) for a in changes):
                return False
            if version is not None and resource_version(obj) != version:
                return False
            try:
                self._patch(name, dict(changes), deadline, rv=resource_version(obj))
                return True
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
            if version is not None:
                return False
        return False

    def delete_cluster(self, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for _, name in self.names.all():
            try:
                self.client.request("DELETE", f"{self.kind_path}/{name}", deadline)
            except ApiError as exc:
                if exc.status != 404:
                    raise
            self.objects.discard(name)
        for name, pod in self.pods.items().items():
            if "status" in annotations_of(pod):
                body = {"metadata": {"annotations": {"status": None}}}
                obj = self.client.request("PATCH", f"{self.pod_path}/{name}", deadline, body, content_type=MERGE_PATCH)
                self.pods.set(obj)
        return True
