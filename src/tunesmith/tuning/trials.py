"""A search's trials as records read from their run directories, the choice among them (the lowest held-out
loss within the forgetting budget), and the trials table (trials.csv, trials.json)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import ForgettingBudget
from ..forgetting.budget import KIND_OF_METRIC, budget_share
from ..run import RunDir
from ..training.selection import select_final

STATES = ("complete", "pruned", "failed", "interrupted", "running")
"""A trial's state in the table: finished (complete), stopped by the pruner, failed on its own (a non-finite
loss), killed or stopped and resumed as a later trial in the same run directory, or still training."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial, as the trials table shows it; figures are of the step training selected (for a pruned
    trial: the step it would have selected when it stopped)."""

    number: int
    """Optuna's trial number."""
    state: str
    """One of STATES."""
    run_dir: str
    """Its run directory, relative to the search's folder (trainable, evaluable and exportable on its own)."""
    settings: dict[str, Any]
    """The settings it trained with, by config key (lr, epochs or max_steps, lora.r, forgetting.replay_fraction)."""
    base_val_loss: float | None = None
    """Held-out loss of the base model."""
    val_loss: float | None = None
    """Held-out loss of the selected step: the search's objective."""
    selected_step: int | None = None
    """The step whose weights are the trial's model."""
    steps: int | None = None
    """Optimizer steps it trained (fewer than planned when pruned)."""
    within_budget: bool | None = None
    """Whether the selected step is within the forgetting budget, by the probes measured during training."""
    budget_share: float | None = None
    """The worst probe's share of its budget at the selected step (1.0 is the limit; `budget_share`)."""
    worst_probe: str | None = None
    """The probe with that share."""
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per probe at the selected step: metric, base, tuned, delta, relative_delta, ci95 (of delta), share."""
    minutes: float | None = None
    """Wall time of the trial in the session that finished it."""
    note: str = ""
    """Why it was pruned or failed, or which trial resumed it."""

    @property
    def task_gain(self) -> float | None:
        """(base - selected) / base held-out loss: 0.2 is 20% lower."""
        if self.val_loss is None or not self.base_val_loss:
            return None
        return (self.base_val_loss - self.val_loss) / self.base_val_loss

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "task_gain": self.task_gain}


def read_trial(run_path: Path, budget: ForgettingBudget, **fields_: Any) -> TrialRecord:
    """The record of the trial trained in `run_path`, its figures read from metrics.jsonl and summary.json;
    `fields_` are the ones the study knows (number, state, run_dir, settings, minutes, note)."""
    if fields_["state"] == "interrupted" or not RunDir.is_run(run_path):
        return TrialRecord(**fields_)
    run = RunDir(run_path)
    config = run.config()
    length = {"max_steps": config.max_steps} if config.max_steps else {"epochs": config.epochs}
    rank = {"lora.r": config.lora.r} if config.method != "full" else {}
    settings = {"lr": config.lr, **length, **rank, "forgetting.replay_fraction": config.forgetting.replay_fraction}
    summary = run.summary()
    return TrialRecord(**{**fields_, "settings": settings}, **figures(run.metrics(), summary, budget))


def figures(rows: list[dict[str, Any]], summary: dict[str, Any] | None, budget: ForgettingBudget) -> dict[str, Any]:
    """The record's figures from a run's metrics rows: at summary.json's selected step when the run
    finished, else at the step `select_final` picks among the evaluations so far."""
    vals = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    step = summary["selected_step"] if summary else select_final(rows)[0]
    if step is None:
        step = max((s for s in vals if s > 0), default=None)
    if step is None:
        return {"base_val_loss": vals.get(0)}
    probes_row = next((r for r in rows if r.get("step") == step and "probes" in r), None)
    probes = probe_figures(probes_row["probes"], budget) if probes_row else {}
    worst = max(probes, key=lambda name: probes[name]["share"]) if probes else None
    return {"base_val_loss": vals.get(0), "val_loss": vals.get(step), "selected_step": step,
            "steps": max((r["step"] for r in rows if "loss" in r), default=0),
            "within_budget": probes_row["within_budget"] if probes_row else None,
            "budget_share": probes[worst]["share"] if worst else None, "worst_probe": worst, "probes": probes}


def probe_figures(probes: dict[str, dict[str, Any]], budget: ForgettingBudget) -> dict[str, dict[str, Any]]:
    """A metrics row's probes, each with its share of the budget (`budget_share`, the verdict's rule)."""
    out = {}
    for name, p in probes.items():
        ci95 = p.get("ci95") or [-1.0, -1.0]  # rows from before probes carried intervals: a drop counts
        share = budget_share(budget, KIND_OF_METRIC.get(p.get("metric"), "kl"), p["delta"], p["tuned"],
                             p.get("relative_delta"), ci95)
        out[name] = {"metric": p.get("metric"), "base": p.get("base"), "tuned": p["tuned"], "delta": p["delta"],
                     "relative_delta": p.get("relative_delta"), "ci95": list(ci95), "share": share}
    return out


def choose(records: list[TrialRecord]) -> tuple[TrialRecord | None, str]:
    """The search's result and why: the completed trial with the lowest held-out loss within the budget.
    When none is within, the one closest to the budget (lowest worst-probe share, then loss): the budget is
    the user's limit, so the least forgetting comes first; it is said plainly. Pruned trials have no final
    model and are never chosen."""
    done = [r for r in records if r.state == "complete" and r.val_loss is not None]
    if not done:
        return None, "no trial completed"
    within = [r for r in done if r.within_budget]
    if within:
        best = min(within, key=lambda r: (r.val_loss, r.number))
        return best, f"lowest held-out loss of the {len(within)} completed trial(s) within the forgetting budget"
    best = min(done, key=lambda r: (_share(r), r.val_loss, r.number))
    return best, (f"NO trial was within the forgetting budget: {best.run_dir} came closest (worst probe "
                  f"{best.worst_probe} at {_share(best):.0%} of its budget); widen the budget, lower tune.lr "
                  "or raise tune.replay_fraction")


def _share(record: TrialRecord) -> float:
    return record.budget_share if record.budget_share is not None else math.inf


def table_columns(records: list[TrialRecord]) -> list[str]:
    """trials.csv's columns: the settings, the figures, then four per probe (delta, its interval, share)."""
    settings = list(dict.fromkeys(k for r in records for k in r.settings))
    probes = list(dict.fromkeys(name for r in records for name in r.probes))
    per_probe = [f"{name}.{what}" for name in probes for what in ("delta", "ci95_low", "ci95_high", "share")]
    return ["trial", "state", "run_dir", *settings, "base_val_loss", "val_loss", "task_gain", "selected_step", "steps",
            "within_budget", "budget_share", "worst_probe", *per_probe, "minutes", "note"]


def table_csv(records: list[TrialRecord]) -> str:
    """trials.csv: one row per trial, a column per setting and per probe figure."""
    columns = table_columns(records)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row: dict[str, Any] = {**r.to_dict(), "trial": r.number, **r.settings}
        for name, p in r.probes.items():
            row.update({f"{name}.delta": p["delta"], f"{name}.ci95_low": p["ci95"][0],
                        f"{name}.ci95_high": p["ci95"][1], f"{name}.share": p["share"]})
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return out.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def table_json(records: list[TrialRecord], chosen: TrialRecord | None, choice: str) -> str:
    """trials.json: the records in full, and which one the search chose and why."""
    return json.dumps({"chosen": chosen.number if chosen else None,
                       "chosen_run_dir": chosen.run_dir if chosen else None, "choice": choice,
                       "trials": [r.to_dict() for r in records]}, indent=2, default=str) + "\n"
