"""Experiment trackers as training-event subscribers: TensorBoard and MLflow write local files by
default, W&B and trackio log where their own settings say. Each logs the resolved config, every
step, evaluation and probe figure, and the summary; a failing tracker warns once and is dropped.

A tracker keeps its run id in RUN/trackers.json, so a resumed run continues the same tracker run.
Steps after the last checkpoint that were logged before a crash are sent again on resume: each
tracker makes them replace or skip what it holds, so its history has each step once.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from rich.console import Console
from rich.markup import escape

from ..config import TrainConfig, dotted
from ..errors import ConfigError
from ..run import EVAL, SUMMARY, RunDir
from .events import CheckpointEvent, EvaluationEvent, FinishedEvent, ProbesEvent, StepEvent, StopEvent, TrainingEvent

PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny"),
            "wandb": ("wandb", "wandb"), "trackio": ("trackio", "trackio")}
"""Per tracker: the module it imports and the package that provides it."""
PROJECT = "tunesmith"
"""The MLflow experiment, W&B project and trackio project when the user's environment names none."""
RUN_FILES = (SUMMARY, "report.html", "*.png")
"""Run files logged as artifacts at the end, those that exist then (`tunesmith eval` makes the report later)."""
MLFLOW_MAX_PARAM = 6000  # MLflow refuses longer parameter values (a long system prompt)
MLFLOW_BATCH = 100  # MLflow's most parameters in one log_batch call


def check_trackers(names: list[str]) -> None:
    """A ConfigError naming the package to install for each configured tracker that cannot be
    imported; `train` asks before anything is loaded or written."""
    missing = []
    for name in names:
        module, package = PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(f"{name} needs `pip install {package}`")
    if missing:
        raise ConfigError(f"report_to: {'; '.join(missing)} (tensorboard and mlflow come with "
                          "`pip install 'tunesmith[tracking]'`), or remove it from report_to")


class Backend(Protocol):
    """What a tracker does with the run's numbers; `TrackerSubscriber` turns events into these calls."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...
    def flush(self) -> None: ...
    def finish(self, summary: dict[str, Any], files: list[Path]) -> None: ...
    def stop(self) -> None: ...
    def report(self, step: int, metrics: dict[str, float], verdict: str, files: list[Path]) -> None: ...


def event_metrics(event: TrainingEvent) -> dict[str, float]:
    """The figures a metrics event logs, by tracker key; empty for the other events."""
    if isinstance(event, StepEvent):
        return {"train/loss": event.loss, "train/lr": event.lr, "train/grad_norm": event.grad_norm,
                "train/tokens_per_s": event.tokens_per_s, "train/tokens": float(event.tokens),
                "train/epoch": float(event.epoch), **{f"train/{k}": v for k, v in (event.rollout or {}).items()}}
    if isinstance(event, EvaluationEvent):  # grpo's held-out rewards too (their intervals are lists: not logged)
        return {"eval/val_loss": event.val_loss,
                **{f"eval/{k}": float(v) for k, v in (event.reward or {}).items() if _is_number(v)}}
    if isinstance(event, ProbesEvent):
        figures = {f"probes/{_key(name)}/{field}": float(value) for name, probe in event.probes.items()
                   for field, value in _with_interval(probe).items() if _is_number(value)}
        return {**figures, "probes/within_budget": float(event.within_budget)}
    return {}


def _with_interval(figures: dict[str, Any]) -> dict[str, Any]:
    """A probe's figures with its 95% interval `ci95: [lo, hi]` as two numbers (trackers take scalars)."""
    lo, hi = figures.get("ci95") or (None, None)
    return {**{k: v for k, v in figures.items() if k != "ci95"}, "ci95_low": lo, "ci95_high": hi}


