"""The training worker's parts: the subscriber that turns a job's training events into its events and
checkpoints in the database (`JobEvents`), its result files, and where its run and log live. The
worker process itself, which runs the `train` command, is `tunesmith.commands.job`.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ..training.events import (
    CheckpointEvent,
    EvaluationEvent,
    FinishedEvent,
    ProbesEvent,
    StepEvent,
    StopEvent,
    TrainingEvent,
)
from ..web.ids import new_id
from .files import RESULTS_PURPOSE, files_dir
from .store import Store


def runs_dir(home: Path) -> Path:
    return home / "runs"


def log_path(home: Path, job_id: str) -> Path:
    return home / "logs" / f"{job_id}.log"


class JobEvents:
    """A training subscriber writing each event as an OpenAI job event (steps, evaluations,
    forgetting verdicts, checkpoints with their metrics), and the job's progress fields. Objective
    grpo's events say the held-out reward (its validation loss is minus that reward) and each step's
    sampled reward, in their data too (`reward`, `reward_sampled` with `_ci`; a step's rollout metrics)."""

    def __init__(self, store: Store, job_id: str, objective: str = "sft") -> None:
        self.store, self.job_id, self.rewarded = store, job_id, objective == "grpo"
        self.last_loss: float | None = None
        self.val_loss: dict[int, float] = {}
        self.first: tuple[int, float] | None = None
        """(step, time) of the first step this process did, for the ETA."""

    def __call__(self, event: TrainingEvent) -> None:
        if isinstance(event, StepEvent):
            self._step(event)
        elif isinstance(event, EvaluationEvent):
            self.val_loss[event.step] = event.val_loss
            data = {"step": event.step, "valid_loss": event.val_loss, **(event.reward or {})}
            message = (f"Step {event.step}: held-out reward={event.reward['reward']:.4f} (sampled "
                       f"{event.reward['reward_sampled']:.4f})" if event.reward else
                       f"Step {event.step}: validation loss={event.val_loss:.4f}")
            self._add(f"eval-{event.step}", message, data)
        elif isinstance(event, ProbesEvent):
            verdict = "within the forgetting budget" if event.within_budget else "over the forgetting budget"
            self._add(f"probes-{event.step}", f"Step {event.step}: general probes {verdict}",
                      {"step": event.step, "within_budget": event.within_budget, "probes": event.probes})
        elif isinstance(event, CheckpointEvent):
            metrics = {"step": event.step, "train_loss": self.last_loss, "valid_loss": self.val_loss.get(event.step)}
            self.store.add_checkpoint(self.job_id, new_id("ftckpt"), event.step, metrics)
            self._add(f"checkpoint-{event.step}", f"Checkpoint saved at step {event.step}", metrics)
        elif isinstance(event, StopEvent):
            self._add(f"stop-{event.step}", f"{event.signal}: stopped after step {event.step} (checkpoint saved)",
                      event.to_dict(), kind="message")
        elif isinstance(event, FinishedEvent):
            measure, sign = ("held-out reward", -1) if self.rewarded else ("validation loss", 1)
            self._add("finished", f"Training finished: {measure} {sign * event.base_val_loss:.4f} -> "
                                  f"{sign * event.final_val_loss:.4f} (step {event.selected_step}: {event.selection})",
                      event.to_dict(), kind="message")

    def _step(self, event: StepEvent) -> None:
        self.last_loss = event.loss
        now = time.time()
        self.first = self.first or (event.step - 1, now)
        done = event.step - self.first[0]
        eta = now + (now - self.first[1]) / done * (event.total_steps - event.step) if done else None
        self.store.update_job(self.job_id, trained_tokens=event.tokens,
                              estimated_finish=int(eta) if eta else None)
        reward = f", sampled reward={event.rollout['reward']:.4f}" if event.rollout else ""
        self._add(f"step-{event.step}",
                  f"Step {event.step}/{event.total_steps}: training loss={event.loss:.4f}{reward}",
                  {"step": event.step, "total_steps": event.total_steps, "train_loss": event.loss,
                   "learning_rate": event.lr, "epoch": event.epoch, "tokens": event.tokens,
                   "tokens_per_s": event.tokens_per_s, **(event.rollout or {})})

    def _add(self, key: str, message: str, data: dict[str, Any], kind: str = "metrics") -> None:
        self.store.add_event(self.job_id, new_id("ftevent"), key, "info", message, kind, data)


def fail(store: Store, job_id: str, code: str, message: str, param: str | None = None) -> None:
    store.update_job(job_id, status="failed", finished_at=int(time.time()),
                     error={"code": code, "message": message, "param": param})


def register_result(store: Store, home: Path, source: Path, filename: str) -> str:
    """Copy a run's output into HOME/files as a file of purpose fine-tune-results; its id."""
    file_id = new_id("file")
    stored = file_id + source.suffix
    files_dir(home).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, files_dir(home) / stored)
    store.add_file({"id": file_id, "created_at": int(time.time()), "filename": filename, "stored": stored,
                    "purpose": RESULTS_PURPOSE, "bytes": source.stat().st_size})
    return file_id
