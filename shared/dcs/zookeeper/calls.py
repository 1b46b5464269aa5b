"""One request to ZooKeeper within the caller's deadline: sent only while connected, retried while it was not
sent, DCSUnavailable when its outcome is unknown; each write is read back into the cache before it returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError, NotEmptyError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import ACL

from shared.dcs.base import DCSUnavailable
from shared.dcs.zookeeper.cache import ZooKeeperCache
from shared.dcs.zookeeper.session import NotSent, Session, time_left

RETRY_PAUSE_S = 0.05


class ZooKeeperCalls(ZooKeeperCache):
    """ZooKeeperBackend's requests: create, set, get and delete one znode, delete a subtree."""

    _acl: list[ACL] | None  # set by ZooKeeperBackend.__init__

    def _connected(self, deadline: float) -> Session:
        while True:
            if self._closed:
                raise DCSUnavailable(f"{self.name}: the backend is closed")
            session, left = self._session, deadline - time.monotonic()
            if left <= 0:
                raise DCSUnavailable(f"{self.name}: not connected to {','.join(self._hosts) or 'ZooKeeper'} in time")
            if session is not None and session.live.is_set():
                return session
            if session is None:
                time.sleep(min(left, RETRY_PAUSE_S))
            else:
                session.live.wait(min(left, RETRY_PAUSE_S))

    def _run(
        self, deadline: float, what: str, call: Callable[[Any], Any], expect: tuple[type[Exception], ...] = ()
    ) -> Any:
        """One request within the time left. `expect`ed errors are answers; the others are DCSUnavailable."""
        while True:
            session = self._connected(deadline)
            try:
                return call(session.client).get(timeout=time_left(deadline))
            except NotSent:
                time.sleep(RETRY_PAUSE_S)  # never sent: safe to send again once connected
            except expect:
                raise
            except KazooTimeoutError:
                raise DCSUnavailable(f"{self.name}: no answer to {what} in time; its outcome is unknown")
            except KazooException as exc:
                raise DCSUnavailable(f"{self.name}: {what} failed ({type(exc).__name__}); its outcome is unknown")

    @staticmethod
    def _deadline(timeout: float) -> float:
        return time.monotonic() + max(0.0, float(timeout))

    def _create(self, path: str, data: bytes, deadline: float, ephemeral: bool = False) -> Any:
        """The new znode's stat, or None when it exists. Missing parents are created (persistent)."""
        try:
            _, stat = self._run(
                deadline,
                f"create {path}",
                lambda c: c.create_async(
                    path, data, acl=self._acl, ephemeral=ephemeral, makepath=True, include_data=True
                ),
                (NodeExistsError,),
            )
        except NodeExistsError:
            return None
        self._sync_now(path, deadline)
        return stat

    def _set(self, path: str, data: bytes, version: int, deadline: float) -> Any:
        expect = (BadVersionError, NoNodeError)
        stat = self._run(deadline, f"set {path}", lambda c: c.set_async(path, data, version), expect)
        self._sync_now(path, deadline)
        return stat

    def _get(self, path: str, deadline: float) -> tuple[bytes, Any] | None:
        try:
            data, stat = self._run(deadline, f"get {path}", lambda c: c.get_async(path), (NoNodeError,))
        except NoNodeError:
            return None
        return data or b"", stat

    def _delete(self, path: str, version: int, deadline: float) -> bool:
        expect = (NoNodeError, BadVersionError, NotEmptyError)
        try:
            self._run(deadline, f"delete {path}", lambda c: c.delete_async(path, version), expect)
        except expect:
            return False
        self._sync_now(path, deadline)
        return True

    def _put(self, path: str, value: str, version: int | None, deadline: float) -> int | None:
        """Set (with `version`: compare-and-set); without a version, create the znode when it is missing."""
        data = value.encode()
        while True:
            try:
                return int(self._set(path, data, -1 if version is None else version, deadline).version)
            except BadVersionError:
                return None
            except NoNodeError:
                if version is not None:
                    return None
            stat = self._create(path, data, deadline)
            if stat is not None:
                return int(stat.version)

    def _delete_tree(self, path: str, deadline: float) -> None:
        expect = (NoNodeError, NotEmptyError)
        while True:
            try:
                children = self._run(deadline, f"list {path}", lambda c: c.get_children_async(path), expect)
                for child in children:
                    self._delete_tree(f"{path}/{child}", deadline)
                self._run(deadline, f"delete {path}", lambda c: c.delete_async(path), expect)
                return
            except NoNodeError:
                return
            except NotEmptyError:
                continue  # a child appeared meanwhile (a member touching its key)