def evaluation_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`tunesmith eval`'s figures (eval.json), under evaluation/: the task's scores and every general
    probe, each base, tuned, delta and its 95% interval, and the verdict as within_budget 1/0."""
    out = {"evaluation/within_budget": float(result["within_budget"])}
    scores = {f"task/{k}": v for k, v in result["task"].items() if isinstance(v, dict) and "delta" in v}
    scores.update({f"probes/{_key(k)}": v for k, v in result["general"].items()})
    for name, score in scores.items():
        for field in ("base", "tuned", "delta", "relative_delta", "ci95"):
            if field == "ci95" and score.get("ci95"):
                out[f"evaluation/{name}/ci95_low"], out[f"evaluation/{name}/ci95_high"] = map(float, score["ci95"])
            elif _is_number(score.get(field)):
                out[f"evaluation/{name}/{field}"] = float(score[field])
    return out


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """summary.json's numbers (within_budget as 1/0 when measured), under summary/."""
    return {f"summary/{k}": float(v) for k, v in summary.items() if _is_number(v) or isinstance(v, bool)}


def flat_params(values: dict[str, Any]) -> dict[str, str]:
    """The resolved config as tracker parameters: nested sections flattened (`lora.r`), values as text."""
    return {key: str(value) for key, value in dotted(values).items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _key(name: str) -> str:
    """A probe name as one metric-key part: MLflow's characters (letters, digits, _ - . space), less
    the / that would nest it."""
    return re.sub(r"[^\w\-. ]", "_", name)


class TrackerSubscriber:
    """One tracker as a subscriber. The event seam lets a subscriber's exception end the run, and a
    tracker must never do that: its first failure is a warning, and it logs nothing more."""

    def __init__(self, name: str, backend: Backend, run_path: Path, console: Console) -> None:
        self.name, self.backend, self.run_path, self.console = name, backend, run_path, console

    def __call__(self, event: TrainingEvent) -> None:
        if self.backend is None:
            return
        try:
            self._send(self.backend, event)
        except Exception as exc:  # any failure of the tracker (a server gone, a full disk): drop it
            self.backend = None
            self.console.print(f"[yellow]warning:[/] {self.name} tracking failed ({escape(type(exc).__name__)}: "
                               f"{escape(str(exc))}); it logs nothing more in this run, training goes on",
                               highlight=False)

    def _send(self, backend: Backend, event: TrainingEvent) -> None:
        if metrics := event_metrics(event):
            backend.log(event.step, metrics)
        elif isinstance(event, CheckpointEvent):  # what a checkpoint keeps is on the tracker's disk too
            backend.flush()
        elif isinstance(event, StopEvent):
            backend.stop()
        elif isinstance(event, FinishedEvent):
            files = sorted({p for pattern in RUN_FILES for p in self.run_path.glob(pattern)})
            backend.finish(event.to_dict(), files)


# --- the trackers: each opener returns its backend and what trackers.json keeps to resume it

Opener = Callable[[TrainConfig, Path, Any, int], tuple[Backend, dict[str, Any]]]
"""(config, run path, what trackers.json kept for it or None, the resumed step or 0) -> (backend, ids to keep)."""


class TensorBoardBackend:
    """Event files in RUN/tensorboard/ (torch's SummaryWriter)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        self.writer.add_text("summary", f"```\n{json.dumps(summary, indent=2)}\n```", summary["steps"])
        self.writer.close()

    def stop(self) -> None:
        self.writer.close()

    def report(self, step: int, metrics: dict[str, float], verdict: str, files: list[Path]) -> None:
        self.log(step, metrics)
        self.writer.add_text("evaluation/verdict", verdict.replace("\n", "  \n"), step)  # files stay in RUN/
        self.writer.close()


def open_tensorboard(config: TrainConfig, run_path: Path, saved: dict[str, Any] | None,
                     resumed_step: int) -> tuple[Backend, dict[str, Any]]:
    from torch.utils.tensorboard import SummaryWriter

    # On resume, purge_step makes TensorBoard's readers drop what an earlier file holds from the
    # first recomputed step on: a step logged before a crash is replaced, never doubled.
    writer = SummaryWriter(str(run_path / "tensorboard"), purge_step=resumed_step + 1 if resumed_step else None)
    if not resumed_step:
        rows = "".join(f"| {k} | {v} |\n" for k, v in flat_params(config.to_dict()).items())
        writer.add_text("config", f"| key | value |\n|---|---|\n{rows}", 0)
    return TensorBoardBackend(writer), {}


class MLflowBackend:
    """An MLflow run, logged through the client (no global active run)."""

    def __init__(self, client: Any, run_id: str, resumed: bool) -> None:
        self.client, self.run_id, self.resumed = client, run_id, resumed
        self.logged: dict[str, set[int]] = {}
        """On resume: per key, the steps the run already holds (read once per key)."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if self.resumed:  # MLflow keeps every value of a repeated (key, step): skip those it holds
            metrics = {k: v for k, v in metrics.items() if step not in self._steps(k)}
        now = int(time.time() * 1000)
        if metrics:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def _steps(self, key: str) -> set[int]:
        if key not in self.logged:
            self.logged[key] = {m.step for m in self.client.get_metric_history(self.run_id, key)}
        return self.logged[key]

    def flush(self) -> None:
        """Every call is written when it returns."""

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        self.log(summary["steps"], summary_metrics(summary))
        self.client.set_tag(self.run_id, "selection", summary["selection"])
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def stop(self) -> None:
        self.client.set_terminated(self.run_id, "KILLED")

    def report(self, step: int, metrics: dict[str, float], verdict: str, files: list[Path]) -> None:
        self.log(step, metrics)
        self.client.set_tag(self.run_id, "verdict", verdict[:MLFLOW_MAX_PARAM])
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")


def local_mlflow_uri(run_path: Path) -> str:
    """The SQLite store shared by the runs beside this one: `sqlite:////abs/runs/mlflow.db`."""
    return f"sqlite:///{run_path.resolve().parent / 'mlflow.db'}"


def open_mlflow(config: TrainConfig, run_path: Path, saved: dict[str, Any] | None,
                resumed_step: int) -> tuple[Backend, dict[str, Any]]:
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    # The local default is a SQLite store beside the run directory, as MLflow 3 recommends: its file
    # store (mlruns/) is in maintenance mode and refuses plain reads unless MLFLOW_ALLOW_FILE_STORE is set.
    uri = saved["tracking_uri"] if saved else \
        os.environ.get("MLFLOW_TRACKING_URI") or local_mlflow_uri(run_path)
    if uri.startswith("file:"):  # a run made before the SQLite default resumes into its own file store
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    if saved:
        run_id = saved["run_id"]
        client.update_run(run_id, status="RUNNING")
    else:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT
        experiment = client.get_experiment_by_name(name)
        # A SQLite store keeps artifacts in ./mlartifacts of whatever folder the process runs in unless
        # told otherwise: the local default keeps them beside the database.
        where = (run_path.resolve().parent / "mlartifacts").as_uri() if uri == local_mlflow_uri(run_path) else None
        experiment_id = experiment.experiment_id if experiment is not None else \
            client.create_experiment(name, artifact_location=where)
        run_id = client.create_run(experiment_id, run_name=run_path.name, tags={
            "method": config.method, "model": config.model, "tunesmith.run_dir": str(run_path.resolve())}).info.run_id
        params = [Param(k, v[:MLFLOW_MAX_PARAM]) for k, v in flat_params(config.to_dict()).items()]
        for start in range(0, len(params), MLFLOW_BATCH):
            client.log_batch(run_id, params=params[start:start + MLFLOW_BATCH])
    return MLflowBackend(client, run_id, resumed=saved is not None), {"run_id": run_id, "tracking_uri": uri}


class WandbBackend:
    """A W&B run (offline with WANDB_MODE=offline, as wandb itself reads it)."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, step: int, metrics: dict[str, float]) -> None:
        # A resumed W&B run ignores steps below the ones it holds, so a recomputed step is not doubled.
        self.run.log(metrics, step=step)

    def flush(self) -> None:
        """wandb writes in its own process."""

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        self.run.summary.update(summary)
        for path in files:
            self.run.save(str(path), base_path=str(path.parent), policy="now")
        self.run.finish()

    def stop(self) -> None:
        self.run.finish(exit_code=1)

    def report(self, step: int, metrics: dict[str, float], verdict: str, files: list[Path]) -> None:
        self.run.summary.update({**metrics, "verdict": verdict})
        self.finish({}, files)


def open_wandb(config: TrainConfig, run_path: Path, saved: dict[str, Any] | None,
               resumed_step: int) -> tuple[Backend, dict[str, Any]]:
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=run_path.name, dir=str(run_path),
                     id=saved["id"] if saved else None, resume="allow" if saved else None,
                     config=flat_params(config.to_dict()), tags=[config.method, Path(config.model).name[-64:]])
    return WandbBackend(run), {"id": run.id}


class TrackioBackend:
    """A trackio run (local unless the user's trackio settings name a Space)."""

    def __init__(self, trackio: Any) -> None:
        self.trackio = trackio

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.trackio.log(metrics, step=step)

    def flush(self) -> None:
        """trackio writes on its own schedule."""

    def finish(self, summary: dict[str, Any], files: list[Path]) -> None:
        self.trackio.log(summary_metrics(summary), step=summary["steps"])
        self.trackio.finish()

    def stop(self) -> None:
        self.trackio.finish()

    def report(self, step: int, metrics: dict[str, float], verdict: str, files: list[Path]) -> None:
        self.trackio.log(metrics, step=step)
        self.trackio.finish()


def open_trackio(config: TrainConfig, run_path: Path, saved: dict[str, Any] | None,
                 resumed_step: int) -> tuple[Backend, dict[str, Any]]:
    import trackio

    project = saved["project"] if saved else os.environ.get("TRACKIO_PROJECT") or PROJECT
    trackio.init(project=project, name=run_path.name, config=flat_params(config.to_dict()),
                 resume="allow" if saved else "never")
    return TrackioBackend(trackio), {"project": project, "name": run_path.name}


OPENERS: dict[str, Opener] = {"tensorboard": open_tensorboard, "mlflow": open_mlflow, "wandb": open_wandb,
                              "trackio": open_trackio}


def open_trackers(config: TrainConfig, run_path: Path, resumed_step: int, console: Console) -> list[TrackerSubscriber]:
    """The subscribers of `config.report_to` (rank 0 only), each continuing its tracker run on resume
    (`resumed_step` > 0) from the ids in RUN/trackers.json. A tracker that cannot start warns and is
    left out: tracking never stops training."""
    run = RunDir(run_path)
    saved = (run.tracker_ids() or {}) if resumed_step else {}
    ids, subscribers = dict(saved), []
    for name in config.report_to:
        try:
            backend, ids[name] = OPENERS[name](config, run_path, saved.get(name), resumed_step)
        except Exception as exc:  # a server that is not there, a bad tracking URI: train without it
            console.print(f"[yellow]warning:[/] {name} tracking could not start ({escape(type(exc).__name__)}: "
                          f"{escape(str(exc))}); training goes on without it", highlight=False)
            continue
        subscribers.append(TrackerSubscriber(name, backend, run_path, console))
    if config.report_to:
        run.write_tracker_ids(ids)
    return subscribers


EVAL_FILES = (EVAL, "report.html", "*.png")
"""What `tunesmith eval` writes into the run, logged as artifacts of the run's tracker runs."""


def log_evaluation(config: TrainConfig, run_path: Path, result: dict[str, Any], console: Console) -> None:
    """`tunesmith eval`'s figures, verdict, report and plots into the tracker runs the training
    made (their ids in RUN/trackers.json), at the run's last step. A tracker that fails warns; the
    evaluation stands."""
    run = RunDir(run_path)
    saved = run.tracker_ids()
    if not config.report_to or saved is None:
        return
    step = run.summary()["steps"]
    files = sorted({p for pattern in EVAL_FILES for p in run_path.glob(pattern)})
    metrics = evaluation_metrics(result)
    for name in config.report_to:
        if name not in saved:
            continue
        try:
            backend, _ = OPENERS[name](config, run_path, saved[name], step)
            backend.report(step, metrics, result["verdict"], files)
        except Exception as exc:  # the evaluation is written in the run either way
            console.print(f"[yellow]warning:[/] {name} tracking of the evaluation failed "
                          f"({escape(type(exc).__name__)}: {escape(str(exc))})", highlight=False)
