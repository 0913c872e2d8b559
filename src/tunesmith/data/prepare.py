"""Training and validation examples from the config's files: tokenized (through the cache) and split."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .cache import tokenize_file
from .columns import ColumnMap
from .issues import DataError, DataIssue
from .limits import CheckLimits
from .records import Conversation, file_sha256, read_records, read_system_prompt
from .render import Example


@dataclass
class PreparedData:
    train: list[Example]
    val: list[Example]
    warnings: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)
    """SHA-256 of each input file (or folder), for the manifest and resume checks."""
    held_out_documents: list[str] = field(default_factory=list)
    """The .txt/.md files held out whole for validation, when the data has several; sorted."""
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Objective grpo: each prompt's row by its source (file:line), as the grader reads it (`item`)."""


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


def held_out_questions(config: Any, val_sources: set[str], data_file: str | None = None,
                       options: dict[str, Any] | None = None) -> list[QA]:
    """The answered questions among a run's held-out rows (`val_sources`: its validation examples'
    sources), read as training read them: from the config's eval file, else its data file, or from
    `data_file` read with `options` where training read another file (a RAFT run's prompts). Eval
    answers them against their references; compare asks them as the questions training never saw."""
    records = read_records(data_file or config.eval or config.data, **(options or data_options(config)))
    return [q for q in answered_questions(records) if q.source in val_sources]


def data_options(config: Any) -> dict[str, Any]:
    """How a run's config says to read its files (`columns`, `system_prompt` read from its file),
    as the keyword arguments of `read_records`, `prepare_data` and `check_files`: every command that
    reads a run's data reads it the same way."""
    return {"columns": config.columns, "system_prompt": read_system_prompt(config.system_prompt)}


def prepare_data(data: str, eval_data: str | None, tokenizer: Any, max_seq_tokens: int,
                 val_fraction: float, seed: int, use_cache: bool = True, *, columns: ColumnMap | None = None,
                 system_prompt: str | None = None, train_fraction: float = 1.0) -> PreparedData:
    """Training and validation examples from the config's files (or folders), split reproducibly by
    `seed`; `columns` and `system_prompt` as in `read_records`; `train_fraction` keeps a seeded,
    nested share of the training split (`training_subset`), the validation split untouched.

    Tokenized files come from the memory-mapped cache (data/cache.py) when it holds them."""
    render = {"columns": columns, "system_prompt": system_prompt}
    sha = {str(data): file_sha256(data)}
    train, warnings = tokenize_file(data, sha[str(data)], tokenizer, max_seq_tokens, use_cache, **render)
    warnings = list(warnings)
    held_out: list[str] = []
    if eval_data is not None:
        sha[str(eval_data)] = file_sha256(eval_data)
        val, more = tokenize_file(eval_data, sha[str(eval_data)], tokenizer, max_seq_tokens, use_cache, **render)
        warnings += [f"eval: {w}" for w in more]
    else:
        train, val, held_out = split_examples(train, val_fraction, seed, str(data))
        if held_out:
            warnings.append(f"held out for validation, whole: {len(held_out)} document(s): {', '.join(held_out)}")
    train = training_subset(train, train_fraction, seed)
    if not train:
        raise DataError([DataIssue(str(data), 0, "(file)", "has no trainable examples")])
    if not val:
        raise DataError([DataIssue(str(eval_data or data), 0, "(file)", "has no usable validation examples")])
    small = small_data_warnings(len(train), len(val), None if eval_data is not None else val_fraction)
    warnings += [f"small data: {message}" for message in small if message]
    return PreparedData(train=train, val=val, warnings=warnings, sha256=sha, held_out_documents=held_out)


def training_subset(train: list[Example], fraction: float, seed: int) -> list[Example]:
    """A seeded `fraction` of the training examples (at least one), in their file order. Every
    fraction takes a prefix of the same seeded permutation, so with one seed the smaller subsets are
    inside the larger ones: a learning curve's points differ only by the examples added."""
    if fraction >= 1.0:
        return train
    order = list(range(len(train)))
    # Its own stream, not the split's: the split's shuffle must not decide which rows train too.
    random.Random(f"train_fraction:{seed}").shuffle(order)
    keep = set(order[: max(1, round(len(train) * fraction))])
    return [e for i, e in enumerate(train) if i in keep]


def held_out_count(n_units: int, val_fraction: float) -> int:
    """How many of `n_units` rows (or documents) the validation split holds out: at least one, and
    never all."""
    return min(n_units - 1, max(1, round(n_units * val_fraction)))


def split_examples(examples: list[Example], val_fraction: float, seed: int,
                   data: str) -> tuple[list[Example], list[Example], list[str]]:
    """(train, validation, held-out documents): a seeded `val_fraction` of the rows held out; when
    there are several whole documents, each is held out whole (its chunks never straddle the split)."""
    units = _split_units(examples)
    if len(units) < 2:
        raise DataError([DataIssue(data, 0, "(file)", f"has {len(examples)} usable example(s); a validation split "
                                   "needs at least 2 — add rows or pass an eval file")])
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    val_ids = {i for u in order[: held_out_count(len(units), val_fraction)] for i in units[u]}
    held_out = sorted({examples[i].document for i in val_ids if examples[i].document})
    return ([e for i, e in enumerate(examples) if i not in val_ids],
            [e for i, e in enumerate(examples) if i in val_ids], held_out)


def _split_units(examples: list[Example]) -> list[list[int]]:
    """What the split draws from, in example order: each row alone, and each document's chunks
    together when there are several documents (one document is split by chunk, as before)."""
    if len({e.document for e in examples if e.document}) < 2:
        return [[i] for i in range(len(examples))]
    units: list[list[int]] = []
    of_document: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        if not example.document:
            units.append([i])
        elif example.document in of_document:
            of_document[example.document].append(i)
        else:
            of_document[example.document] = [i]
            units.append(of_document[example.document])
    return units


def small_data_warnings(n_train: int, n_val: int | None, val_fraction: float | None,
                        limits: CheckLimits | None = None) -> tuple[str, str]:
    """(about the validation set, about the training set), each empty when the set is big enough: a
    validation set too small to judge a run, a training set too small to learn from. `n_val` None:
    not known (not judged); `val_fraction` None: the validation set is an eval file."""
    limits = limits or CheckLimits()
    val = train = ""
    if n_val is not None and n_val < limits.small_val_examples:
        fix = ("add rows to the eval file" if val_fraction is None else
               f"add rows (at val_fraction={val_fraction:g}, {limits.small_val_examples} held out need about "
               f"{round(limits.small_val_examples / val_fraction)} examples) or pass an eval file")
        val = (f"the validation set has {n_val} example(s), too few to judge the run (under "
               f"{limits.small_val_examples}, its loss moves by chance) — {fix}")
    if n_train < limits.small_train_examples:
        train = (f"{n_train} training example(s) is tiny — the model tends to memorise them rather than learn "
                 f"the pattern; aim for {limits.small_train_examples} or more")
    return val, train
