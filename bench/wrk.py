"""wrk runs and the parsing of their `--latency` report."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


class WrkMissing(RuntimeError):
    pass


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing(
            "wrk is missing: run `make bench` (scripts/setup.sh --bench installs it) or apt-get install wrk"
        )
    return found


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    non_2xx: int
    socket_errors: int
    output: str


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse(output: str) -> WrkResult:
    """Requests/sec, the 50 % and 99 % latencies of the Latency Distribution, non-2xx and socket errors."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M))
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=_duration_ms(percentiles["50"]) if "50" in percentiles else None,
        p99_ms=_duration_ms(percentiles["99"]) if "99" in percentiles else None,
        requests=int(total.group(1)) if total else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        output=output,
    )


def run(url: str, seconds: int = 10, threads: int = 2, connections: int = 16) -> WrkResult:
    """`wrk -t2 -c16 -dNs --latency URL`, parsed. Only loopback URLs are measured."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"refusing to load a non-loopback URL: {url}")
    cmd = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "--latency", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse(done.stdout)
