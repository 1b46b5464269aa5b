"""Configuration: Patroni's YAML keys, PATRONI_* overrides, defaults and validation."""

from shared.config.dynamic import DynamicConfig, effective
from shared.config.load import ConfigError, NodeConfig, deep_merge
from shared.config.schema import validate_dynamic, validate_node
from shared.config.validation import Problem

__all__ = [
    "ConfigError",
    "DynamicConfig",
    "NodeConfig",
    "Problem",
    "deep_merge",
    "effective",
    "validate_dynamic",
    "validate_node",
]
