"""Preference pairs (prompt, chosen, rejected) in token space: encoding, the train/validation split,
and their data check (errors by file:line, warnings, token statistics).

A pair becomes one `PairExample`: the chosen conversation's tokens, then the rejected one's, each
rendered by the training renderer, so that packing keeps a pair in one micro-batch and the two
sides attend only to themselves (two segments, positions restarting).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .columns import ColumnMap, check_columns
from .formats import PREFERENCE_FORMATS
from .issues import DataError, DataIssue
from .limits import CheckLimits
from .prepare import PreparedData, small_data_warnings, split_examples, training_subset
from .records import Conversation, PreferencePair, file_sha256, iter_source, read_records, resolve_data_path
from .render import IGNORE, Example, encode_conversations, end_of_turn_ids


@dataclass(frozen=True)
class PairExample(Example):
    """A pair as one example: `input_ids`/`targets` are the chosen side's followed by the rejected side's."""

    chosen_tokens: int = 0
    """Tokens of the chosen side: the split between the pair's two segments."""

    @property
    def segments(self) -> tuple[int, int]:
        """(chosen tokens, rejected tokens): the lengths packing gives the two sequences."""
        return self.chosen_tokens, len(self.input_ids) - self.chosen_tokens


@dataclass(frozen=True)
class EncodedPair:
    example: PairExample
    cut: tuple[bool, bool]
    """Whether max_seq_tokens truncated (chosen, rejected)."""
    trained: tuple[list[int], list[int]]
    """The trained target ids of each side after truncation."""


def encode_pairs(pairs: list[PreferencePair], tokenizer: Any, max_seq_tokens: int) -> list[EncodedPair]:
    """Each pair's two conversations (prompt + chosen, prompt + rejected) through the training renderer:
    loss positions are the answers' tokens and their end-of-turn token, never the prompt."""
    conversations = [Conversation((*p.prompt, *side), p.source) for p in pairs for side in (p.chosen, p.rejected)]
    encoded = encode_conversations(conversations, tokenizer, max_seq_tokens)
    out = []
    for i, pair in enumerate(pairs):
        (chosen, chosen_cut), (rejected, rejected_cut) = encoded[2 * i], encoded[2 * i + 1]
        example = PairExample(list(chosen.input_ids) + list(rejected.input_ids),
                              list(chosen.targets) + list(rejected.targets), pair.source,
                              chosen_tokens=len(chosen.input_ids))
        trained = tuple([t for t in e.targets if t != IGNORE] for e in (chosen, rejected))
        out.append(EncodedPair(example, (chosen_cut, rejected_cut), trained))
    return out


def is_preference_data(path: str | Path, columns: ColumnMap | None = None) -> bool:
    """Whether the file's first readable row is a preference row (the format decides the objective's data)."""
    path = resolve_data_path(path)
    if not path.is_file():
        return False
    issues: list[DataIssue] = []
    first = next(iter_source(path, CheckLimits(), issues, [], columns=check_columns(columns or {})), None)
    return first is not None and first[0] in PREFERENCE_FORMATS


def read_pairs(path: str | Path, *, columns: ColumnMap | None = None, system_prompt: str | None = None,
               limits: CheckLimits | None = None) -> list[PreferencePair]:
    """Every pair of a preference file, or a DataError naming every bad row (and any row that is not a pair)."""
    records = read_records(path, limits, columns=columns, system_prompt=system_prompt)
    others = [r.source for r in records if not isinstance(r, PreferencePair)]
    if others:
        raise DataError([DataIssue(str(path), 0, "(file)", f"the dpo and orpo objectives train on preference rows "
                                   f"(prompt, chosen, rejected); {others[0]} is not one")])
    return records  # type: ignore[return-value]


def prepare_pairs(data: str, eval_data: str | None, tokenizer: Any, max_seq_tokens: int, val_fraction: float,
                  seed: int, *, columns: ColumnMap | None = None, system_prompt: str | None = None,
                  train_fraction: float = 1.0) -> PreparedData:
    """Training and validation pairs, split by `seed` as `prepare_data` splits rows; pairs whose
    truncation leaves a side without trained tokens are dropped (the data check names them)."""
    options = {"columns": columns, "system_prompt": system_prompt}
    sha = {str(data): file_sha256(data)}
    train = _usable(encode_pairs(read_pairs(data, **options), tokenizer, max_seq_tokens))
    if eval_data is not None:
        sha[str(eval_data)] = file_sha256(eval_data)
        val = _usable(encode_pairs(read_pairs(eval_data, **options), tokenizer, max_seq_tokens))
    else:
        train, val, _ = split_examples(train, val_fraction, seed, str(data))
    train = training_subset(train, train_fraction, seed)
    if not train or not val:
        raise DataError([DataIssue(str(data), 0, "(file)", "has no usable training or validation pairs")])
    small = small_data_warnings(len(train), len(val), None if eval_data is not None else val_fraction)
    return PreparedData(train=train, val=val, warnings=[f"small data: {m}" for m in small if m], sha256=sha)


