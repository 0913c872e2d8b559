"""The prompts of reinforcement fine-tuning (objective grpo): each row's turns up to its last user turn,
tokenized as generation starts (the assistant header open), and the row itself, which the grader reads
as `item`. Split and subset as every other run's examples are (prepare.py), so the held-out prompts
and the data order follow the same seed rules."""

from __future__ import annotations

from typing import Any

from .issues import DataError, DataIssue
from .limits import CheckLimits
from .prepare import PreparedData, small_data_warnings, split_examples, training_subset
from .records import Conversation, file_sha256, read_records, resolve_data_path
from .render import IGNORE, Example, encode_prompt
from .rows import iter_rows


def prepare_prompts(data: str, eval_data: str | None, tokenizer: Any, max_seq_tokens: int, val_fraction: float,
                    seed: int, *, columns: Any = None, system_prompt: str | None = None,
                    train_fraction: float = 1.0) -> PreparedData:
    """Training and held-out prompts (Examples whose targets are all IGNORE: nothing is trained on the
    prompt) and `items`, each row by its source, as the grader reads it. A prompt longer than
    `max_seq_tokens` leaves no room to answer: a DataError names every such row."""
    sha = {str(data): file_sha256(data)}
    items: dict[str, dict[str, Any]] = {}
    train = _read_prompts(data, tokenizer, max_seq_tokens, columns, system_prompt, items)
    held_out: list[str] = []
    if eval_data is not None:
        sha[str(eval_data)] = file_sha256(eval_data)
        val = _read_prompts(eval_data, tokenizer, max_seq_tokens, columns, system_prompt, items)
    else:
        train, val, held_out = split_examples(train, val_fraction, seed, str(data))
    train = training_subset(train, train_fraction, seed)
    small = small_data_warnings(len(train), len(val), None if eval_data is not None else val_fraction)
    return PreparedData(train=train, val=val, warnings=[f"small data: {m}" for m in small if m], sha256=sha,
                        held_out_documents=held_out, items=items)


def _read_prompts(path: str, tokenizer: Any, max_seq_tokens: int, columns: Any, system_prompt: str | None,
                  items: dict[str, dict[str, Any]]) -> list[Example]:
    """The file's prompts; its rows (without a trailing answer) added to `items` by source."""
    examples, issues = [], []
    for record in read_records(path, columns=columns, system_prompt=system_prompt):
        if not isinstance(record, Conversation):
            issues.append(DataIssue(*_where(record.source), "(row)", "is not a prompt: objective grpo trains on "
                                    "messages that end with a user turn (OpenAI's RFT rows)"))
            continue
        turns = list(record.messages)
        while turns and turns[-1].role == "assistant":  # an answer given in the row is not the model's
            turns.pop()
        ids = encode_prompt([{"role": m.role, "content": m.content} for m in turns], tokenizer)
        if len(ids) > max_seq_tokens:
            issues.append(DataIssue(*_where(record.source), "messages", f"the prompt is {len(ids)} tokens, over "
                                    f"max_seq_tokens ({max_seq_tokens}): shorten it or raise max_seq_tokens"))
            continue
        examples.append(Example(ids, [IGNORE] * len(ids), record.source))
    if issues:
        raise DataError(issues)
    file = resolve_data_path(path)
    for line, row, _ in iter_rows(file, CheckLimits(), []) if file.is_file() else ():
        items[f"{file}:{line}"] = _without_answer(row)
    return examples


def _without_answer(row: dict[str, Any]) -> dict[str, Any]:
    """The row as the grader's `item`: its messages without a trailing assistant answer."""
    messages = row.get("messages")
    if isinstance(messages, list):
        end = len(messages)
        while end and isinstance(messages[end - 1], dict) and messages[end - 1].get("role") == "assistant":
            end -= 1
        return {**row, "messages": messages[:end]}
    return dict(row)


def _where(source: str) -> tuple[str, int]:
    file, _, line = source.rpartition(":")
    return file, int(line) if line.isdigit() else 0

