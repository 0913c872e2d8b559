"""The forgetting budget: is a measured result within the configured limits, and if not, why."""

from __future__ import annotations

from ..config import ForgettingBudget
from .measure import ForgettingResult

KIND_OF_METRIC = {"perplexity": "perplexity", "accuracy": "choice", "kl_per_token": "kl"}
"""A probe's kind from its metric, as metrics.jsonl rows name it."""


def budget_share(budget: ForgettingBudget, kind: str, delta: float, tuned: float, relative_delta: float | None,
                 ci95: tuple[float, float] | list[float]) -> float:
    """How much of its budget a probe has used: 1.0 is the limit, over 1 is over budget.

    Perplexity: relative increase / `max_ppl_increase`; multiple choice: accuracy drop /
    `max_accuracy_drop`, 0 when the drop's 95% CI reaches zero (small probe sets move in steps of
    one item); KL: mean KL / `max_kl`. The verdict and the report's trade-off plot both read this,
    so they cannot disagree."""
    if kind == "perplexity":
        used, limit = relative_delta or 0.0, budget.max_ppl_increase
    elif kind == "choice":
        used, limit = (-delta if ci95[1] < 0 else 0.0), budget.max_accuracy_drop
    else:
        used, limit = tuned, budget.max_kl
    if limit == 0:
        return 0.0 if used <= 0 else float("inf")
    return used / limit


def budget_checks(budget: ForgettingBudget, result: ForgettingResult) -> list[tuple[str, bool, str]]:
    """One (probe name, ok, sentence) per probe that the budget covers (`budget_share` at most 1).
    Point estimates are compared, and the sentence carries the 95% CI so a reader can see how sure
    the call is."""
    checks = []
    for score in result.probes.values():
        lo, hi = score.ci95
        ok = budget_share(budget, score.kind, score.delta, score.tuned, score.relative_delta, score.ci95) <= 1.0
        if score.kind == "perplexity":
            rise = score.relative_delta or 0.0
            checks.append((score.name, ok,
                           f"{score.name} perplexity {rise:+.1%} (limit +{budget.max_ppl_increase:.0%}; "
                           f"{score.base:.2f} -> {score.tuned:.2f}, 95% CI of change [{lo:+.2f}, {hi:+.2f}])"))
        elif score.kind == "choice":
            checks.append((score.name, ok,
                           f"{score.name} accuracy {score.delta * 100:+.1f} pt "
                           f"(limit -{budget.max_accuracy_drop * 100:.0f} pt; "
                           f"{score.base:.1%} -> {score.tuned:.1%}, 95% CI [{lo * 100:+.1f}, {hi * 100:+.1f}] pt)"))
        elif score.kind == "kl":
            checks.append((score.name, ok,
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
