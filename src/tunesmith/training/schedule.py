"""The run's length and rhythm: steps per epoch, total and warmup steps, when to evaluate and save,
and the learning-rate curve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..config import TrainConfig


def lr_at(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak rate at optimizer step `step` (0-based): linear warmup, then cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Schedule:
    """How many optimizer steps the run takes and which of them evaluate and save."""

    micro_per_step: int
    """Micro-batches of one optimizer step over all processes (accumulation x processes)."""
    steps_per_epoch: int
    """Optimizer steps that cover the training data once (the last one may be partial)."""
    total_steps: int
    """`max_steps`, or `epochs` x steps_per_epoch rounded up (at least 1)."""
    warmup_steps: int
    """`warmup_ratio` x total_steps, rounded, at least 1."""
    eval_every: int
    """`eval_every`, or a quarter of the run (at least 1): four evaluations besides the base one."""
    save_every: int
    """`save_every`, or at every evaluation."""

    def evaluates(self, step: int) -> bool:
        """Whether the run evaluates after optimizer step `step` (1-based); always after the last."""
        return step % self.eval_every == 0 or step == self.total_steps

    def saves(self, step: int) -> bool:
        """Whether the schedule asks for a checkpoint after step `step` (stops and probes add more)."""
        return step % self.save_every == 0 or step == self.total_steps


def plan_schedule(config: TrainConfig, micro_per_epoch: int, world: int) -> Schedule:
    """The schedule of a run whose epoch holds `micro_per_epoch` micro-batches, on `world` processes."""
    micro_per_step = config.grad_accum_steps * world  # global batch = micro-batch x accumulation x processes
    steps_per_epoch = math.ceil(micro_per_epoch / micro_per_step)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or max(1, total_steps // 4)
    return Schedule(micro_per_step=micro_per_step, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    warmup_steps=max(1, round(config.warmup_ratio * total_steps)), eval_every=eval_every,
                    save_every=config.save_every or eval_every)


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, min_lr_ratio: float) -> Any:
    """torch's LambdaLR over `lr_at`: one scheduler step per optimizer step, skipped steps included."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, schedule.total_steps, schedule.warmup_steps, min_lr_ratio))
