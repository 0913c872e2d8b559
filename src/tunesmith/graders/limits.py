"""Every limit of grading in one place: the python grader's sandbox, the judge's call, a formula's size."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import require


@dataclass(frozen=True)
class GraderLimits:
    python_timeout_s: float = 120.0
    """Wall-clock seconds one python grade may take before its process is killed; OpenAI's limit is
    2 minutes per grading execution, so a grader that passes there passes here."""
    python_memory_bytes: int = 2 << 30
    """Address space of the python grader's process (RLIMIT_AS): OpenAI gives 2 GB."""
    python_disk_bytes: int = 1 << 30
    """Largest file the python grader may write (RLIMIT_FSIZE): OpenAI gives 1 GB of disk."""
    max_source_bytes: int = 256 << 10
    """Longest python grader source: OpenAI refuses uploads of 256 kB and more."""
    judge_timeout_s: float = 120.0
    """Seconds one score_model request may take (a reasoning judge can think for a minute)."""
    judge_concurrency: int = 4
    """score_model requests in flight at once (grade_rows); 4 stays within `tunesmith serve`'s default
    queue of 8 and is gentle on a hosted API's rate limit."""
    judge_retries: int = 3
    """Retries of a request the judge refused as busy (429, 503), after its Retry-After or 1, 2, 4 s."""
    max_formula_chars: int = 1000
    """Longest calculate_output formula: bounds the parser's recursion on a pathological input."""
    max_captured_chars: int = 2000
    """Characters of a python grader's printed output and traceback kept in a sample's error."""

    def __post_init__(self) -> None:
        require(self.python_timeout_s > 0, "python_timeout_s", "must be > 0")
        require(self.python_memory_bytes >= 64 << 20, "python_memory_bytes", "must be at least 64 MiB "
                "(the interpreter itself needs ~30)")
        require(self.python_disk_bytes >= 0, "python_disk_bytes", "must be >= 0")
        require(self.judge_timeout_s > 0, "judge_timeout_s", "must be > 0")
        require(self.judge_concurrency >= 1, "judge_concurrency", "must be >= 1")
        require(self.judge_retries >= 0, "judge_retries", "must be >= 0")
