"""Objective grpo inside `train`: a step's prompts rolled out and graded (`GroupLoss`, the step's loss for
`backward_group`), and the held-out reward of an evaluation (`held_out_rewards`). The GRPO formulas
are training/grpo.py's; this module only connects them to the session's batches, seed and grader.

Sampling is seeded by `step_seed(config.seed, step)`, so a run resumed at step k samples what the
uninterrupted run sampled there; held-out sampling always uses step 0's seed (no training step has
it), so two evaluations differ only by the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from ..config import TrainConfig
from ..data import PreparedData
from ..errors import ConfigError
from ..evaluation.bootstrap import bootstrap_ci
from ..grpo_config import GrpoConfig
from ..inference.decode import generate_batch
from ..inference.sample import Sampler, VllmSampler, sample_completions, vllm_wanted
from ..model.precision import autocast
from ..settings import JUDGE_KEY_ENV
from .batching import Batch
from .grpo import RewardFunction, Rollout, StepTotals, grader_reward, grpo_loss, roll_out, rollout_metrics, step_seed

EVAL_SEED_STEP = 0
"""The step whose seed samples the held-out answers: 0, which no training step (1-based) uses."""


@dataclass(frozen=True)
class RewardTask:
    """What objective grpo needs beside the model: its settings, the reward, the rows the grader reads."""

    settings: GrpoConfig
    reward: RewardFunction
    """(completion texts, their rows) -> rewards: the config's grader (`grpo.grader_reward`)."""
    tokenizer: Any
    items: dict[str, dict[str, Any]]
    """Each prompt's row by its source (file:line): the grader's `item`."""
    eos_ids: list[int]
    pad_id: int
    seed: int
    """The run's seed; step k samples with step_seed(seed, k)."""
    grading: Any
    """The open graders.GradingSession behind `reward` (python graders' processes): closed when train ends."""
    sample: Sampler | None = None
    """What draws the step's samples: a VllmSampler (grpo.sampler), or None: the batched decoder."""

    def close(self) -> None:
        """End what grading and sampling started: python graders' processes, the judge's client, vLLM's folder."""
        self.grading.close()
        if isinstance(self.sample, VllmSampler):
            self.sample.close()

    def rows(self, batch: Batch) -> list[dict[str, Any]]:
        return [self.items.get(source, {}) for source in batch.sources]


def open_reward_task(config: TrainConfig, tokenizer: Any, data: PreparedData,
                     processes: int) -> tuple[TrainConfig, RewardTask]:
    """Objective grpo's grader, checked against every prompt's row (each row lacking a field the grader
    reads named, file:line, before anything trains) and opened for grading; the config with the grader
    inline, so that the run's config.yaml holds the grader it trained on."""
    from ..data.issues import DataError
    from ..data.render import end_of_turn_ids, pad_id
    from ..graders import GradingSession, check_rows, configured_judge, graders_in, parse_grader, read_grader_spec
    from ..graders.spec import ScoreModel

    if processes > 1:
        raise ConfigError("objective grpo trains in one process for now: run `tunesmith train` without "
                          "torchrun / accelerate launch")
    spec = read_grader_spec(config.grader) if isinstance(config.grader, str) else config.grader
    grader = parse_grader(spec, config.grader if isinstance(config.grader, str) else "grader")
    judged = [g.name for g in graders_in(grader) if isinstance(g, ScoreModel)]
    if judged and config.grpo.judge_url is None:  # each sample would score 0, teaching nothing
        raise ConfigError(f"grader: score_model grader {judged[0]!r} needs a judge: set grpo.judge_url to an "
                          "OpenAI-compatible server's /v1 (e.g. `tunesmith serve RUN`'s, or --judge-url on train), "
                          f"its key in {JUDGE_KEY_ENV}")
    rows = [(*_file_line(source), item) for source, item in data.items.items()]
    issues = check_rows(grader, rows)
    if issues:
        raise DataError(issues)
    grading = GradingSession(grader, configured_judge(config.grpo.judge_url, config.grpo.judge_model))
    sample = None
    if vllm_wanted(config.grpo.sampler, config.method):
        from ..model.tokenizer import resolve_model_path

        sample = VllmSampler(resolve_model_path(config.model), config.lora.r)
    return replace(config, grader=spec), RewardTask(
        config.grpo, grader_reward(grading), tokenizer, data.items, sorted(end_of_turn_ids(tokenizer)),
        pad_id(tokenizer), config.seed, grading, sample)


