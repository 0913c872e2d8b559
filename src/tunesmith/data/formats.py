"""The row formats tunesmith reads, told apart by their keys."""

from __future__ import annotations

from typing import Any

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "instruction": ("instruction", "input", "output", "system"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "preference": ("prompt", "chosen", "rejected"),
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
}
"""The keys (CSV columns) each format reads; any other key of a row is ignored."""
FIELDS = tuple(dict.fromkeys(f for fields in FORMAT_FIELDS.values() for f in fields))
"""Every field name a column mapping may target."""
PREFERENCE_FORMATS = ("preference", "openai_preference")
"""The formats whose rows are preference pairs (trained by the dpo and orpo objectives)."""


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a JSON row is written in, from its keys; None when no format fits."""
    if "chosen" in row or "rejected" in row:  # before prompt/completion: these rows have a prompt too
        return "preference"
    if "preferred_output" in row or "non_preferred_output" in row:
        return "openai_preference"
    if "messages" in row:
        return "chat"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "instruction"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    return None
