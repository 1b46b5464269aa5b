"""Figures, targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Stat = Literal["min", "median", "max"]

# the scenarios in the order they are printed (and the names --only accepts)
SCENARIOS = ("bootstrap", "switchover", "failover", "soak", "health", "footprint")


@dataclass(frozen=True)
class Target:
    """A bound on one statistic of a metric: e.g. Target("median", "<=", 6.5)."""

    stat: Stat
    op: Literal["<=", ">="]
    bound: float

    def text(self) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        return f"{self.stat} {sign} {_fmt(self.bound)}"

    def met(self, values: list[float]) -> bool | None:
        if not values:
            return None
        value = summary(values)[self.stat]
        return value <= self.bound if self.op == "<=" else value >= self.bound


def summary(values: list[float]) -> dict[Stat, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


@dataclass
class Metric:
    scenario: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: Target | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.scenario}: {self.name}"

    def add(self, value: float | None) -> None:
        if value is not None and not math.isnan(value):
            self.values.append(float(value))

    def ok(self) -> bool | None:
        return self.target.met(self.values) if self.target is not None else None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "scenario": self.scenario,
            "metric": self.name,
            "unit": self.unit,
            "values": self.values,
            "n": len(self.values),
        }
        if self.values:
            body.update({str(k): v for k, v in summary(self.values).items()})
        if self.target is not None:
            body["target"] = {"stat": self.target.stat, "op": self.target.op, "bound": self.target.bound}
            body["ok"] = self.ok()
        if self.note:
            body["note"] = self.note
        return body


class Results:
    """The metrics of one flavour (haven or Patroni), in the order they were first recorded, plus errors."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.metrics: dict[str, Metric] = {}
        self.errors: dict[str, str] = {}
        self.details: dict[str, Any] = {}

    def metric(self, scenario: str, name: str, unit: str, target: Target | None = None, note: str = "") -> Metric:
        key = f"{scenario}: {name}"
        if key not in self.metrics:
            self.metrics[key] = Metric(scenario, name, unit, target=target, note=note)
        return self.metrics[key]

    def ordered(self) -> list[Metric]:
        rank = {name: i for i, name in enumerate(SCENARIOS)}
        return sorted(self.metrics.values(), key=lambda m: rank.get(m.scenario, len(rank)))

    def as_json(self) -> dict[str, Any]:
        return {
            "flavour": self.flavour,
            "metrics": [m.as_json() for m in self.ordered()],
            "errors": self.errors,
            "details": self.details,
        }


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude == 0 or magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _render(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def table(results: Results) -> str:
    header = ["scenario", "metric", "min", "median", "max", "unit", "target", "ok?"]
    rows: list[list[str]] = []
    for m in results.ordered():
        s = summary(m.values) if m.values else None
        ok = m.ok()
        rows.append(
            [
                m.scenario,
                m.name,
                _fmt(s["min"]) if s else "-",
                _fmt(s["median"]) if s else "-",
                _fmt(s["max"]) if s else "-",
                m.unit,
                m.target.text() if m.target else "",
                "" if m.target is None else ("n/a" if ok is None else ("yes" if ok else "NO")),
            ]
        )
    for scenario, error in results.errors.items():
        rows.append([scenario, f"ERROR: {error.splitlines()[0][:100]}", "-", "-", "-", "", "", "n/a"])
    return _render(header, rows, right={2, 3, 4})


def ratios(haven: Results, patroni: Results) -> list[dict[str, Any]]:
    out = []
    for key, m in haven.metrics.items():
        other = patroni.metrics.get(key)
        if other is None or not m.values or not other.values:
            continue
        h, p = statistics.median(m.values), statistics.median(other.values)
        out.append(
            {
                "scenario": m.scenario,
                "metric": m.name,
                "unit": m.unit,
                "haven_median": h,
                "patroni_median": p,
                "ratio": h / p if p else None,
            }
        )
    return out


def ratio_table(rows: list[dict[str, Any]]) -> str:
    header = ["scenario", "metric", "haven", "Patroni", "unit", "haven/Patroni"]
    body = [
        [
            r["scenario"],
            r["metric"],
            _fmt(r["haven_median"]),
            _fmt(r["patroni_median"]),
            r["unit"],
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
        ]
        for r in rows
    ]
    return _render(header, body, right={2, 3, 5})


def write_json(path: Path, meta: dict[str, Any], runs: list[Results], ratio_rows: list[dict[str, Any]] | None) -> None:
    body: dict[str, Any] = {"meta": meta, "results": {r.flavour: r.as_json() for r in runs}}
    if ratio_rows is not None:
        body["ratios_haven_over_patroni"] = ratio_rows
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, default=str) + "\n")
    tmp.replace(path)
