"""The row formats tunesmith reads, told apart by their keys."""

from __future__ import annotations

from typing import Any


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a JSON row is written in, from its keys; None when no format fits."""
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
