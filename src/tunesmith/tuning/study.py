"""The Optuna side of a search: the study in the output folder's SQLite file (tune.db: resumable, and
shareable by several processes), a sampler seeded per trial, the pruner, the recovery of trials that a
killed process left running, and the training subscriber that reports evaluations and prunes.

Why a sampler per trial: a seeded sampler restarted in a new process does not continue its random
stream, so a resumed search would draw other settings than an uninterrupted one. Trial k's sampler is
seeded with (seed, k) and sees the finished trials, so its draw is a function of those alone.
"""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..run import RunDir
from ..training.events import ProbesEvent, TrainingEvent
from .space import TuneConfig

DB_NAME = "tune.db"
STUDY_NAME = "tunesmith"
MAX_CONSTRAINT_SHARE = 100.0
"""A budget share above this (a zero budget gives infinity) is passed to the sampler as this: it only
needs to know the trial is far over."""


def optuna_module() -> Any:
    """Optuna, imported on first use (it loads SQLAlchemy) and quiet: tunesmith prints the search's progress."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_study(folder: Path, search: dict[str, Any], tune: TuneConfig) -> Any:
    """The study in FOLDER/tune.db, created or continued; a folder holding a search of other settings is
    refused (`search`: what makes two searches the same, stored with the study)."""
    optuna = optuna_module()
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{(folder / DB_NAME).resolve()}",
                                direction="minimize", load_if_exists=True, pruner=make_pruner(tune))
    search = json.loads(json.dumps(search))  # as the storage gives it back (tuples as lists)
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", search)
    elif stored != search:
        changed = sorted(k for k in {*stored, *search} if stored.get(k) != search.get(k))
        raise RunDirError(f"'{folder}' holds a search of other settings (changed: {', '.join(changed)}); run the same "
                          "config to continue it, choose another --output, or pass --overwrite to start over")
    return study


def make_pruner(tune: TuneConfig) -> Any:
    """A percentile (median by default) pruner over evaluations 1, 2, ...: it compares a trial with the
    completed ones at the same evaluation, so it decides from the third trial of a small search on.
    Successive halving and Hyperband need many trials per rung or bracket to decide anything."""
    optuna = optuna_module()
    # Steps are 1-based evaluations, and step < n_warmup_steps is never pruned: hence the + 1.
    return optuna.pruners.PercentilePruner(tune.prune_percentile, n_startup_trials=tune.prune_after_trials,
                                           n_warmup_steps=tune.prune_warmup_evaluations + 1)


def make_sampler(tune: TuneConfig, seed: int, k: int) -> Any:
    """TPE for trial k, seeded with (seed, k): random for the first `startup_trials`, then guided by the
    finished trials, preferring those within the forgetting budget (the constraint `set_budget_constraint`
    stores with each)."""
    optuna = optuna_module()
    return optuna.samplers.TPESampler(seed=(seed * 100_003 + k) % 2**32, n_startup_trials=tune.startup_trials)


def set_budget_constraint(trial: Any, share: float | None) -> None:
    """Optuna's constraint of a trial (at most 0 is feasible): the worst probe's share of its budget, less 1."""
    share = MAX_CONSTRAINT_SHARE if share is None else min(share, MAX_CONSTRAINT_SHARE)
    trial.set_constraint("forgetting_budget", share - 1.0)


def state_of(trial: Any) -> str:
    """The trial's state in the table (tuning.trials.STATES)."""
    name = trial.state.name
    if name == "FAIL":
        return "failed" if "error" in trial.user_attrs else "interrupted"
    return {"COMPLETE": "complete", "PRUNED": "pruned"}.get(name, "running")


def finished_trials(study: Any) -> list[Any]:
    """Trials that count towards `trials`: completed, pruned, or failed on their own."""
    return [t for t in study.get_trials(deepcopy=False) if state_of(t) in ("complete", "pruned", "failed")]


def draws_so_far(study: Any) -> int:
    """k of the next trial: the trials finished or running elsewhere (not interrupted or waiting ones)."""
    return len(finished_trials(study)) + len([t for t in study.get_trials(deepcopy=False)
                                              if t.state.name == "RUNNING"])


def owner() -> str:
    """host:pid of this process, stored with each trial it trains."""
    return f"{socket.gethostname()}:{os.getpid()}"


def recover_interrupted(study: Any) -> list[str]:
    """Trials left RUNNING by a process of this host that is gone (kill -9, a power cut): each is marked
    failed and asked again with the same settings in the same run directory, where train's resume='auto'
    continues it. Trials of live processes or other hosts are left to them. Returns their run directories."""
    resumed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna_module().trial.TrialState.RUNNING,)):
        host, _, pid = str(trial.user_attrs.get("owner", "")).rpartition(":")
        if host != socket.gethostname() or (pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))):
            continue
        requeue(study, trial.number, trial.params, trial.user_attrs.get("run_dir"))
        resumed.append(trial.user_attrs.get("run_dir") or f"trial number {trial.number}")
    return resumed


def requeue(study: Any, number: int, params: dict[str, Any], run_dir: str | None) -> None:
    """Mark a trial interrupted (failed, without an error) and ask its settings again in its directory."""
    optuna = optuna_module()
    study.tell(number, state=optuna.trial.TrialState.FAIL)
    attrs = {"resumes": number, **({"run_dir": run_dir} if run_dir else {})}
    study.enqueue_trial(params, user_attrs=attrs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def running_objective(rows: list[dict[str, Any]]) -> list[float]:
    """Per evaluation with probes, in order: the best held-out loss within the budget so far (infinity while
    none is): the trial's objective had it ended there, which is what the pruner should compare. Raw
    losses would let it prune the only trials within the budget for over-budget ones with lower loss."""
    val = {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}
    best, values = math.inf, []
    for r in rows:
        if "within_budget" in r and r["step"] in val:
            if r["within_budget"]:
                best = min(best, val[r["step"]])
            values.append(best)
    return values


class EvaluationReporter:
    """A training subscriber: at each evaluation with probes it reports `running_objective` to the Optuna
    trial (step = evaluation 1, 2, ...) and raises optuna.TrialPruned when the pruner says the trial is behind;
    by train's contract that ends the run, resumable, with its checkpoints kept. It reads the run's
    metrics.jsonl, which holds the event's row already, so a resumed trial reports its earlier evaluations too."""

    def __init__(self, trial: Any, run_path: Path) -> None:
        self.trial, self.run_path, self.reported = trial, run_path, 0

    def __call__(self, event: TrainingEvent) -> None:
        if isinstance(event, ProbesEvent):
            self.report()
            if self.trial.should_prune():
                raise optuna_module().TrialPruned(f"pruned at step {event.step} (evaluation {self.reported}): "
                                                  "behind the completed trials there")

    def report(self) -> None:
        """Report the evaluations not reported yet (also after a run that resumed with nothing left to train)."""
        values = running_objective(RunDir(self.run_path).metrics())
        for evaluation, value in enumerate(values[self.reported:], start=self.reported + 1):
            self.trial.report(value, evaluation)
        self.reported = max(self.reported, len(values))
