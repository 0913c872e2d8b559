"""recall@k of a retriever on questions whose answers are known (a pure function)."""

from __future__ import annotations

from typing import Sequence


def recall_at_k(relevant: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[int, float]:
    """{k: share of questions with a relevant passage among their first k}, where `relevant[i][j]`
    says whether the j-th passage retrieved for question i holds its answer; 0.0 without questions."""
    n = len(relevant)
    return {k: (sum(any(row[:k]) for row in relevant) / n if n else 0.0) for k in ks}
