"""Probe items (plain data), and a user's own general-probe file (JSONL) read into a probe; every bad
line is reported.

One kind per file, from the keys of its rows:
  {"text": "..."}                                          perplexity
  {"question": "...", "choices": ["..", ".."], "answer": 0}  multiple choice ("answer": index or text;
                                                           optional "chat": false for plain text)
  {"prompt": "..."}                                        KL drift on the base model's continuation
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from .issues import DataError, DataIssue
from .records import resolve_data_path

ProbeKind = Literal["perplexity", "choice", "kl"]


@dataclass(frozen=True)
class TextItem:
    """Scored by perplexity: every token of `text` (up to the probe's token cap) is predicted."""

    text: str
    source: str


@dataclass(frozen=True)
class ChoiceItem:
    """Multiple choice by log-likelihood: the choice with the highest log-probability per byte wins."""

    context: str
    choices: tuple[str, ...]
    answer: int
    chat: bool
    """True: `context` is a user message and the choices are assistant replies (chat template)."""
    source: str


@dataclass(frozen=True)
class PromptItem:
    """Behaviour drift: KL(base || tuned) over the base model's greedy continuation of `prompt`."""

    prompt: str
    source: str


Item = Union[TextItem, ChoiceItem, PromptItem]


@dataclass(frozen=True)
class Probe:
    name: str
    kind: ProbeKind
    items: tuple[Item, ...]
    description: str


_KINDS = {"text": "perplexity", "question": "choice", "prompt": "kl"}


def read_probe_file(path: str | Path) -> Probe:
    """A probe named after the file's stem; a DataError lists every unusable line."""
    file = resolve_data_path(path)
    name = str(file)
    if not file.is_file():
        raise DataError([DataIssue(name, 0, "file", "does not exist — check `forgetting.probes` in the config")])
    issues: list[DataIssue] = []
    items: list[Item] = []
    kind: str | None = None
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            issues.append(DataIssue(name, number, "(line)", f"not valid JSON ({exc.msg}); one JSON object per line"))
            continue
        if not isinstance(row, dict):
            issues.append(DataIssue(name, number, "(line)", "must be a JSON object"))
            continue
        row_kind = next((k for key, k in _KINDS.items() if key in row), None)
        if row_kind is None:
            issues.append(DataIssue(name, number, "(keys)", "needs 'text' (perplexity), 'question'+'choices'+"
                                    "'answer' (multiple choice) or 'prompt' (KL drift)"))
            continue
        kind = kind or row_kind
        if row_kind != kind:
            issues.append(DataIssue(name, number, "(keys)", f"is a {row_kind} row in a {kind} file; "
                                    "put each probe kind in its own file"))
            continue
        item = _item(row, row_kind, f"{file.name}:{number}", issues, name, number)
        if item is not None:
            items.append(item)
    if not items and not issues:
        issues.append(DataIssue(name, 0, "file", "has no probe rows"))
    if issues:
        raise DataError(issues)
    return Probe(file.stem, kind, tuple(items), f"user probe {file.name} ({kind})")  # type: ignore[arg-type]


def _item(row: dict, kind: str, source: str, issues: list[DataIssue], name: str, number: int) -> Item | None:
    def bad(field: str, message: str) -> None:
        issues.append(DataIssue(name, number, field, message))

    if kind == "perplexity":
        if not isinstance(row["text"], str) or not row["text"].strip():
            return bad("text", "must be a non-empty string")
        return TextItem(row["text"], source)
    if kind == "kl":
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            return bad("prompt", "must be a non-empty string")
        return PromptItem(row["prompt"], source)
    question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        return bad("question", "must be a non-empty string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        return bad("choices", "must be a list of at least two non-empty strings")
    if isinstance(answer, str) and answer in choices:
        answer = choices.index(answer)
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        return bad("answer", f"must be an index 0..{len(choices) - 1} or the text of one of the choices")
    return ChoiceItem(question, tuple(choices), answer, chat=bool(row.get("chat", True)), source=source)
