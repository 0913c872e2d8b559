"""The base model beside a tuned one: how to enter it (adapters disabled, or a frozen copy), and the
cache of its results, which depend on nothing a run trains (forgetting probes, eval, compare)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from ..config import cache_dir
from ..files import write_atomic
from .tokenizer import resolve_model_path

CACHE_VERSION = 1
"""Bump when how a base result is computed changes (a probe's scoring, eval's or compare's answers), so
old cached base results are not reused."""

BaseView = Callable[[], contextlib.AbstractContextManager]
"""A zero-argument factory whose context yields the base model (see `base_view`)."""


@contextlib.contextmanager
def _adapters_disabled(model: Any):
    with model.disable_adapter():
        yield model


def base_view(model: Any, base_model: Any | None = None) -> BaseView:
    """How to reach the base model: a frozen copy when given (full fine-tuning; the caller puts
    it in eval mode), else the same model with its peft adapters disabled (no second copy)."""
    if base_model is not None:
        return lambda: contextlib.nullcontext(base_model)
    if not hasattr(model, "disable_adapter"):
        raise TypeError("the base model is needed: pass base_model= for a model without peft adapters")
    return lambda: _adapters_disabled(model)


def model_fingerprint(model_name: str) -> str:
    """The base model's identity for the cache: its config and its weight files' names, sizes and
    modification times (hashing 500 MB of weights on every eval would cost more than it saves)."""
    path = Path(resolve_model_path(model_name))
    parts = [model_name]
    if path.is_dir():
        config = path / "config.json"
        parts.append(config.read_text(encoding="utf-8") if config.exists() else "")
        for weights in sorted(path.glob("*.safetensors")):
            stat = weights.stat()
            parts.append(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _cache_path(model_name: str, tokenizer: Any, fingerprint: str) -> Path:
    # The chat template shapes the KL prompts, and a run may override it: it is part of the key.
    template = hashlib.sha256(str(getattr(tokenizer, "chat_template", "")).encode()).hexdigest()[:8]
    return cache_dir() / "probes" / f"v{CACHE_VERSION}-{model_fingerprint(model_name)}-{template}-{fingerprint}.json"


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data))


def cached_base(model_name: str, tokenizer: Any, fingerprint: str, compute: Callable[[], dict[str, Any]],
                use_cache: bool = True) -> tuple[dict[str, Any], bool]:
    """(the base model's results, whether they came from the cache): `compute()`'s JSON-able dict,
    read from the cache entry of (base model, chat template, `fingerprint`) when it holds one, else
    computed and written there. The base side of a measurement depends on nothing a run trains."""
    path = _cache_path(model_name, tokenizer, fingerprint)
    cached = _read_cache(path) if use_cache else None
    if cached is not None:
        return cached, True
    values = compute()
    if use_cache:
        _write_cache(path, values)
    return values, False
