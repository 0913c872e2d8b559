"""Tokenized files cached on disk and memory-mapped: a file (or folder) is tokenized once per content,
tokenizer, chat template, `max_seq_tokens`, column mapping and system prompt, and a data check that
passed is not repeated.

An entry is a folder `tokens/v<version>-<file sha>-<path and rendering hash>-<tokenizer fingerprint>-<max_seq_tokens>/`
under tunesmith's cache: `input_ids.npy` and `targets.npy` (int32, every example end to end),
`offsets.npy` (int64, example i is [offsets[i], offsets[i+1])) and `meta.json` (sources, documents
and warnings). Entries are built in a temporary folder and renamed into place, so a crash leaves none
half-written; a damaged entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..config import cache_dir
from .columns import ColumnMap
from .records import file_sha256, read_data, resolve_data_path
from .render import Example, tokenize_records

CACHE_VERSION = 2
"""Bump when rendering changes what a row tokenizes to, so old entries are not reused."""


def tokens_dir() -> Path:
    return cache_dir() / "tokens"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The tokenizer's identity: its full serialized form (vocabulary, merges, normalizers) where
    it has one, its special tokens and its chat template (a run may override the template)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([str(getattr(tokenizer, "chat_template", "")), tokenizer.eos_token_id, tokenizer.pad_token_id,
                        tokenizer.bos_token_id])
    return hashlib.sha256((body + extra).encode()).hexdigest()[:16]


def entry_path(path: str | Path, file_sha: str, tokenizer: Any, max_seq_tokens: int, *,
               columns: ColumnMap | None = None, system_prompt: str | None = None) -> Path:
    # The path is part of the key because examples and warnings name their rows as path:line; the
    # mapping and the system prompt because they change what a row renders to.
    where = hashlib.sha256(json.dumps([str(path), sorted((columns or {}).items()), system_prompt or None])
                           .encode()).hexdigest()[:8]
    return tokens_dir() / (f"v{CACHE_VERSION}-{file_sha[:16]}-{where}-{tokenizer_fingerprint(tokenizer)}"
                           f"-{max_seq_tokens}")


def _read_entry(entry: Path) -> tuple[list[Example], list[str]] | None:
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        input_ids = np.load(entry / "input_ids.npy", mmap_mode="r", allow_pickle=False)  # (total tokens,)
        targets = np.load(entry / "targets.npy", mmap_mode="r", allow_pickle=False)  # (total tokens,)
        offsets = np.load(entry / "offsets.npy", allow_pickle=False)  # (n_examples + 1,)
        sources, documents = meta["sources"], meta["documents"]
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    if (len(offsets) != len(sources) + 1 or offsets[-1] != len(input_ids) or len(targets) != len(input_ids)
            or len(documents) != len(sources)):
        return None
    examples = [Example(input_ids[a:b], targets[a:b], source, document)
                for a, b, source, document in zip(offsets[:-1].tolist(), offsets[1:].tolist(), sources, documents)]
    return examples, meta["warnings"]


def _write_entry(entry: Path, examples: list[Example], warnings: list[str]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        lengths = [len(e.input_ids) for e in examples]
        np.save(staging / "offsets.npy", np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64))
        for name in ("input_ids", "targets"):
            parts = [np.asarray(getattr(e, name), dtype=np.int32) for e in examples]
            np.save(staging / f"{name}.npy", np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32))
        (staging / "meta.json").write_text(json.dumps({"sources": [e.source for e in examples],
                                                               "documents": [e.document for e in examples],
                                                               "warnings": warnings}),
                                           encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)  # a damaged entry, or none
        os.replace(staging, entry)
    except OSError:
        pass  # another process won the race, or the cache is read-only: the examples are still good
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def tokenize_file(path: str | Path, file_sha: str, tokenizer: Any, max_seq_tokens: int,
                  use_cache: bool = True, *, columns: ColumnMap | None = None,
                  system_prompt: str | None = None) -> tuple[list[Example], list[str]]:
    """(examples, warnings) of one data file or folder, from the cache when it holds them."""
    entry = entry_path(path, file_sha, tokenizer, max_seq_tokens, columns=columns, system_prompt=system_prompt)
    if use_cache and (cached := _read_entry(entry)) is not None:
        return cached
    read = read_data(path, columns=columns, system_prompt=system_prompt)
    examples, warnings = tokenize_records(read.records, tokenizer, max_seq_tokens)
    warnings = [str(note) for note in read.notes] + warnings
    if use_cache:
        _write_entry(entry, examples, warnings)
        if (cached := _read_entry(entry)) is not None:  # memory-mapped: the lists can go
            return cached
    return examples, warnings


def _check_marker(data: str | Path, eval_data: str | Path | None, tokenizer: Any, max_seq_tokens: int,
                  settings: dict[str, Any]) -> Path:
    # The check of a train file depends on the eval file too (leakage between them), and its
    # warnings name both by path; `settings` (mapping, system prompt, val_fraction) change its findings.
    files = [(str(f), file_sha256(f)) for f in (data, eval_data) if f is not None]
    key = hashlib.sha256(json.dumps([files, tokenizer_fingerprint(tokenizer), max_seq_tokens, settings],
                                    sort_keys=True).encode()).hexdigest()
    return tokens_dir() / "checks" / f"v{CACHE_VERSION}-{key[:24]}.json"


def _named_paths(data: str | Path, eval_data: str | Path | None) -> list[tuple[str, str]]:
    """(placeholder, the path the check prints) for each input. A marker is keyed by content, not by
    where the file lies (a `pkg:` file is elsewhere in every clone), so its warnings are stored with
    placeholders and read back with this run's paths, never another checkout's."""
    named = [("\x00data\x00", str(resolve_data_path(data)))]
    if eval_data is not None:
        named.append(("\x00eval\x00", str(resolve_data_path(eval_data))))
    return sorted(named, key=lambda pair: -len(pair[1]))  # a path inside another is replaced after it


def _settings(columns: ColumnMap | None, system_prompt: str | None, val_fraction: float | None) -> dict[str, Any]:
    return {"columns": dict(columns or {}), "system_prompt": system_prompt or None, "val_fraction": val_fraction}


def passed_check(data: str | Path, eval_data: str | Path | None, tokenizer: Any, max_seq_tokens: int, *,
                 columns: ColumnMap | None = None, system_prompt: str | None = None,
                 val_fraction: float | None = None) -> list[str] | None:
    """The warning lines of an earlier data check that passed on exactly these inputs, or None."""
    marker = _check_marker(data, eval_data, tokenizer, max_seq_tokens, _settings(columns, system_prompt, val_fraction))
    try:
        lines = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no marker, a damaged one, or an unreadable file: the check will say
        return None
    for name, path in _named_paths(data, eval_data):
        lines = [line.replace(name, path) for line in lines]
    return lines


def record_check(data: str | Path, eval_data: str | Path | None, tokenizer: Any, max_seq_tokens: int,
                 warning_lines: list[str], *, columns: ColumnMap | None = None, system_prompt: str | None = None,
                 val_fraction: float | None = None) -> None:
    """Remember that the check passed on these inputs, with the warnings it printed."""
    from ..files import write_atomic

    marker = _check_marker(data, eval_data, tokenizer, max_seq_tokens, _settings(columns, system_prompt, val_fraction))
    for name, path in _named_paths(data, eval_data):
        warning_lines = [line.replace(path, name) for line in warning_lines]
    try:
        write_atomic(marker, json.dumps(warning_lines))
    except OSError:
        pass  # a read-only cache: the check simply runs again next time
