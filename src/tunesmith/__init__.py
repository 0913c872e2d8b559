"""tunesmith: fine-tune open language models on small, focused data, and prove they did not forget."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# Public name -> the module that defines it. Imported on first use (PEP 562), so that
# `import tunesmith` and `tunesmith --help` do not pay for torch and transformers.
_EXPORTS = {
    "CompareSettings": "settings", "ConfigError": "errors", "LoraConfig": "config", "RetrievalSettings": "settings",
    "TrainConfig": "config", "TunesmithError": "errors", "load_config": "config",
    "DataError": "data", "prepare_data": "data", "read_records": "data",
    "Retriever": "retrieval", "compare_run": "compare", "evaluate_run": "evaluate",
    "generate": "generate", "load_run": "generate", "TrainResult": "train", "train": "train",
    "CurveResult": "curve", "curve": "curve",
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


class _Package(types.ModuleType):
    """`tunesmith.generate` and `tunesmith.train` are functions although modules of those names exist."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing a submodule binds it on the package, over the function of the same name that
        # `from tunesmith import train` must give; the submodule is loaded by then, so take its function.
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
