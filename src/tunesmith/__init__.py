"""tunesmith: fine-tune open language models on small, focused data, and prove they did not forget."""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Imported on first use (PEP 562), so that
# `import tunesmith` and `tunesmith --help` do not pay for torch and transformers.
_EXPORTS = {
    "CompareSettings": "settings", "ConfigError": "errors", "LoraConfig": "config", "RetrievalSettings": "settings",
    "TrainConfig": "config", "TunesmithError": "errors", "load_config": "config",
    "DataError": "data", "prepare_data": "data", "read_records": "data",
    "Retriever": "retrieval", "compare_run": "commands.compare", "evaluate_run": "commands.evaluate",
    "generate": "commands.generate", "load_run": "run", "TrainResult": "commands.train_result",
    "train": "commands.train", "CurveResult": "commands.curve", "curve": "commands.curve",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tunesmith' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return [*__all__, "__version__"]

