"""text_similarity's metrics, each from a well-kept library, each a score in [0, 1].

| metric | computed by |
|---|---|
| fuzzy_match | rapidfuzz `fuzz.WRatio` with `utils.default_process`, / 100 (OpenAI's python-grader example's scorer) |
| bleu | sacrebleu `sentence_bleu` (13a tokens, exponential smoothing), / 100 |
| gleu | nltk `sentence_gleu` (Google BLEU) over whitespace tokens |
| meteor | nltk `meteor_score` over lower-cased whitespace tokens (synonyms: below) |
| rouge_1..5, rouge_l | rouge-score `RougeScorer` F-measure (its default tokenizer, no stemming) |
| cosine | all-MiniLM-L6-v2 embeddings (tunesmith's retrieval embedder), not OpenAI's text-embedding-3-large |

meteor matches WordNet synonyms when nltk's wordnet corpus is installed, else exact and stem matches
only. The libraries load on first use, so that parsing a grader stays light.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Callable

from ..errors import GraderError


def fuzzy_match(text: str, reference: str) -> float:
    from rapidfuzz import fuzz, utils

    return fuzz.WRatio(text, reference, processor=utils.default_process) / 100.0


def bleu(text: str, reference: str) -> float:
    # sacrebleu sums logs: an exact match comes out as 100.00000000000004
    return min(1.0, _sentence_bleu().sentence_score(text, [reference]).score / 100.0) if text.strip() else 0.0


@lru_cache(maxsize=1)
def _sentence_bleu() -> Any:
    from sacrebleu.metrics import BLEU

    # effective_order: a short answer without 4-grams is not scored 0 for that alone (sacrebleu's own
    # advice for sentence-level BLEU)
    return BLEU(effective_order=True)


def gleu(text: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([reference.split()], text.split()))


def meteor(text: str, reference: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([reference.lower().split()], text.lower().split(), wordnet=_wordnet()))


@lru_cache(maxsize=1)
def _wordnet() -> Any:
    """nltk's WordNet when its corpus is installed (nltk.download('wordnet')), else a WordNet without
    synonyms: METEOR then matches exact words and Porter stems only (no download at grading time)."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        return _NoSynonyms()


class _NoSynonyms:
    """The part of nltk's WordNet API that METEOR calls, answering that no word has synonyms."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


def rouge(n: str) -> Callable[[str, str], float]:
    """ROUGE-n (n in 1..5) or ROUGE-L F-measure."""
    key = "rougeL" if n == "l" else f"rouge{n}"

    def score(text: str, reference: str) -> float:
        return float(_rouge_scorer(key).score(reference, text)[key].fmeasure)

    return score


@lru_cache(maxsize=8)
def _rouge_scorer(key: str) -> Any:
    import logging

    from rouge_score.rouge_scorer import RougeScorer

    # rouge-score logs "Using default tokenizer." through absl at INFO on every scorer it builds
    logging.getLogger("absl").setLevel(logging.WARNING)
    return RougeScorer([key])


def cosine(text: str, reference: str) -> float:
    vectors = _embedder().encode([text, reference])  # (2, d), unit length
    return float(max(0.0, min(1.0, float(vectors[0] @ vectors[1]))))


_EMBEDDER_LOCK = threading.Lock()


def _embedder() -> Any:
    with _EMBEDDER_LOCK:  # lru_cache alone lets two threads (grade_many) load the model at once
        return _load_embedder()


@lru_cache(maxsize=1)
def _load_embedder() -> Any:
    from ..retrieval.embed import Embedder

    return Embedder.load()


METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu, "meteor": meteor, "cosine": cosine,
    **{f"rouge_{n}": rouge(n) for n in ("1", "2", "3", "4", "5", "l")},
}


def similarity(metric: str, text: str, reference: str) -> float:
    """`metric`'s score of `text` against `reference`, in [0, 1]."""
    try:
        return METRICS[metric](text, reference)
    except ModuleNotFoundError as exc:
        raise GraderError(f"text_similarity's {metric} needs the {exc.name} package: "
                          f"pip install 'tunesmith[graders]'") from None
