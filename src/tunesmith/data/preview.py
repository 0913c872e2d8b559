"""What the model learns from one example, shown: its rendered text with the trained tokens marked
(`data check --show`)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from .render import IGNORE, Example

TRAINED_MARKS = ("[[", "]]")
"""How plain text (a pipe, a log, CI) marks the trained tokens, where no colour shows."""


def render_preview(example: Example, tokenizer: Any, max_seq_tokens: int, color: bool = True) -> str:
    """One example as rich markup: trained tokens highlighted, untrained dim, the truncation point
    marked. Without `color` (output that is not a terminal) the trained tokens are marked in the
    text itself, [[like this]], so a log shows what the model learns."""
    ids = example.input_ids
    # token t is trained when the target at t-1 predicts it
    trained = [False] + [t != IGNORE for t in example.targets[:-1]]
    opened, closed = ("[bold green on grey15]", "[/]") if color else (escape(TRAINED_MARKS[0]), TRAINED_MARKS[1])
    out: list[str] = []
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or trained[end] != trained[start] or end == max_seq_tokens:
            text = escape(tokenizer.decode(ids[start:end], skip_special_tokens=False))
            if trained[start]:
                out.append(f"{opened}{text}{closed}")
            else:
                out.append(f"[dim]{text}[/]" if color else text)
            if end == max_seq_tokens and end < len(ids):
                out.append(f"[bold red]✂ max_seq_tokens={max_seq_tokens}: the rest is cut[/]")
            start = end
    return "".join(out)
