"""The Linux watchdog device interface: open, set timeout, keepalive, magic close."""

from __future__ import annotations

import fcntl
import os
import struct

# ioctl numbers: _IOR('W', 5, int) and _IOWR('W', 6, int) on the common Linux ABI.
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707


class WatchdogError(Exception):
    pass


class Device:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self, timeout: int) -> int:
        """Open and set the timeout; returns the timeout the driver accepted."""
        try:
            self._fd = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            raise WatchdogError(f"cannot open {self.path}: {exc.strerror}")
        try:
            buf = bytearray(struct.pack("i", int(timeout)))
            fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, buf, True)
            return int(struct.unpack("i", buf)[0])
        except OSError as exc:
            self.close()
            raise WatchdogError(f"{self.path} refused timeout {timeout}: {exc.strerror}")

    def keepalive(self) -> None:
        if self._fd is None:
            raise WatchdogError("watchdog is not open")
        try:
            os.write(self._fd, b"1")
        except OSError as exc:
            raise WatchdogError(f"keepalive on {self.path} failed: {exc.strerror}")

    def close(self) -> None:
        """Magic close: writing 'V' before closing disarms drivers that support it."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, b"V")
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
