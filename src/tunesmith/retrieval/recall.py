"""recall@k of a retriever on questions whose answers are known (a pure function)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..evaluation.text_metrics import answer_tokens

ANSWER_F1 = 0.5
"""A passage holds an answer when its token F1 with the answer is at least this (half the words
shared, both ways): the rule of compare's `answer_found_rate` and recall@k, and of RAFT's gold passage."""


def answer_f1s(reference: str, texts: Sequence[str] | Sequence[Counter]) -> list[float]:
    """Token F1 of each text against `reference`, as `text_metrics.token_f1` computes it; texts may be
    given as their `Counter(answer_tokens(text))`, so a knowledge source is normalised once."""
    ref = Counter(answer_tokens(reference))
    out = []
    for text in texts:
        pred = text if isinstance(text, Counter) else Counter(answer_tokens(text))
        common = sum((pred & ref).values())
        if not pred or not ref:
            out.append(float(pred == ref))
        else:
            out.append(2 * common / (sum(pred.values()) + sum(ref.values())))
    return out


def recall_at_k(relevant: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[int, float]:
    """{k: share of questions with a relevant passage among their first k}, where `relevant[i][j]`
    says whether the j-th passage retrieved for question i holds its answer; 0.0 without questions."""
    n = len(relevant)
    return {k: (sum(any(row[:k]) for row in relevant) / n if n else 0.0) for k in ks}