def _usable(encoded: list[EncodedPair]) -> list[Example]:
    return [e.example for e in encoded if e.trained[0] and e.trained[1]]


def check_pairs(data: str | Path, eval_data: str | Path | None, tokenizer: Any, max_seq_tokens: int,
                limits: CheckLimits, *, columns: ColumnMap | None = None, system_prompt: str | None = None
                ) -> tuple[list[DataIssue], list[DataIssue], dict[str, Any]]:
    """(errors, warnings, statistics) of preference files, in the shape of `check_files`' report."""
    errors: list[DataIssue] = []
    warnings: list[DataIssue] = []
    splits = {}
    seen: dict[tuple[Any, ...], str] = {}  # a pair's text -> where it first appeared (train, then eval)
    for split, path in (("train", data), ("eval", eval_data)):
        if path is None:
            continue
        try:
            pairs = read_pairs(path, columns=columns, system_prompt=system_prompt, limits=limits)
        except DataError as exc:
            errors += exc.issues
            continue
        encoded = encode_pairs(pairs, tokenizer, max_seq_tokens)
        warnings += _pair_warnings(pairs, encoded, seen, split, limits, max_seq_tokens)
        splits[split] = _pair_stats(str(resolve_data_path(path)), pairs, encoded, tokenizer, max_seq_tokens)
    stats = {"max_seq_tokens": max_seq_tokens, "splits": splits, "system_prompt_tokens": 0}
    return errors, warnings, stats


def _pair_warnings(pairs: list[PreferencePair], encoded: list[EncodedPair], seen: dict[tuple[Any, ...], str],
                   split: str, limits: CheckLimits, max_seq_tokens: int) -> list[DataIssue]:
    """Duplicates (within the file, or of a training pair in the eval file), sides whose lengths
    differ more than `limits.pair_length_ratio`, and truncation that leaves no difference to learn."""
    out = []
    for pair, enc in zip(pairs, encoded):
        file, _, line = pair.source.rpartition(":")
        at = lambda field, kind, message: DataIssue(file, int(line), field, message, kind)  # noqa: E731
        key = tuple((m.role, m.content.strip()) for m in (*pair.prompt, *pair.chosen, None, *pair.rejected)
                    if m is not None)
        if key in seen:
            where = "a training pair" if split == "eval" and not seen[key].startswith(file) else "the pair"
            out.append(at("(row)", "duplicate", f"repeats {where} at {seen[key]} — remove one copy"))
        else:
            seen[key] = pair.source
        chosen, rejected = (len(t) for t in enc.trained)
        if min(chosen, rejected) and max(chosen, rejected) / min(chosen, rejected) > limits.pair_length_ratio:
            longer = "chosen" if chosen > rejected else "rejected"
            out.append(at(longer, "length imbalance", f"{chosen} trained tokens against {rejected} — preference "
                          "tuning learns length when one side is always longer; pair answers of similar length"))
        if any(enc.cut) and enc.trained[0] == enc.trained[1]:
            out.append(at("(row)", "truncation", f"the answers differ only after max_seq_tokens={max_seq_tokens} "
                          "— this pair teaches nothing; raise max_seq_tokens or shorten the prompt"))
        elif any(enc.cut) and not (chosen and rejected):
            out.append(at("(row)", "truncation", f"the prompt fills max_seq_tokens={max_seq_tokens}, leaving a side "
                          "without answer tokens; the pair is skipped — raise max_seq_tokens"))
    return out


def _pair_stats(file: str, pairs: list[PreferencePair], encoded: list[EncodedPair], tokenizer: Any,
                max_seq_tokens: int) -> dict[str, Any]:
    """The token statistics of one file, with the keys of an SFT split's (lengths: both sides of a pair)."""
    lengths = sorted(len(e.example.input_ids) for e in encoded)
    eot = end_of_turn_ids(tokenizer)
    chosen = [len(e.trained[0]) for e in encoded]
    rejected = [len(e.trained[1]) for e in encoded]
    tokens = {"min": lengths[0], "median": int(statistics.median(lengths)),
              "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))], "max": lengths[-1],
              "total": sum(lengths)} if lengths else {"min": 0, "median": 0, "p95": 0, "max": 0, "total": 0}
    return {
        "file": file, "format": "preference", "rows": len(pairs), "examples": len(pairs), "tokens": tokens,
        "trained_tokens": sum(chosen) + sum(rejected),
        "over_max_seq_tokens": sum(any(e.cut) for e in encoded),
        "end_of_turn_trained": sum(bool(a) and bool(b) and a[-1] in eot and b[-1] in eot for a, b in
                                   (e.trained for e in encoded)),
        "chosen_trained_tokens": {"median": int(statistics.median(chosen)) if chosen else 0, "total": sum(chosen)},
        "rejected_trained_tokens": {"median": int(statistics.median(rejected)) if rejected else 0,
                                    "total": sum(rejected)},
        "chosen_longer": sum(a > b for a, b in zip(chosen, rejected)),
    }
