"""What training reports as it runs: typed events sent to subscribers (the progress bar, the
metrics.jsonl writer, and whatever a caller passes as `train(..., subscribers=[...])`).

A subscriber is any callable taking one event. `train` sends every event to every subscriber, in
the order given, on the main process only (rank 0 of a multi-process run), right after the state
the event describes exists: a StepEvent after the step's optimizer update, a CheckpointEvent after
the checkpoint's COMPLETE marker, a FinishedEvent after summary.json. The built-in subscribers come
first, so metrics.jsonl already holds an event's row when a caller's subscriber sees it.

An exception from a subscriber, built-in or not, is not caught: it ends the run as a crash would,
and what is on disk stays resumable (`--resume auto` continues from the last checkpoint, and
steps after it are recomputed and sent again). A subscriber that must not stop training catches its
own errors. Events are sent in the training loop's thread, so a slow subscriber slows training.

Each event's `to_dict()` is JSON-ready; for the events that are rows of metrics.jsonl it is that row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Union


@dataclass(frozen=True)
class StepEvent:
    """One optimizer step done (or skipped as non-finite, with `skip_nonfinite`)."""

    step: int
    """Optimizer steps done, this one included (1-based)."""
    loss: float
    """Mean training loss per trained token of this step, over all processes."""
    lr: float
    """The learning rate this step used."""
    epoch: int
    """Epoch of the step's last micro-batch (0-based)."""
    tokens: int
    """Tokens trained on so far (the run's total, padding-free)."""
    tokens_per_s: float
    """Training throughput since this process started or resumed the run."""
    grad_norm: float
    """Gradient norm before clipping."""
    examples: tuple[str, ...]
    """The step's examples by source (`file:line`), in batch order; not in metrics.jsonl."""
    total_steps: int = 0
    """Optimizer steps the run's schedule takes (for an ETA); not in metrics.jsonl."""
    rollout: dict[str, float] | None = None
    """Objective grpo: what the step's samples scored (reward, reward_std, flat_groups, completion_tokens,
    truncated) and the loss's clip_fraction and kl; None for the others."""

    def to_dict(self) -> dict[str, Any]:
        """The metrics.jsonl row (without `examples`, which would make every row long, and `total_steps`)."""
        return {"step": self.step, "loss": self.loss, "lr": self.lr, "epoch": self.epoch, "tokens": self.tokens,
                "tokens_per_s": self.tokens_per_s, "grad_norm": self.grad_norm, **(self.rollout or {})}


@dataclass(frozen=True)
class EvaluationEvent:
    """A validation loss measured: of the base model at step 0, then at every evaluation."""

    step: int
    """Optimizer steps done when measured (0: the untouched model)."""
    val_loss: float
    """Mean cross-entropy per trained token of the validation set (objective dpo or orpo: the
    preference loss of the held-out pairs; grpo: minus the mean held-out greedy reward, so that lower
    is better for every objective)."""
    preference: dict[str, Any] | None = None
    """Objective dpo or orpo: preference_accuracy, reward_margin (each with a 95% `_ci`) and pairs
    of the held-out pairs (training/objectives.py); None for sft."""
    reward: dict[str, Any] | None = None
    """Objective grpo: reward (the greedy answers' mean) and reward_sampled (one sampled answer per
    prompt), each with a 95% `_ci`, and prompts, over the held-out prompts (training/rft.py)."""

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "val_loss": self.val_loss, **(self.preference or {}), **(self.reward or {})}


@dataclass(frozen=True)
class ProbesEvent:
    """The forgetting probes measured at an evaluation (with `forgetting.measure_during_training`)."""

    step: int
    """Optimizer steps done when measured."""
    probes: dict[str, dict[str, Any]]
    """Per probe: metric, base, tuned, delta, relative_delta (as in metrics.jsonl)."""
    within_budget: bool
    """Whether every probe is within the forgetting budget."""

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "probes": self.probes, "within_budget": self.within_budget}


@dataclass(frozen=True)
class CheckpointEvent:
    """A complete checkpoint written (retention already applied)."""

    step: int
    """The checkpoint's step."""
    path: str
    """Its folder, RUN/checkpoints/step-N."""

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "path": self.path}


@dataclass(frozen=True)
class StopEvent:
    """The run stopped early on a signal, after saving a checkpoint at `step`."""

    step: int
    """The last step done and saved."""
    signal: str
    """The signal's name: SIGTERM or SIGINT."""

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "signal": self.signal}


@dataclass(frozen=True)
class FinishedEvent:
    """The run finished and saved its final model: the last event. Its fields are summary.json."""

    base_val_loss: float
    """Validation loss of the untouched model."""
    final_val_loss: float
    """Validation loss of the final model (the selected step's)."""
    last_val_loss: float
    """Validation loss after the last step."""
    selected_step: int
    """The step whose weights are the final model."""
    selection: str
    """Why that step: 'last step', or the forgetting-budget rule that picked it."""
    within_budget: bool | None
    """Whether the selected step was within the forgetting budget (None: not measured)."""
    val_loss_change: float | None
    """(final - base) / |base|; None when base is 0 (objective grpo's loss is minus a reward, which can be)."""
    train_tokens: int
    """Tokens trained on."""
    wall_seconds: float
    """Seconds from the start of `train` until training ended, before the final save (resumed part only)."""
    steps: int
    """Optimizer steps of the run."""
    skipped_steps: int
    """Steps skipped for a non-finite loss."""
    method: str
    """lora, dora, qlora or full."""
    model: str
    """The base model."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrainingEvent = Union[StepEvent, EvaluationEvent, ProbesEvent, CheckpointEvent, StopEvent, FinishedEvent]
Subscriber = Callable[[TrainingEvent], None]
"""Anything that takes one event; its return value is ignored."""

METRICS_EVENTS = (StepEvent, EvaluationEvent, ProbesEvent)
"""The events that are rows of metrics.jsonl (and of the run's record saved with each checkpoint)."""
