"""A YAML config file read as plain data, and a config error placed at the line of the key it names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Collection

import yaml

from .errors import ConfigError

NAMED_KEY = re.compile(r"config key '([\w.]+)'")
"""How `errors.require` names the key of a value it refuses."""


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping as plain data; bad YAML is a ConfigError naming the line."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def key_line(path: Path, key: str) -> int | None:
    """The line (from 1) where a dotted key such as `retrieval.top_k` is written in a YAML file, or None."""
    node: Any = yaml.compose(path.read_text(encoding="utf-8"))
    line = None
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        found = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        if found is None:
            return None
        line, node = found[0].start_mark.line + 1, found[1]
    return line


def placed(error: ConfigError, path: Path, overridden: Collection[str]) -> ConfigError:
    """`error` naming the config file and the line of the key it names, as `FILE:LINE: ...`; unchanged
    when it names the file already or its key was set on the command line (`overridden`)."""
    message = str(error)
    named = NAMED_KEY.search(message)
    if message.startswith(str(path)) or (named and named.group(1).split(".")[0] in overridden):
        return error
    line = key_line(path, named.group(1)) if named else None
    return ConfigError(f"{path}:{line}: {message}" if line else f"{path}: {message}")
