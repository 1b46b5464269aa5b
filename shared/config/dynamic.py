"""The effective dynamic configuration: the DCS /config (or bootstrap.dcs before initialization) over
defaults, with the timing values adjusted the way Patroni 3.2 adjusts them (A6)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.config import defaults
from shared.config.load import deep_merge
from shared.model.member import parse_bool, parse_int

_LEGACY = {"master_start_timeout": "primary_start_timeout", "master_stop_timeout": "primary_stop_timeout"}


@dataclass(frozen=True)
class DynamicConfig:
    ttl: int
    loop_wait: int
    retry_timeout: int
    maximum_lag_on_failover: int
    primary_start_timeout: int
    check_timeline: bool
    pause: bool
    synchronous_mode: bool | str
    failsafe_mode: bool
    data: Mapping[str, Any]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    source: Mapping[str, Any] = field(default_factory=dict)  # the /config (or bootstrap.dcs) value, as read

    @property
    def postgresql(self) -> Mapping[str, Any]:
        value = self.data.get("postgresql")
        return value if isinstance(value, Mapping) else {}


def adjust_timeouts(ttl: int, loop_wait: int, retry_timeout: int) -> tuple[int, int, int, list[str]]:
    """Raise values below their minimum, then enforce loop_wait + 2*retry_timeout <= ttl (A6)."""
    warnings: list[str] = []
    values = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout}
    for key, minimum in (
        ("loop_wait", defaults.MIN_LOOP_WAIT),
        ("retry_timeout", defaults.MIN_RETRY_TIMEOUT),
        ("ttl", defaults.MIN_TTL),
    ):
        if values[key] < minimum:
            warnings.append(f"{key}={values[key]} can't be smaller than {minimum}, adjusting...")
            values[key] = minimum
    ttl, loop_wait, retry_timeout = values["ttl"], values["loop_wait"], values["retry_timeout"]
    if defaults.MIN_LOOP_WAIT + 2 * retry_timeout > ttl:
        loop_wait, retry_timeout = defaults.MIN_LOOP_WAIT, (ttl - 1) // 2
        warnings.append(
            f'Violated the rule "loop_wait + 2*retry_timeout <= ttl", where ttl={ttl}. '
            f"Adjusting loop_wait from {values['loop_wait']} to {loop_wait} "
            f"and retry_timeout from {values['retry_timeout']} to {retry_timeout}"
        )
    elif loop_wait + 2 * retry_timeout > ttl:
        new_loop_wait = ttl - 2 * retry_timeout
        warnings.append(
            f'Violated the rule "loop_wait + 2*retry_timeout <= ttl", where ttl={ttl} and '
            f"retry_timeout={retry_timeout}. Adjusting loop_wait from {loop_wait} to {new_loop_wait}"
        )
        loop_wait = new_loop_wait
    return ttl, loop_wait, retry_timeout, warnings


def effective(dcs_config: Mapping[str, Any] | None, bootstrap_dcs: Mapping[str, Any]) -> DynamicConfig:
    """The DCS config when the cluster has one, else bootstrap.dcs; both over the defaults."""
    source = dict(dcs_config) if dcs_config is not None else dict(bootstrap_dcs)
    for old, new in _LEGACY.items():
        if old in source and new not in source:
            source[new] = source[old]
    data = deep_merge(defaults.DYNAMIC_DEFAULTS, source)

    def num(key: str) -> int:
        value = parse_int(data.get(key))
        return value if value is not None else int(defaults.DYNAMIC_DEFAULTS[key])

    ttl, loop_wait, retry_timeout, warnings = adjust_timeouts(num("ttl"), num("loop_wait"), num("retry_timeout"))
    data.update(ttl=ttl, loop_wait=loop_wait, retry_timeout=retry_timeout)
    sync = data.get("synchronous_mode")
    sync_mode: bool | str = "quorum" if sync == "quorum" else bool(parse_bool(sync))
    return DynamicConfig(
        ttl=ttl,
        loop_wait=loop_wait,
        retry_timeout=retry_timeout,
        maximum_lag_on_failover=num("maximum_lag_on_failover"),
        primary_start_timeout=num("primary_start_timeout"),
        check_timeline=bool(parse_bool(data.get("check_timeline"))),
        pause=bool(parse_bool(data.get("pause"))),
        synchronous_mode=sync_mode,
        failsafe_mode=bool(parse_bool(data.get("failsafe_mode"))),
        data=data,
        warnings=tuple(warnings),
        source=dict(dcs_config) if dcs_config is not None else dict(bootstrap_dcs),
    )
