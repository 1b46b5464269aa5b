"""The Linux watchdog device interface: open, identify, set timeout, keepalive, magic close.

The ioctl function is injectable so tests can play a device that refuses or rounds its timeout.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass

from services.watchdogd.ioctl import WATCHDOG_INFO_SIZE, WDIOF_MAGICCLOSE, WatchdogRequests, watchdog_requests

# ioctl(fd, request, buffer): fills `buffer` in place, raises OSError
Ioctl = Callable[[int, int, bytearray], object]


def _fcntl_ioctl(fd: int, request: int, buf: bytearray) -> object:
    return fcntl.ioctl(fd, request, buf, True)


class WatchdogError(Exception):
    pass


@dataclass(frozen=True)
class TimeoutResult:
    """What the device accepted: `timeout` is None when it could be neither set nor read."""

    requested: int
    timeout: int | None
    warning: str = ""

    @property
    def safe(self) -> bool:
        return self.timeout is not None and self.timeout <= self.requested


class Device:
    """One open watchdog device (or a test file standing in for one)."""

    def __init__(self, path: str, *, ioctl: Ioctl | None = None, requests: WatchdogRequests | None = None) -> None:
        self.path = path
        self._ioctl = ioctl or _fcntl_ioctl
        self._req = requests or watchdog_requests()
        self._fd: int | None = None
        self._write_keepalive = False  # the keepalive ioctl failed once: write instead
        self.identity: str | None = None
        self.options: int | None = None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open for writing (this starts a real watchdog) and read its identity when it tells."""
        flags = os.O_WRONLY
        try:
            if stat.S_ISFIFO(os.stat(self.path).st_mode):
                flags |= os.O_NONBLOCK  # a FIFO without a reader must fail, not hang the loop
            self._fd = os.open(self.path, flags)
        except OSError as exc:
            raise WatchdogError(exc.strerror or str(exc))
        self._write_keepalive = False
        buf = bytearray(WATCHDOG_INFO_SIZE)
        try:
            self._ioctl(self._fd, self._req.getsupport, buf)
        except OSError:
            self.identity, self.options = None, None
            return
        self.options = struct.unpack_from("I", buf, 0)[0]
        self.identity = bytes(buf[8:WATCHDOG_INFO_SIZE]).split(b"\0", 1)[0].decode("ascii", "replace")

    def _int_ioctl(self, request: int, value: int) -> int:
        assert self._fd is not None
        buf = bytearray(struct.pack("i", value))
        self._ioctl(self._fd, request, buf)
        return int(struct.unpack("i", buf)[0])

    def set_timeout(self, seconds: int) -> TimeoutResult:
        """WDIOC_SETTIMEOUT, then WDIOC_GETTIMEOUT for the timeout really in force."""
        if self._fd is None:
            raise WatchdogError("watchdog is not open")
        problems: list[str] = []
        timeout: int | None = None
        try:
            timeout = self._int_ioctl(self._req.settimeout, seconds)
        except OSError as exc:
            problems.append(f"cannot set the timeout of {self.path}: {exc.strerror or exc}")
        try:
            timeout = self._int_ioctl(self._req.gettimeout, 0)
        except OSError as exc:
            if timeout is None:
                problems.append(f"cannot read it: {exc.strerror or exc}")
        if timeout is None:
            return TimeoutResult(seconds, None, "; ".join(problems) + "; its timeout is unknown")
        if timeout > seconds:
            warning = f"watchdog timeout {timeout} s of {self.path} is longer than the requested {seconds} s: not safe"
            return TimeoutResult(seconds, timeout, warning)
        return TimeoutResult(seconds, timeout, "; ".join(problems))

    def keepalive(self) -> None:
        """WDIOC_KEEPALIVE; a device without it (or a test file) gets a write instead."""
        if self._fd is None:
            raise WatchdogError("watchdog is not open")
        if not self._write_keepalive:
            try:
                self._int_ioctl(self._req.keepalive, 0)
                return
            except OSError:
                self._write_keepalive = True
        try:
            os.write(self._fd, b"1")
        except OSError as exc:
            raise WatchdogError(f"keepalive on {self.path} failed: {exc.strerror or exc}")

    @property
    def has_magic_close(self) -> bool | None:
        return None if self.options is None else bool(self.options & WDIOF_MAGICCLOSE)

    def close(self) -> None:
        """Magic close: writing 'V' before closing stops drivers that support it."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, b"V")
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
