"""BM25 over passages (bm25s), and reciprocal rank fusion of several rankings (pure NumPy).

BM25 scores the words a query shares with a passage, each weighted by how rare it is in the
knowledge source: exactly the domain terms (bygglov, ROT, BBR) that a small English embedding model
maps near unrelated words. It needs no model and builds in milliseconds, so it is not cached.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

_WORD = re.compile(r"\w+")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words without English stop words (bm25s's list), Snowball-stemmed so that
    'permits' meets 'permit': 'Do I need building permits?' -> ['need', 'build', 'permit']. Stemming
    raised BM25's recall@5 on the FAQ from 0.57 to 0.64 (docs/compare.md)."""
    from bm25s.stopwords import STOPWORDS_EN

    return _stemmer().stemWords([w for w in _WORD.findall(text.lower()) if w not in STOPWORDS_EN])


@functools.cache
def _stemmer() -> Any:
    import Stemmer  # PyStemmer: the Snowball stemmers, in C

    return Stemmer.Stemmer("english")


@dataclass
class LexicalIndex:
    """A BM25 index (Robertson's Okapi BM25 with bm25s's defaults k1 = 1.5, b = 0.75) of passage texts."""

    bm25: Any
    size: int

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index([bm25_tokens(t) for t in texts], show_progress=False)
        return cls(bm25, len(texts))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(q, n) BM25 scores; 0 where a passage shares no word with the query (unknown words count for nothing)."""
        out = np.zeros((len(queries), self.size), np.float32)
        for i, query in enumerate(queries):
            out[i] = self.bm25.get_scores(bm25_tokens(query))
        return out


def rankings(scores: np.ndarray, positive_only: bool = False) -> list[list[int]]:
    """Per row of (q, n) scores: passage indices, best first (ties in passage order); with
    `positive_only`, only the passages that score above 0 (for BM25: that share a word)."""
    order = np.argsort(-scores, axis=1, kind="stable")  # (q, n)
    if not positive_only:
        return [row.tolist() for row in order]
    return [[int(j) for j in row if scores[i, j] > 0] for i, row in enumerate(order)]


def fuse_rankings(ranked: Sequence[Sequence[int]], rrf_k: int) -> list[int]:
    """Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): each passage scores
    sum over the rankings that hold it of 1 / (rrf_k + rank), rank counted from 1; best first, ties
    broken by the order in which the rankings first list them (the first ranking's, then the next's)."""
    score: dict[int, float] = {}
    first_seen: dict[int, int] = {}
    for ranking in ranked:
        for rank, j in enumerate(ranking, start=1):
            score[j] = score.get(j, 0.0) + 1.0 / (rrf_k + rank)
            first_seen.setdefault(j, len(first_seen))
    return sorted(score, key=lambda j: (-score[j], first_seen[j]))