def _file_line(source: str) -> tuple[str, int]:
    file, _, line = source.rpartition(":")
    return file, int(line)


def batch_prompts(batch: Batch) -> list[list[int]]:
    """The token ids of each prompt packed in `batch` (its sequences, in order)."""
    ids, bounds = batch.input_ids[0].tolist(), batch.bounds.tolist()
    return [ids[a:z] for a, z in zip(bounds, bounds[1:])]


@dataclass
class GroupLoss:
    """A step's GRPO loss, one micro-batch at a time (a `StepLoss`): the step's prompts are rolled out
    once, together, when it is built; each call takes the next micro-batch's share of that rollout,
    normalised by the whole step's totals, so the shares add up to the step's loss."""

    settings: GrpoConfig
    pieces: list[Rollout]
    """Each micro-batch's rows of the step's rollout, in the order backward_group calls."""
    totals: StepTotals
    metrics: dict[str, float]
    """The rollout's reward, reward_std, flat_groups, completion_tokens, truncated."""
    per_example: int = 1
    taken: int = 0
    losses: list[dict[str, float]] = field(default_factory=list)

    def __call__(self, model: Any, piece: Batch, device: torch.device) -> torch.Tensor:
        rollout = self.pieces[self.taken]
        self.taken += 1
        loss, metrics = grpo_loss(model, rollout, self.settings, device, self.totals)
        self.losses.append({**metrics, "tokens": float(rollout.completions.mask.sum())})
        return loss

    def step_metrics(self) -> dict[str, float]:
        """The rollout's metrics and the loss's clip fraction and KL, per completion token of the step."""
        tokens = sum(m["tokens"] for m in self.losses) or 1.0
        return {**self.metrics, **{key: sum(m[key] * m["tokens"] for m in self.losses) / tokens
                                   for key in ("clip_fraction", "kl")}}


def group_loss(task: RewardTask, model: Any, batches: list[Batch], step: int, device: torch.device,
               dtype: torch.dtype, reference: Callable[[], Any] | None) -> GroupLoss:
    """Roll out the step's prompts (all its micro-batches, seeded by the step) and split the rollout
    by micro-batch. `model` is the unwrapped model that samples; the loss runs through the caller's."""
    prompts = [p for b in batches for p in batch_prompts(b)]
    rows = [r for b in batches for r in task.rows(b)]
    settings = task.settings
    with autocast(device, dtype):
        rollout = roll_out(model, prompts, rows, task.reward, task.tokenizer, settings, task.eos_ids, task.pad_id,
                           step_seed(task.seed, step), device, reference, task.sample)
    pieces, start = [], 0
    for batch in batches:
        stop = start + len(batch.sources) * settings.group_size
        pieces.append(rollout.rows(start, stop))
        start = stop
    totals = StepTotals(len(rollout), int(rollout.completions.mask.sum()), pieces=len(batches))
    return GroupLoss(settings, pieces, totals, rollout_metrics(rollout, settings.group_size))


def held_out_rewards(task: RewardTask, model: Any, batches: list[Batch], device: torch.device,
                     dtype: torch.dtype) -> dict[str, Any]:
    """The mean reward of the held-out prompts' greedy answers and of one sampled answer each (seeded by
    EVAL_SEED_STEP), each with its 95% bootstrap interval over prompts."""
    prompts = [p for b in batches for p in batch_prompts(b)]
    rows = [r for b in batches for r in task.rows(b)]
    settings = task.settings
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(device, dtype):
            greedy = generate_batch(model, prompts, settings.max_completion_tokens, task.eos_ids, task.pad_id)
            sampled = sample_completions(model, prompts, 1, settings.temperature, settings.top_p,
                                         settings.max_completion_tokens, task.eos_ids, task.pad_id,
                                         step_seed(task.seed, EVAL_SEED_STEP)).lists()
    finally:
        model.train(was_training)
    out: dict[str, Any] = {"prompts": len(prompts)}
    for key, answers in (("reward", greedy), ("reward_sampled", sampled)):
        texts = [task.tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]
        rewards = np.asarray([float(r) for r in task.reward(texts, rows)], dtype=float)
        out[key] = float(rewards.mean()) if len(rewards) else float("nan")
        out[f"{key}_ci"] = list(bootstrap_ci(rewards, np.ones(len(rewards))))
    return out
