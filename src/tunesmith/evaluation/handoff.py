"""Answers of a run trained with `retrieval:` (RAFT): a hand-off recognised and counted (never scored
as a wrong fact), citations `[n]` turned into their passages' sources, and the rates compare.json's
found / missed / unanswerable splits report. Pure functions over strings and arrays."""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from .bootstrap import bootstrap_ci, paired_summary
from .text_metrics import normalize_answer, token_f1

CITATION = re.compile(r"\[(\d{1,3})\]")
"""A citation in an answer: the number of a passage in its prompt, as `[2]`."""
CITATION_START = re.compile(r"\[\d{0,3}")
"""What a streamed piece may end with while a citation is still being written: `[`, `[1`, `[12`."""
HANDOFF_F1 = 0.8
"""An answer whose words (citations left out) have at least this token F1 with the hand-off is one:
light variants — "I cannot find that in our documentation, I will pass your question on to a
colleague" — count, while an answer that borrows a few of its words does not."""
RATES = {
    "found": ("handoff_rate", "false_handoff_rate"),
    "missed": ("handoff_rate", "made_up_rate"),
    "unanswerable": ("handoff_rate", "made_up_rate"),
}
"""The rates each split reports: `false_handoff_rate` where a passage held the answer (a hand-off there
is wrong), `made_up_rate` where none did (an answer there is made up: answered without a hand-off)."""


CONTRACTIONS = tuple((re.compile(pattern, re.IGNORECASE), full) for pattern, full in (
    (r"\bcan['’]t\b", "cannot"), (r"n['’]t\b", " not"), (r"['’]ll\b", " will"), (r"['’]m\b", " am"),
    (r"['’]re\b", " are"), (r"['’]ve\b", " have")))
"""English contractions written out, so "I'll" and "I will" are the same words to `is_handoff`."""


def _words(text: str) -> str:
    for pattern, full in CONTRACTIONS:
        text = pattern.sub(full, text)
    return normalize_answer(CITATION.sub(" ", text))


def is_handoff(answer: str, handoff: str) -> bool:
    """Whether the answer is the hand-off: its words (case, punctuation, articles, contractions and
    citations aside) contain the hand-off's, or are within HANDOFF_F1 of them."""
    said, wanted = _words(answer), _words(handoff)
    return bool(wanted) and (wanted in said or token_f1(said, wanted) >= HANDOFF_F1)


def handoff_flags(answers: Sequence[str], handoff: str) -> np.ndarray:
    """(n,) 1.0 where the answer is a hand-off."""
    return np.array([float(is_handoff(a, handoff)) for a in answers])


def cited_numbers(answer: str) -> list[int]:
    """The passage numbers an answer cites, in order of first mention."""
    return list(dict.fromkeys(int(m) for m in CITATION.findall(answer)))


def with_sources(answer: str, sources: Sequence[str]) -> str:
    """The answer with each citation `[n]` of a passage in its prompt (`sources[n - 1]`) written as that
    passage's source, `[permits.pdf:p12]`; a number no passage has stays as it is."""
    def source(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f"[{sources[n - 1]}]" if 1 <= n <= len(sources) else match.group(0)

    return CITATION.sub(source, answer)


class SourcedStream:
    """An answer's streamed pieces with its citations written as sources, as `with_sources` writes the
    whole answer: the pieces joined equal `with_sources` of the answer. A piece that ends in what may
    be the start of a citation (`... weeks. [`) holds that back until the next piece or `flush` says
    whether it is one; a citation has no `[` but its first character, so no held text splits one."""

    def __init__(self, sources: Sequence[str]) -> None:
        self.sources, self.held = list(sources), ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        start = text.rfind("[")
        cut = start if start >= 0 and CITATION_START.fullmatch(text, start) else len(text)
        self.held = text[cut:]
        return with_sources(text[:cut], self.sources)

    def flush(self) -> str:
        """What is held at the end of the answer."""
        text, self.held = self.held, ""
        return with_sources(text, self.sources)


def sources_line(answer: str, sources: Sequence[str]) -> str:
    """`sources: [2] permits.pdf:p12` for the passages an answer cites (those its prompt had), or ''."""
    cited = [f"[{n}] {sources[n - 1]}" for n in cited_numbers(answer) if 1 <= n <= len(sources)]
    return "sources: " + "; ".join(cited) if cited else ""


def citation_correct(answer: str, holds: Sequence[bool]) -> float:
    """1.0 when the answer cites a passage of its prompt that holds the answer (`holds[n - 1]`, the rule
    of the gold passage), 0.0 when it cites none, or only others."""
    return float(any(1 <= n <= len(holds) and holds[n - 1] for n in cited_numbers(answer)))


def _summary(values: np.ndarray) -> dict[str, Any]:
    value = float(values.mean()) if len(values) else math.nan
    return {"value": value, "ci95": list(bootstrap_ci(values, np.ones(len(values))))}


def add_rates(split: dict[str, Any], name: str, handoffs: dict[str, np.ndarray],
              comparisons: dict[str, tuple[str, str]], cited: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """A compare split (its `systems` and `deltas`) with the split's RATES added: each system's value
    and 95% interval, each comparison's paired difference; `cited` adds `citation_accuracy`
    (per question, the cited passage holds the answer) for the systems that had passages."""
    rates = {"handoff_rate": handoffs}
    if "made_up_rate" in RATES[name]:
        rates["made_up_rate"] = {s: 1.0 - h for s, h in handoffs.items()}
    if "false_handoff_rate" in RATES[name]:
        rates["false_handoff_rate"] = handoffs
    if cited:
        rates["citation_accuracy"] = cited
    for metric, per_system in rates.items():
        for system, values in per_system.items():
            split["systems"][system][metric] = _summary(values)
        for comparison, (a, b) in comparisons.items():
            if a in per_system and b in per_system:
                paired = paired_summary(per_system[a], per_system[b], np.ones(len(per_system[a])))
                split["deltas"][comparison][metric] = {"delta": paired["delta"], "ci95": paired["ci95"]}
    return split
