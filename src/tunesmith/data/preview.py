"""What the model learns from one example, shown: its rendered text with the trained tokens marked
(`data check --show`, and the web page's Data page); and the whole data check's report in a terminal."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from .render import IGNORE, Example

TRAINED_MARKS = ("[[", "]]")
"""How plain text (a pipe, a log, CI) marks the trained tokens, where no colour shows."""
HISTOGRAM_BINS = 12
"""Bars of the token-length histogram (the web page's Data page draws it): enough to see a long tail."""


def preview_segments(example: Example, tokenizer: Any, max_seq_tokens: int) -> list[tuple[str, bool, bool]]:
    """The example's text in runs of (text, trained, cut here): a run ends where training switches
    on or off, and at max_seq_tokens, whose run is marked as the truncation point when tokens follow."""
    ids = example.input_ids
    # token t is trained when the target at t-1 predicts it
    trained = [False] + [t != IGNORE for t in example.targets[:-1]]
    segments = []
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or trained[end] != trained[start] or end == max_seq_tokens:
            text = tokenizer.decode(ids[start:end], skip_special_tokens=False)
            segments.append((text, trained[start], end == max_seq_tokens and end < len(ids)))
            start = end
    return segments


def render_preview(example: Example, tokenizer: Any, max_seq_tokens: int, color: bool = True) -> str:
    """One example as rich markup: trained tokens highlighted, untrained dim, the truncation point
    marked. Without `color` (output that is not a terminal) the trained tokens are marked in the
    text itself, [[like this]], so a log shows what the model learns."""
    opened, closed = ("[bold green on grey15]", "[/]") if color else (escape(TRAINED_MARKS[0]), TRAINED_MARKS[1])
    out: list[str] = []
    for text, trained, cut in preview_segments(example, tokenizer, max_seq_tokens):
        if trained:
            out.append(f"{opened}{escape(text)}{closed}")
        else:
            out.append(f"[dim]{escape(text)}[/]" if color else escape(text))
        if cut:
            out.append(f"[bold red]✂ max_seq_tokens={max_seq_tokens}: the rest is cut[/]")
    return "".join(out)


def length_histogram(ordered: list[int], bins: int = HISTOGRAM_BINS) -> dict[str, list[int]]:
    """Rows per token-length bin of equal width from 0 to the longest: `edges` has one more entry than `counts`."""
    if not ordered:
        return {"edges": [], "counts": []}
    width = max(1, -(-ordered[-1] // bins))  # ceiling: the longest row falls in the last bin
    counts = [0] * bins
    for length in ordered:
        counts[min(bins - 1, length // width)] += 1
    return {"edges": [k * width for k in range(bins + 1)], "counts": counts}


def split_lines(name: str, split: dict[str, Any], max_seq_tokens: int) -> list[str]:
    """`data check`'s summary of one file or folder (rich markup): rows, token lengths, trained
    tokens; then each PDF, DOCX or HTML file's pages, characters and pages without text."""
    tokens = split["tokens"]
    lines = [f"[bold]{name}[/] {escape(split['file'])}: {split['rows']} rows ({split['format']}), tokens "
             f"min {tokens['min']} / median {tokens['median']} / p95 {tokens['p95']} / max {tokens['max']}, "
             f"{split['trained_tokens']:,} trained; {split['over_max_seq_tokens']} over max_seq_tokens="
             f"{max_seq_tokens}; end-of-turn trained in {split['end_of_turn_trained']}"]
    for doc in split.get("document_files", []):
        unit = "pages" if doc["kind"] == "pdf" else "sections"
        empty = f", {len(doc['empty_pages'])} empty" if doc["empty_pages"] else ""
        lines.append(f"  {escape(doc['file'])}: {doc['pages']} {unit}, {doc['characters']:,} characters{empty}")
    return lines


def print_report(report: Any, tokenizer: Any, max_seq_tokens: int, max_issues_shown: int, out: Any) -> None:
    """`data check`'s report on the rich Console `out`: the first `max_issues_shown` errors and warnings,
    each split's token lengths, the previews, then passed or failed."""
    for title, issues, color in (("error", report.errors, "red"), ("warning", report.warnings, "yellow")):
        for issue in issues[:max_issues_shown]:
            out.print(f"[{color}]{title}:[/] {escape(str(issue))}")
        if len(issues) > max_issues_shown:
            out.print(f"[{color}]... and {len(issues) - max_issues_shown} more {title}(s)[/] (all with --json)")
    for name, split in report.stats["splits"].items():
        out.print("\n".join(split_lines(name, split, max_seq_tokens)))
    for example in report.previews:
        out.rule(f"{escape(example.source)} — trained tokens highlighted")
        out.print(render_preview(example, tokenizer, max_seq_tokens, color=out.is_terminal))
    if report.ok:
        out.print(f"[bold green]data check passed[/] ({len(report.warnings)} warning(s))")
    else:
        out.print(f"[bold red]data check failed:[/] {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
