"""Text metrics of a generated answer against its reference: exact match, token F1, ROUGE-L.

Plain functions over strings (SQuAD-style normalisation), shared by `eval` and `compare`.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD evaluation's rule)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


LOOP_MIN_WORDS = 8
"""Shorter answers are never called looping: 'Yes, yes.' is an answer."""
LOOP_MIN_REPEATS = 3
LOOP_COVERAGE = 0.5
"""An answer loops when one phrase, repeated at least LOOP_MIN_REPEATS times, fills at least this
share of its words ("Hi Alex, Hi Alex, ..." until the token limit)."""


def loops(text: str, max_phrase_words: int = 8) -> bool:
    """Whether a generated answer is degenerate: some phrase of 1 to `max_phrase_words` words
    repeats, back to back or not, over most of the answer (LOOP_COVERAGE of its words)."""
    words = answer_tokens(text)
    if len(words) < LOOP_MIN_WORDS:
        return False
    for n in range(1, min(max_phrase_words, len(words) // LOOP_MIN_REPEATS) + 1):
        repeats: dict[tuple[str, ...], int] = {}
        last_start: dict[tuple[str, ...], int] = {}
        for i in range(len(words) - n + 1):
            phrase = tuple(words[i:i + n])
            if i - last_start.get(phrase, -n) >= n:  # occurrences that do not overlap ("a a a")
                repeats[phrase] = repeats.get(phrase, 0) + 1
                last_start[phrase] = i
        most = max(repeats.values())
        if most >= LOOP_MIN_REPEATS and most * n >= LOOP_COVERAGE * len(words):
            return True
    return False


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall, counting repeated tokens (bag of words)."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) over normalised tokens: LCS-based precision and recall."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


STYLE_MARKERS = 12
"""Words kept as the training answers' style markers (brand, place and house terms)."""
STYLE_MIN_SHARE = 0.02
"""A marker appears in at least this share of the training answers (10 of the demo's ~400)."""


def _words(text: str) -> set[str]:
    """Distinct normalised alphabetic words of 3+ letters (numbers and short function words carry no style)."""
    return {w for w in answer_tokens(text) if len(w) >= 3 and w.isalpha()}


def style_markers(answers: list[str], general_texts: list[str], n: int = STYLE_MARKERS,
                  min_share: float = STYLE_MIN_SHARE) -> list[str]:
    """The `n` words most typical of the training answers against general text.

    A word's score is share(answers using it) / (share(general texts using it) + 1 / n_general):
    brand names and house terms score high, common words (in general text too) low. Only words in at
    least `min_share` of the answers count, so a marker is a habit, not one answer's fact.
    """
    answer_counts: dict[str, int] = {}
    for text in answers:
        for w in _words(text):
            answer_counts[w] = answer_counts.get(w, 0) + 1
    general_counts: dict[str, int] = {}
    for text in general_texts:
        for w in _words(text):
            general_counts[w] = general_counts.get(w, 0) + 1
    n_answers, n_general = max(len(answers), 1), max(len(general_texts), 1)
    scores = {w: (c / n_answers) / (general_counts.get(w, 0) / n_general + 1 / n_general)
              for w, c in answer_counts.items() if c / n_answers >= min_share}
    return sorted(scores, key=lambda w: (-scores[w], w))[:n]


def style_match(prediction: str, markers: list[str]) -> float:
    """1.0 when the answer uses at least one style marker, else 0.0."""
    return float(bool(_words(prediction) & set(markers)))


def answer_length(text: str) -> int:
    """Length in normalised words, the unit of the length ratio (sum of answer / sum of reference lengths)."""
    return len(answer_tokens(text))
