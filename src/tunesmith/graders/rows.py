"""A data row seen by a grader: the answer in it (its last assistant message), the prompt before that,
and the item (the row as training would see it: without the answer).

Chat rows (`messages`), ShareGPT rows (`conversations`), prompt/completion and instruction rows are
read; a row in any other shape has no answer, only an item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ShareGPT speakers, as data/records.py reads them
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class GradedRow:
    answer: str | None
    """The last assistant message's text; None when the row has none."""
    tool_calls: list[dict[str, Any]]
    """That message's tool calls (chat rows), for sample.output_tools."""
    prompt: list[dict[str, str]]
    """The chat messages before the answer: what a run answers with --run."""
    item: dict[str, Any]
    """The row without the answer: the grader's `item` namespace."""


def split_row(row: dict[str, Any]) -> GradedRow:
    """The row's answer, prompt and item; see the module's docstring for the shapes read."""
    for key, role_key, text_key in (("messages", "role", "content"), ("conversations", "from", "value")):
        turns = row.get(key)
        if isinstance(turns, list) and all(isinstance(t, dict) for t in turns):
            roles = [_SHAREGPT_ROLES.get(t.get(role_key), t.get(role_key)) for t in turns]
            last = max((i for i, r in enumerate(roles) if r == "assistant"), default=None)
            before = turns if last is None else turns[:last]
            prompt = [{"role": str(r), "content": _text(t.get(text_key))} for r, t in zip(roles, before)]
            answer = None if last is None else _text(turns[last].get(text_key))
            tools = [] if last is None else list(turns[last].get("tool_calls") or [])
            return GradedRow(answer, tools, prompt, {**row, key: before})
    if isinstance(row.get("completion"), str):
        prompt = [{"role": "user", "content": _text(row.get("prompt"))}]
        return GradedRow(row["completion"], [], prompt, {k: v for k, v in row.items() if k != "completion"})
    if isinstance(row.get("output"), str) and "instruction" in row:
        text = "\n\n".join(filter(None, (_text(row.get("instruction")), _text(row.get("input")))))
        return GradedRow(row["output"], [], [{"role": "user", "content": text}],
                         {k: v for k, v in row.items() if k != "output"})
    return GradedRow(None, [], [], dict(row))


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "" if content is None else str(content)
