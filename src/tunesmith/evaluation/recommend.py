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

A run trained with retrieval (RAFT, docs/raft.md) adds, tuned+RAG against base+RAG:
- R5 it hands off instead of making up: made_up_rate on the unanswerable split falls.
- R6 it keeps the facts the passages hold: token F1 on the found split is not a loss, and
  false_handoff_rate there does not rise.
Choice "raft" when R5 and R6 hold: the tuned model with retrieval, which answers from the passages
or hands off; otherwise the choice above, with what RAFT did not show said.
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
class RaftEvidence:
    """tuned+RAG minus base+RAG on the splits of a run trained with retrieval."""

    made_up_unanswerable: Delta
    """made_up_rate on the unanswerable split (negative is better)."""
    facts_found: Delta
    """Token F1 on the found split."""
    false_handoff_found: Delta
    """false_handoff_rate on the found split (negative is better)."""


@dataclass(frozen=True)
class Recommendation:
    choice: str
    """both, rag, fine-tune, undecided, or (a run trained with retrieval) raft."""
    text: str
    """One sentence per rule, then the recommendation."""


def recommend(e: Evidence, raft: RaftEvidence | None = None) -> Recommendation:
    """Apply rules R1-R4, and with `raft` R5-R6 (module docstring), to the measured differences."""
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
    if raft is not None:
        choice, advice = raft_rules(raft, lines, choice, advice)
    return Recommendation(choice, " ".join(lines) + f" Recommendation: {advice}")


def raft_rules(r: RaftEvidence, lines: list[str], choice: str, advice: str) -> tuple[str, str]:
    """R5 and R6 of a run trained with retrieval: their sentences added to `lines`, and the choice."""
    r5 = r.made_up_unanswerable.loss
    r6 = r.facts_found.measured and not r.facts_found.loss and not r.false_handoff_found.gain
    lines.append(("Trained with retrieval, it makes up fewer answers" if r5 else
                  "Trained with retrieval, it shows no significant fall of made-up answers") +
                 f" where no passage holds the answer: {r.made_up_unanswerable.text()} made-up rate vs base+RAG.")
    if r.facts_found.measured:
        lines.append(f"Where a passage holds it: {r.facts_found.text()} token F1, "
                     f"{r.false_handoff_found.text()} false hand-off rate vs base+RAG.")
    if r5 and r6:
        return "raft", "use the model trained with retrieval (tuned+RAG): it answers from the passages or hands off."
    return choice, advice
