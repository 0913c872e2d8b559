"""tradeoff.png of a search: each trial's task gain against its forgetting (the worst probe's share of its
budget, as the verdict reads it), the budget line, and the chosen trial marked."""

from __future__ import annotations

import io
from pathlib import Path

from ..files import write_atomic_bytes
from .trials import TrialRecord

MAX_SHOWN_SHARE = 3.0
"""Shares above this (a zero budget gives infinity) are drawn at the top of the axis."""


def plot_trials(records: list[TrialRecord], chosen: TrialRecord | None, path: Path) -> bool:
    """Draw the trials with figures (completed ones filled, pruned ones hollow); False when none has any."""
    shown = [r for r in records if r.task_gain is not None and r.budget_share is not None]
    if not shown:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in shown:
        share = min(r.budget_share, MAX_SHOWN_SHARE) * 100
        color = "#2e8b57" if r.within_budget else "#d1495b"
        filled = r.state == "complete"
        ax.scatter([r.task_gain * 100], [share], s=40, zorder=3, edgecolors=color,
                   facecolors=color if filled else "none")
        ax.annotate(f"{r.run_dir}{'' if filled else ' (pruned)'}", (r.task_gain * 100, share),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    if chosen is not None and chosen in shown:
        ax.scatter([chosen.task_gain * 100], [min(chosen.budget_share, MAX_SHOWN_SHARE) * 100], marker="*", s=260,
                   facecolors="none", edgecolors="black", linewidths=1.2, zorder=4, label=f"chosen: {chosen.run_dir}")
    ax.axhline(100, color="#d1495b", linestyle="--", linewidth=1, label="forgetting budget (each probe's own limit)")
    ax.set_xlabel("task gain: held-out loss decrease of the selected step (%)")
    ax.set_ylabel("worst probe: share of its budget (%)")
    ax.set_title("trials: filled completed, hollow pruned; green within budget", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic_bytes(path, buffer.getvalue())
    return True
