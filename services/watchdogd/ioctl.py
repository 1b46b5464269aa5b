"""Linux watchdog ioctl request numbers, computed with the running architecture's _IOC layout (C89)."""

from __future__ import annotations

import platform
from dataclasses import dataclass

WATCHDOG_IOCTL_BASE = ord("W")
INT_SIZE = 4
WATCHDOG_INFO_SIZE = 40  # struct watchdog_info: u32 options, u32 firmware_version, u8 identity[32]

# struct watchdog_info.options bits
WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_KEEPALIVEPING = 0x8000


@dataclass(frozen=True)
class IocLayout:
    """How an architecture packs direction, size, type and number into an ioctl request."""

    none: int
    write: int
    read: int
    size_bits: int

    @property
    def dir_shift(self) -> int:
        return 16 + self.size_bits  # nr (8 bits) and type (8 bits) come first, then size

    def ioc(self, direction: int, kind: int, nr: int, size: int) -> int:
        if size >= 1 << self.size_bits:
            raise ValueError(f"ioctl argument size {size} does not fit in {self.size_bits} bits")
        return (direction << self.dir_shift) | (size << 16) | (kind << 8) | nr


GENERIC = IocLayout(none=0, write=1, read=2, size_bits=14)  # x86, arm, arm64, riscv, s390, ...
ALTERNATE = IocLayout(none=1, write=4, read=2, size_bits=13)  # powerpc, mips, sparc, alpha

_ALTERNATE_PREFIXES = ("ppc", "powerpc", "mips", "sparc", "alpha")


def layout_for(machine: str) -> IocLayout:
    """The _IOC layout for a platform.machine() string."""
    return ALTERNATE if machine.lower().startswith(_ALTERNATE_PREFIXES) else GENERIC


@dataclass(frozen=True)
class WatchdogRequests:
    getsupport: int
    keepalive: int
    settimeout: int
    gettimeout: int


def watchdog_requests(machine: str | None = None) -> WatchdogRequests:
    """WDIOC_* numbers for `machine` (default: this host)."""
    lay = layout_for(machine if machine is not None else platform.machine())
    rd, rw = lay.read, lay.read | lay.write
    return WatchdogRequests(
        getsupport=lay.ioc(rd, WATCHDOG_IOCTL_BASE, 0, WATCHDOG_INFO_SIZE),
        keepalive=lay.ioc(rd, WATCHDOG_IOCTL_BASE, 5, INT_SIZE),
        settimeout=lay.ioc(rw, WATCHDOG_IOCTL_BASE, 6, INT_SIZE),
        gettimeout=lay.ioc(rd, WATCHDOG_IOCTL_BASE, 7, INT_SIZE),
    )
