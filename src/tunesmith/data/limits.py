"""The data check's limits and thresholds: one frozen dataclass, every default in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckLimits:
    """What the data check treats as an error or a warning."""

    max_line_bytes: int = 1 << 20
    """Longest accepted line (or .json record) in bytes: 1 MiB is ~250k tokens, far past any context."""
    max_nesting_depth: int = 32
    """Deepest accepted JSON nesting; chat rows need 3, and deep nests exhaust the parser's stack."""
    near_duplicate_jaccard: float = 0.8
    """Rows whose normalized word-shingle sets overlap at least this much are near-duplicates."""
    short_answer_chars: int = 3
    """Answers shorter than this many characters are suspiciously short ('ok', '.'); 'Yes.' passes."""
    long_answer_ratio: float = 10.0
    """Answers longer than this many times the median answer (and over `long_answer_min_tokens`) are flagged."""
    long_answer_min_tokens: int = 256
    """An answer is never called long below this many tokens, whatever the median."""
    small_val_examples: int = 20
    """Fewer held-out examples than this cannot judge a run: one example moves the validation loss
    by 5% or more, so a change between runs is mostly chance."""
    small_train_examples: int = 50
    """Fewer training examples than this are called tiny: OpenAI's fine-tuning guide sees clear gains
    from 50-100 examples, and a few dozen are memorised rather than generalised."""
    pair_length_ratio: float = 3.0
    """A preference pair whose one answer has more than this many times the other's trained tokens is
    flagged: DPO raises the chosen side's summed log-probability, so a longer chosen side is an easy
    shortcut (Park et al. 2024, "Disentangling length from quality in DPO")."""
    max_issues_shown: int = 50
    """Problems printed per kind (errors, warnings); the rest are counted, and all are in --json."""

    def __post_init__(self) -> None:
        if self.max_line_bytes < 1024:
            raise ValueError(f"max_line_bytes must be at least 1024, got {self.max_line_bytes}")
        if self.max_nesting_depth < 3:
            raise ValueError(f"max_nesting_depth must be at least 3 (chat rows need 3), got {self.max_nesting_depth}")
        if not 0.0 < self.near_duplicate_jaccard <= 1.0:
            raise ValueError(f"near_duplicate_jaccard must be in (0, 1], got {self.near_duplicate_jaccard}")
