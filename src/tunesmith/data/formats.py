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
    "rft": ("messages",),
}
"""The keys (CSV columns) each format reads; any other key of a row is ignored."""
FIELDS = tuple(dict.fromkeys(f for fields in FORMAT_FIELDS.values() for f in fields))
"""Every field name a column mapping may target."""
PREFERENCE_FORMATS = ("preference", "openai_preference")
"""The formats whose rows are preference pairs (trained by the dpo and orpo objectives)."""
GRADED_FORMATS = ("rft",)
"""The formats of reinforcement fine-tuning: prompts without answers, whose other keys (a
`reference_answer`, ...) are the grader's to read, not columns left over."""
RFT_NOT_SUPERVISED = (
    "holds RFT prompts (every row's messages end with a user turn, no answer): supervised training has no answer "
    "to learn — train them by reinforcement (objective: grpo, with a grader: `tunesmith train DATA --objective grpo "
    "--grader GRADER.json`; check them with `tunesmith data check DATA --grader GRADER.json`), or add each row's "
    "assistant answer")
"""The data check's error for an RFT file checked for supervised training."""


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a JSON row is written in, from its keys; None when no format fits."""
    if "chosen" in row or "rejected" in row:  # before prompt/completion: these rows have a prompt too
        return "preference"
    if "preferred_output" in row or "non_preferred_output" in row:
        return "openai_preference"
    if "messages" in row:
        return "rft" if is_rft_prompt(row["messages"]) else "chat"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "instruction"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    return None


def is_rft_prompt(messages: Any) -> bool:
    """OpenAI's reinforcement fine-tuning rows: `messages` that end with the user's turn, the prompt a
    model answers and a grader scores (developers.openai.com/api/docs/guides/reinforcement-fine-tuning).
    A conversation with an assistant turn before its last user turn stays a chat row, as it always was
    here: supervised training learns that turn."""
    return (isinstance(messages, list) and bool(messages) and all(isinstance(m, dict) for m in messages)
            and messages[-1].get("role") == "user" and not any(m.get("role") == "assistant" for m in messages))
