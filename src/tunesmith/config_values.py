"""A config value from YAML or a flag, coerced to its field's type: the one rule every config section's
keys go through (config.py)."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from .errors import ConfigError


def coerce_value(value: Any, hint: Any, key: str, source: str) -> Any:
    """Accept what YAML gives (ints for floats, '1e-4' strings for floats); reject wrong types clearly."""
    if value is None:
        return None
    # Only unions are split into their members: get_args(list[str]) is (str,), not a choice of types.
    is_union = get_origin(hint) in (Union, types.UnionType)
    allowed = [a for a in get_args(hint) if a is not type(None)] if is_union else [hint]
    if (any(getattr(a, "__origin__", None) is Literal for a in allowed)
            or hint.__class__.__name__ == "_LiteralGenericAlias"):
        return value
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if kind is str and isinstance(value, str):
            return value
        if getattr(kind, "__origin__", None) is dict and isinstance(value, dict) \
                and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return dict(value)
        if getattr(kind, "__origin__", None) is list and isinstance(value, list):
            return value
    wanted = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
    raise ConfigError(f"{source}: config key '{key}' must be {wanted}, got {value!r}")
