"""The forgetting budget: is a measured result within the configured limits, and if not, why."""

from __future__ import annotations

from ..config import ForgettingBudget
from .measure import ForgettingResult


def budget_checks(budget: ForgettingBudget, result: ForgettingResult) -> list[tuple[str, bool, str]]:
    """One (probe name, ok, sentence) per probe that the budget covers.

    Perplexity probes: relative increase vs `max_ppl_increase`; multiple-choice probes: accuracy
    drop vs `max_accuracy_drop`, counted only when the drop's 95% CI excludes zero (small probe
    sets move in steps of one item); KL probes: mean KL vs `max_kl`. Point estimates are compared,
    and the sentence carries the 95% CI so a reader can see how sure the call is.
    """
    checks = []
    for score in result.probes.values():
        lo, hi = score.ci95
        if score.kind == "perplexity":
            rise = score.relative_delta or 0.0
            checks.append((score.name, rise <= budget.max_ppl_increase,
                           f"{score.name} perplexity {rise:+.1%} (limit +{budget.max_ppl_increase:.0%}; "
                           f"{score.base:.2f} -> {score.tuned:.2f}, 95% CI of change [{lo:+.2f}, {hi:+.2f}])"))
        elif score.kind == "choice":
            drop = -score.delta
            significant = hi < 0  # the whole interval of the change is below zero
            checks.append((score.name, drop <= budget.max_accuracy_drop or not significant,
                           f"{score.name} accuracy {score.delta * 100:+.1f} pt (limit -{budget.max_accuracy_drop * 100:.0f} pt; "
                           f"{score.base:.1%} -> {score.tuned:.1%}, 95% CI [{lo * 100:+.1f}, {hi * 100:+.1f}] pt)"))
        elif score.kind == "kl":
            checks.append((score.name, score.tuned <= budget.max_kl,
                           f"{score.name} KL {score.tuned:.3f} nats/token (limit {budget.max_kl:g}; "
                           f"95% CI [{lo:.3f}, {hi:.3f}])"))
    return checks


def within_budget(budget: ForgettingBudget, result: ForgettingResult) -> tuple[bool, str]:
    """(True, summary) when every covered probe is within its limit, else (False, what broke it)."""
    checks = budget_checks(budget, result)
    broken = [text for _, ok, text in checks if not ok]
    if broken:
        return False, "over budget: " + "; ".join(broken)
    return True, "within budget: " + "; ".join(text for _, _, text in checks)
