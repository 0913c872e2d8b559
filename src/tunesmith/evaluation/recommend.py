"""The recommendation of `tunesmith compare`, written from its numbers by fixed rules (docs/compare.md).

A gain counts only when its paired 95% bootstrap interval lies wholly above zero (a loss: wholly
below), so a small sample says "not shown" rather than guessing.

- R1 retrieval gives facts: token F1 of base+RAG minus base, on held-out questions.
- R2 fine-tuning gives seen facts: token F1 of tuned minus base, on training questions.
- R3 fine-tuning gives form: style match of tuned minus base rises, or the length error
  |log(answer length / reference length)| falls, on all questions.
- R4 the two add up: token F1 of tuned+RAG minus base+RAG, on held-out questions, is not a loss.

Choice: "both" when R1 holds, fine-tuning helps (R3, or R4 a gain) and R4 shows no loss; "rag" when
R1 holds otherwise; "fine-tune" when R1 fails but R2 or R3 holds; else "undecided".
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Delta:
    """A paired difference between two systems with its 95% bootstrap interval."""

    value: float
    lo: float
    hi: float

    @property
    def measured(self) -> bool:
        """False for a split that was not asked for (`compare --seen 0`): NaN, never a finding."""
        return math.isfinite(self.value) and math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def gain(self) -> bool:
        return self.measured and self.lo > 0

    @property
    def loss(self) -> bool:
        return self.measured and self.hi < 0

    def text(self) -> str:
        return f"{self.value:+.3f} (95% CI [{self.lo:+.3f}, {self.hi:+.3f}])"


@dataclass(frozen=True)
class Evidence:
    rag_facts: Delta
    """Token F1, base+RAG minus base, held-out questions."""
    tuning_seen_facts: Delta
    """Token F1, tuned minus base, training questions."""
    tuning_style: Delta
    """Style match, tuned minus base, all questions."""
    tuning_length_error: Delta
    """Length error, tuned minus base, all questions (negative is better)."""
    tuning_with_rag: Delta
    """Token F1, tuned+RAG minus base+RAG, held-out questions."""


@dataclass(frozen=True)
class Recommendation:
    choice: str
    """both, rag, fine-tune or undecided."""
    text: str
    """One sentence per rule, then the recommendation."""


def recommend(e: Evidence) -> Recommendation:
    """Apply rules R1-R4 (module docstring) to the measured differences."""
    form = e.tuning_style.gain or e.tuning_length_error.loss
    lines = [
        ("RAG adds" if e.rag_facts.gain else "RAG shows no significant gain:") +
        f" {e.rag_facts.text()} token F1 on facts only in the knowledge source.",
        ("Fine-tuning adds" if e.tuning_seen_facts.gain else "Fine-tuning shows no significant gain:") +
        f" {e.tuning_seen_facts.text()} token F1 on facts seen in training.",
        ("Fine-tuning changes the form:" if form else "Fine-tuning shows no significant change of form:") +
        f" style match {e.tuning_style.text()}, length error {e.tuning_length_error.text()}.",
        f"With retrieval, tuned vs base: {e.tuning_with_rag.text()} token F1 on held-out questions.",
    ]
    # A split that was not measured says nothing: its sentence is left out rather than read "+nan".
    measured = [e.rag_facts.measured, e.tuning_seen_facts.measured,
                e.tuning_style.measured and e.tuning_length_error.measured, e.tuning_with_rag.measured]
    lines = [line for line, ok in zip(lines, measured) if ok]
    if e.rag_facts.gain and (form or e.tuning_with_rag.gain) and not e.tuning_with_rag.loss:
        choice, advice = "both", "use both: fine-tune for form, retrieve for facts (tuned+RAG)."
    elif e.rag_facts.gain:
        choice, advice = "rag", "use retrieval with the base model (base+RAG)" + (
            "; fine-tuning costs accuracy when combined with retrieval." if e.tuning_with_rag.loss else ".")
    elif e.tuning_seen_facts.gain or form:
        choice, advice = "fine-tune", "fine-tune (tuned); retrieval did not help on these questions."
    else:
        choice, advice = "undecided", ("no method shows a significant gain on this sample: answer more questions "
                                       "(--limit) or check the knowledge source.")
    return Recommendation(choice, " ".join(lines) + f" Recommendation: {advice}")
