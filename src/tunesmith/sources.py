"""What a command's SOURCE argument names: a CONFIG.yaml, or a data file or folder to train on with
every other setting at its default. One rule for train, plan, data check, curve and tune."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig, load_config


def is_config_file(source: str | Path) -> bool:
    """SOURCE is a CONFIG.yaml (by its suffix, .yaml or .yml), not data."""
    return Path(source).suffix.lower() in (".yaml", ".yml")


def load_source(source: str | Path, flags: dict[str, Any]) -> TrainConfig:
    """The config of SOURCE with the command's flags over it."""
    if is_config_file(source):
        return load_config(source, flags)
    return load_config(None, {**flags, "data": str(source)})
