"""Training and validation examples from the config's files: tokenized (through the cache) and split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .cache import tokenize_file
from .issues import DataError, DataIssue
from .records import Conversation, file_sha256
from .render import Example


@dataclass
class PreparedData:
    train: list[Example]
    val: list[Example]
    warnings: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)
    """SHA-256 of each input file, for the manifest and resume checks."""


@dataclass(frozen=True)
class QA:
    """A conversation as a question for generation: the turns before its last answer, and that answer."""

    messages: list[dict[str, str]]
    reference: str
    source: str


def answered_questions(records: list[Any]) -> list[QA]:
    """The conversations whose last turn is the assistant's, as (prompt turns, reference answer);
    raw text has no answers and is skipped."""
    out = []
    for record in records:
        if isinstance(record, Conversation) and record.messages[-1].role == "assistant":
            prompt = [{"role": m.role, "content": m.content} for m in record.messages[:-1]]
            out.append(QA(prompt, record.messages[-1].content, record.source))
    return out


def prepare_data(data: str, eval_data: str | None, tokenizer: Any, max_seq_tokens: int,
                 val_fraction: float, seed: int, use_cache: bool = True) -> PreparedData:
    """Training and validation examples from the config's files, split reproducibly by `seed`.

    Tokenized files come from the memory-mapped cache (data/cache.py) when it holds them."""
    sha = {str(data): file_sha256(data)}
    train, warnings = tokenize_file(data, sha[str(data)], tokenizer, max_seq_tokens, use_cache)
    warnings = list(warnings)
    if eval_data is not None:
        sha[str(eval_data)] = file_sha256(eval_data)
        val, more = tokenize_file(eval_data, sha[str(eval_data)], tokenizer, max_seq_tokens, use_cache)
        warnings += [f"eval: {w}" for w in more]
    else:
        if len(train) < 2:
            raise DataError([DataIssue(str(data), 0, "(file)", f"has {len(train)} usable example(s); a validation split "
                                       "needs at least 2 — add rows or pass an eval file")])
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_val = min(len(train) - 1, max(1, round(len(train) * val_fraction)))
        val_ids = set(order[:n_val])
        val = [e for i, e in enumerate(train) if i in val_ids]
        train = [e for i, e in enumerate(train) if i not in val_ids]
    if not train:
        raise DataError([DataIssue(str(data), 0, "(file)", "has no trainable examples")])
    if not val:
        raise DataError([DataIssue(str(eval_data or data), 0, "(file)", "has no usable validation examples")])
    return PreparedData(train=train, val=val, warnings=warnings, sha256=sha)
