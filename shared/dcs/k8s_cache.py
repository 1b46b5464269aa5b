"""LIST+WATCH of one kind of object into a local cache, in a thread (I8): the Kubernetes backend keeps two,
one of its Endpoints or ConfigMaps and one of the cluster's pods.

- LIST gives the objects and a resourceVersion; WATCH from it applies ADDED/MODIFIED/DELETED events.
  A stream that ends normally (timeoutSeconds) is opened again from the last resourceVersion; a 410 Gone
  (or an ERROR event carrying it) means a new LIST; any other trouble marks the cache not ready and a new
  LIST follows after 1 s.
- Writers put the object the API returned into the cache at once (`set`), and drop what they deleted
  (`discard`, leaving a tombstone), so a client reads its own writes; an object is only replaced by a newer
  resourceVersion, so a late watch event (or a LIST answered before the write) cannot undo one.
- `on_change()` is called after every change and whenever readiness changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.dcs.k8s_api import ApiError, K8sClient, WatchStream
from shared.dcs.k8s_objects import resource_version

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 10.0
WATCH_TIMEOUT_S = 10  # timeoutSeconds of a watch: a silently dead API is noticed within this plus the pad
WATCH_READ_PAD_S = 2.0
LIST_BACKOFF_S = 1.0


def name_of(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


class _Relist(Exception):
    pass


class ObjectCache:
    def __init__(self, client: K8sClient, path: str, selector: str, on_change: Callable[[], None], name: str) -> None:
        self.client = client
        self.path = path
        self.selector = selector
        self.on_change = on_change
        self.name = name
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._tombstones: dict[str, int] = {}  # name -> resourceVersion of what a writer deleted
        self._rv = 0
        self._ready = False
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None

    # --- readers and writers (any thread) ---

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def revision(self) -> int:
        return self._rv

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(name)

    def items(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._objects)

    def set(self, obj: dict[str, Any]) -> bool:
        rv, name = resource_version(obj), name_of(obj)
        with self._lock:
            if rv <= max(resource_version(self._objects.get(name)), self._tombstones.get(name, 0)):
                return False
            self._objects[name] = obj
            self._tombstones.pop(name, None)
            self._rv = max(self._rv, rv)
        self.on_change()
        return True

    def discard(self, name: str) -> None:
        """A writer deleted `name`: forget it, and ignore any older version of it seen later."""
        with self._lock:
            old = self._objects.pop(name, None)
            if old is not None:
                self._tombstones[name] = resource_version(old)
        if old is not None:
            self.on_change()

    def remove(self, name: str, rv: int) -> bool:
        with self._lock:
            self._tombstones.pop(name, None)
            old = self._objects.get(name)
            if old is None or resource_version(old) > rv:
                return False
            del self._objects[name]
            self._rv = max(self._rv, rv)
        self.on_change()
        return True

    # --- the thread ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(2.0)

    def _set_ready(self, ready: bool, why: str = "") -> None:
        if self._ready != ready:
            self._ready = ready
            if ready:
                log.info("%s: cache is current", self.name)
            else:
                log.warning("%s: cache is not current: %s", self.name, why)
            self.on_change()

    def _list(self) -> int:
        answer = self.client.request(
            "GET", self.path, time.monotonic() + LIST_TIMEOUT_S, params={"labelSelector": self.selector}
        )
        rv = int(answer["metadata"]["resourceVersion"])
        objects = {name_of(o): o for o in answer.get("items") or ()}
        with self._lock:  # what a writer set after this LIST was answered stays
            objects.update({n: o for n, o in self._objects.items() if resource_version(o) > rv})
            changed = objects != self._objects
            self._objects, self._rv = objects, max(self._rv, rv)
            self._tombstones = {n: v for n, v in self._tombstones.items() if v > rv}
        self._set_ready(True)
        if changed:
            self.on_change()
        return rv

    def _apply(self, event: dict[str, Any]) -> int:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            error = ApiError.from_status(int(obj.get("code") or 500), obj)
            if error.status == 410:
                raise _Relist(str(error))
            raise error
        rv = resource_version(obj)
        if kind in ("ADDED", "MODIFIED"):
            self.set(obj)
        elif kind == "DELETED":
            self.remove(name_of(obj), rv)
        return rv

    def _watch(self, rv: int) -> int:
        params = {"labelSelector": self.selector, "resourceVersion": str(rv), "timeoutSeconds": WATCH_TIMEOUT_S}
        stream = self.client.watch(self.path, params, WATCH_TIMEOUT_S + WATCH_READ_PAD_S)
        with self._lock:
            self._stream = stream
        try:
            if self._stop.is_set():
                return rv
            for event in stream.events():
                rv = max(rv, self._apply(event))
        finally:
            with self._lock:
                self._stream = None
            stream.close()
        return rv

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rv = self._list()
                while not self._stop.is_set():
                    rv = self._watch(rv)
            except _Relist as exc:
                log.info("%s: %s; listing again", self.name, exc)
            except Exception as exc:  # whatever it is, this thread must go on: the cache is just not current
                if self._stop.is_set():
                    return
                self._set_ready(False, f"{type(exc).__name__}: {exc}")
                self._stop.wait(LIST_BACKOFF_S)
