"""What the data check finds, per file and line: the statistics gathered while streaming a file
(`SplitStats`) and the report of errors, warnings and statistics (`CheckReport`) that `data check`
prints and `train` enforces."""

from __future__ import annotations

import statistics
from array import array
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape

from .preview import length_histogram
from .records import DataError, DataIssue
from .render import Example


@dataclass
class SplitStats:
    """Numbers about one file, gathered while streaming it."""

    file: str
    format: str | None = None
    rows: int = 0
    examples: int = 0
    documents: int = 0
    """Whole .txt/.md/.pdf/.docx/.html files among the rows (a folder's documents)."""
    document_files: list[dict[str, Any]] = field(default_factory=list)
    """Per PDF, DOCX or HTML file: its file, kind, pages (or sections), characters and empty pages."""
    document_examples: int = 0
    """Chunks of those documents."""
    system_prompt_added: int = 0
    """Conversations that got the system prompt (they had no system turn)."""
    lengths: array = field(default_factory=lambda: array("I"))
    """Tokens per row, 4 bytes each."""
    trained_tokens: int = 0
    over_max_seq_tokens: int = 0
    cut_trained_tokens: int = 0
    no_trained_tokens: int = 0
    end_of_turn_trained: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    control_token_strings: int = 0
    short_answers: int = 0
    long_answers: int = 0
    pii: dict[str, int] = field(default_factory=lambda: {"email": 0, "phone": 0, "card": 0})
    answer_lines: array = field(default_factory=lambda: array("I"))
    answer_tokens: array = field(default_factory=lambda: array("I"))
    """Line and trained tokens of each conversation, for the long-answer check against the median."""
    answer_files: array = field(default_factory=lambda: array("I"))
    files: list[str] = field(default_factory=list)
    """The file of each conversation (an index into `files`): a folder holds several."""

    def to_dict(self) -> dict[str, Any]:
        ordered = sorted(self.lengths)
        tokens = {"min": 0, "median": 0, "p95": 0, "max": 0, "total": 0}
        if ordered:
            tokens = {"min": ordered[0], "median": int(statistics.median(ordered)),
                      "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1],
                      "total": sum(ordered)}
        return {
            "file": self.file, "format": self.format or "unknown", "rows": self.rows, "examples": self.examples,
            "documents": self.documents, "document_files": self.document_files,
            "system_prompt_added": self.system_prompt_added,
            "tokens": tokens, "trained_tokens": self.trained_tokens,
            "over_max_seq_tokens": self.over_max_seq_tokens, "cut_trained_tokens": self.cut_trained_tokens,
            "no_trained_tokens": self.no_trained_tokens, "end_of_turn_trained": self.end_of_turn_trained,
            "exact_duplicates": self.exact_duplicates, "near_duplicates": self.near_duplicates,
            "control_token_strings": self.control_token_strings, "short_answers": self.short_answers,
            "long_answers": self.long_answers, "pii": dict(self.pii), "histogram": length_histogram(ordered),
        }


@dataclass
class CheckReport:
    """Errors (training refuses), warnings (training goes on) and statistics, per file and line."""

    errors: list[DataIssue] = field(default_factory=list)
    warnings: list[DataIssue] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    previews: list[Example] = field(default_factory=list)
    """The first rendered examples of the training file, for `--show`."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        def rows(issues: list[DataIssue]) -> list[dict[str, Any]]:
            return [{"file": i.file, "line": i.line, "field": i.field, "message": i.message, "kind": i.kind}
                    for i in issues]

        return {"ok": self.ok, "errors": rows(self.errors), "warnings": rows(self.warnings), "stats": self.stats}

    def warning_summary(self, per_kind: int = 3) -> list[str]:
        """One line per kind of warning: how many, and the first few places."""
        by_kind: dict[str, list[DataIssue]] = {}
        for issue in self.warnings:
            by_kind.setdefault(issue.kind, []).append(issue)
        lines = []
        for kind, issues in by_kind.items():
            first = "; ".join(str(i) for i in issues[:per_kind])
            more = f" (+{len(issues) - per_kind} more)" if len(issues) > per_kind else ""
            lines.append(f"{kind} x{len(issues)}: {first}{more}")
        return lines

    def enforce(self, console: Any) -> None:
        """What `train` does with the report: print warnings, refuse on errors (before creating anything)."""
        for line in self.warning_summary():
            console.print(f"[yellow]data warning:[/] {escape(line)}", highlight=False)
        if self.errors:
            raise DataError(self.errors)
