"""Column mapping: a file's own column (or JSON key) names renamed to tunesmith's fields before the
format is detected, so a helpdesk export goes in as it comes.

A mapping is `{our field: the file's column}`, e.g. `{"prompt": "customer_message", "completion":
"agent_reply"}`; `--columns prompt=customer_message,completion=agent_reply` on the command line.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError
from .formats import FIELDS

ColumnMap = Mapping[str, str]
"""Our field name -> the file's column (CSV) or key (JSON)."""
# Words in a column name that suggest what it holds, most telling first: "customer_message" is a
# prompt because of "message", ahead of "customer_email", which only has "customer".
_PROMPT_WORDS = ("prompt", "question", "input", "query", "message", "customer", "user")
_COMPLETION_WORDS = ("completion", "answer", "reply", "response", "output", "agent", "assistant")


def check_columns(columns: Mapping[str, Any]) -> dict[str, str]:
    """The mapping as a plain dict, or a ConfigError saying which entry is wrong and why."""
    out: dict[str, str] = {}
    for target, column in columns.items():
        if target not in FIELDS:
            raise ConfigError(f"columns: unknown field {target!r} — map one of {', '.join(FIELDS)} to a column")
        if not isinstance(column, str) or not column.strip():
            raise ConfigError(f"columns: {target} must name a column of the file, got {column!r}")
        if column.strip() in out.values():
            raise ConfigError(f"columns: the column {column.strip()!r} is mapped twice — map each column once")
        out[target] = column.strip()
    return out


def parse_columns(text: str) -> dict[str, str]:
    """`prompt=customer_message,completion=agent_reply` (the --columns flag) as a checked mapping."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        target, sep, column = (s.strip() for s in part.partition("="))
        if not sep or not target or not column:
            raise ConfigError(f"--columns: {part!r} is not FIELD=COLUMN — write e.g. "
                              "--columns prompt=customer_message,completion=agent_reply")
        if target in pairs:
            raise ConfigError(f"--columns: {target} is given twice — map each field once")
        pairs[target] = column
    if not pairs:
        raise ConfigError("--columns: no FIELD=COLUMN pairs given — "
                          "write e.g. --columns prompt=question,completion=answer")
    return check_columns(pairs)


def renamed(names: list[str], columns: ColumnMap) -> list[str | None]:
    """Each column's field name under the mapping; None for a column whose name the mapping gives to
    another column (a file with both `prompt` and `question` under `prompt=question`)."""
    field_of = {column: target for target, column in columns.items()}
    return [field_of.get(name, None if name in columns else name) for name in names]


def apply_columns(row: dict[str, Any], columns: ColumnMap) -> dict[str, Any]:
    """A JSON row with its keys renamed by the mapping (see `renamed`)."""
    keys = list(row)
    return {new: row[old] for old, new in zip(keys, renamed(keys, columns)) if new is not None}


def suggest_columns(names: list[str]) -> dict[str, str] | None:
    """A prompt/completion mapping guessed from column names, or None when nothing fits both."""

    def best(words: tuple[str, ...], taken: str | None) -> str | None:
        ranked = [(next(i for i, w in enumerate(words) if w in name.lower()), k, name)
                  for k, name in enumerate(names) if name != taken and any(w in name.lower() for w in words)]
        return min(ranked)[2] if ranked else None

    prompt = best(_PROMPT_WORDS, None)
    completion = best(_COMPLETION_WORDS, prompt)
    if prompt is None or completion is None:
        return None
    return {"prompt": prompt, "completion": completion}


def mapping_hint(names: list[str]) -> str:
    """The end of a 'no known format' message: the mapping to pass, guessed from the names seen."""
    guess = suggest_columns(names)
    if guess is None:
        return ("name them messages, conversations, instruction/output, prompt/completion or text, or map yours: "
                "--columns prompt=COLUMN,completion=COLUMN (config: columns: {prompt: COLUMN, completion: COLUMN})")
    flag = ",".join(f"{k}={v}" for k, v in guess.items())
    config = ", ".join(f"{k}: {v}" for k, v in guess.items())
    return f"map them: --columns {flag} (config: columns: {{{config}}})"
