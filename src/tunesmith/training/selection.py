"""Which evaluation's weights become the final model."""

from __future__ import annotations

from typing import Any


def select_final(metrics: list[dict[str, Any]]) -> tuple[int | None, str]:
    """The evaluation step whose weights become the final model, and why.

    The best validation loss among evaluations within the forgetting budget; when none is within,
    the best validation loss, said plainly. None (the last step) when probes were not measured.
    Objective grpo's validation loss is minus its held-out greedy reward: the best loss is the best reward,
    and the reason says so.
    """
    vals = {r["step"]: r["val_loss"] for r in metrics if "val_loss" in r and r["step"] > 0}
    within = {r["step"]: r["within_budget"] for r in metrics if "within_budget" in r}
    if not within or not vals:
        return None, "last step"
    measure = "held-out reward" if any("reward" in r for r in metrics if "val_loss" in r) else "validation loss"
    ok = [s for s in vals if within.get(s)]
    if ok:
        return min(ok, key=vals.get), f"best {measure} within the forgetting budget"
    return min(vals, key=vals.get), f"best {measure}; NO evaluation was within the forgetting budget"
