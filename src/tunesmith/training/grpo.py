"""GRPO (Shao et al. 2024, DeepSeekMath sec. 4.1): per step, sample a group of completions for each
prompt, reward them, and push up the tokens of the completions that beat their group's mean reward.

A step is `roll_out` (sample with a seed, reward, group-normalised advantages, the base's and the
sampling policy's per-token log-probabilities when the settings need them) and then `grpo_loss` on
the rollout, or on pieces of it with the step's totals: the per-token clipped policy-ratio loss plus
beta x the k3 KL to the base, on completion tokens only, averaged as `loss_type` says. The formulas
are TRL 1.16's GRPOTrainer._compute_loss (trl/trainer/grpo_trainer.py); tests/test_grpo.py holds the
loss and its gradients to TRL's on the same samples. GrpoConfig (grpo_config.py) has the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data import IGNORE
from ..grpo_config import GrpoConfig
from ..inference.sample import Completions, Sampler, sample_completions
from .batching import Batch, token_log_probs

RewardFunction = Callable[[list[str], list[Any]], Sequence[float]]
"""(completion texts, their data rows) -> one reward per completion; row i answers prompt i // group_size."""
Reference = Callable[[], Any]
"""Enters the base model (a context manager factory, as `forgetting.measure.base_view` returns)."""
STD_EPSILON = 1e-4  # added to the std before dividing, as TRL: a group of equal rewards gets advantage 0


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of optimizer step `step` of a run seeded `seed`: a pure function of the two,
    so a run resumed at step k samples what the uninterrupted run sampled at step k."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def grader_reward(session: Any) -> RewardFunction:
    """A reward function from an open `graders.GradingSession`: each completion graded as OpenAI's
    graders see an answer (`sample.output_text`) against its row (`item`); a failed grade scores 0."""
    from ..graders import make_sample

    def reward(texts: list[str], rows: list[Any]) -> list[float]:
        return [result.reward for result in session.grade_many((make_sample(t), row) for t, row in zip(texts, rows))]

    return reward


def group_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: str) -> torch.Tensor:
    """(N,) each reward less its group's mean (groups: consecutive `group_size` rows), divided by the
    group's std (Bessel-corrected) + 1e-4 with scale "group", by the whole batch's with "batch"."""
    grouped = rewards.view(-1, group_size)  # (prompts, G)
    advantages = (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)  # (N,)
    if scale_rewards == "group":
        return advantages / (grouped.std(dim=1).repeat_interleave(group_size) + STD_EPSILON)
    if scale_rewards == "batch":
        return advantages / (rewards.std() + STD_EPSILON)
    return advantages


@dataclass(frozen=True)
class Rollout:
    """A step's samples, scored: everything the loss needs that does not change with the weights."""

    prompt_ids: tuple[list[int], ...]
    """(N,) the prompt of each completion (prompt i repeated group_size times)."""
    completions: Completions
    rewards: torch.Tensor
    """(N,) fp32."""
    advantages: torch.Tensor
    """(N,) fp32, group-normalised."""
    old_log_probs: torch.Tensor | None
    """(N, T) the sampling policy's per-token log-probabilities (num_iterations > 1); None: on-policy,
    the current ones detached (the ratio is exactly 1)."""
    ref_log_probs: torch.Tensor | None
    """(N, T) the base's per-token log-probabilities (beta > 0), else None."""

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def rows(self, start: int, stop: int) -> Rollout:
        """Completions start..stop-1: a micro-batch's piece of the step."""
        cut = lambda t: None if t is None else t[start:stop]  # noqa: E731
        c = self.completions
        return replace(self, prompt_ids=self.prompt_ids[start:stop],
                       completions=Completions(c.ids[start:stop], c.mask[start:stop], c.truncated[start:stop]),
                       rewards=self.rewards[start:stop], advantages=self.advantages[start:stop],
                       old_log_probs=cut(self.old_log_probs), ref_log_probs=cut(self.ref_log_probs))


def pack_completions(prompt_ids: Sequence[list[int]], completions: Completions) -> Batch:
    """Each prompt + its completion as one packed sequence (no padding, positions restarting), trained
    on the completion's tokens only: the last prompt position predicts the first completion token."""
    ids, targets, positions, bounds = [], [], [], [0]
    for prompt, row, n in zip(prompt_ids, completions.ids, completions.mask.sum(1).tolist()):
        completion = row[:n].tolist()
        sequence = list(prompt) + completion
        target = [IGNORE] * len(sequence)
        target[len(prompt) - 1 : len(sequence) - 1] = completion
        ids += sequence
        targets += target
        positions += range(len(sequence))
        bounds.append(bounds[-1] + len(sequence))
    as_row = lambda values: torch.from_numpy(np.asarray(values, dtype=np.int64))[None]  # noqa: E731
    return Batch(input_ids=as_row(ids), position_ids=as_row(positions), targets=as_row(targets),
                 bounds=torch.tensor(bounds, dtype=torch.int32), sources=("grpo",) * len(prompt_ids))


def completion_log_probs(model: Any, prompt_ids: Sequence[list[int]], completions: Completions,
                         device: torch.device, temperature: float) -> torch.Tensor:
    """(N, T) each completion token's log-probability under softmax(logits / temperature), 0 where the
    mask is 0; through the packed batch and the chunked head (no [tokens x vocab] logits at once)."""
    flat = token_log_probs(model, pack_completions(prompt_ids, completions), device, temperature)  # (n_tokens,)
    mask = completions.mask.to(device).bool()
    return torch.zeros(mask.shape, dtype=flat.dtype, device=device).masked_scatter(mask, flat)


def roll_out(model: Any, prompt_ids: Sequence[list[int]], rows: Sequence[Any], reward: RewardFunction,
             tokenizer: Any, settings: GrpoConfig, eos_ids: Sequence[int], pad_id: int, seed: int,
             device: torch.device, reference: Reference | None = None, sample: Sampler | None = None) -> Rollout:
    """Sample `group_size` completions of each prompt (seeded: the step's seed gives the step's
    samples), reward their text (special tokens dropped) with `reward`, and compute their advantages;
    the base's log-probabilities when beta > 0 (`reference` enters it), the sampling policy's when the
    samples serve several iterations. `sample` draws them: a `VllmSampler`, or None: the batched decoder."""
    completions = (sample or sample_completions)(model, prompt_ids, settings.group_size, settings.temperature,
                                                 settings.top_p, settings.max_completion_tokens, eos_ids, pad_id, seed)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in completions.lists()]
    repeated = [row for row in rows for _ in range(settings.group_size)]
    rewards = torch.tensor([float(r) for r in reward(texts, repeated)], dtype=torch.float32)
    if rewards.shape != (len(texts),) or not torch.isfinite(rewards).all():
        raise ValueError(f"the reward function must return one finite number per completion ({len(texts)}), "
                         f"got {rewards.tolist()}")
    prompts = tuple(list(p) for p in prompt_ids for _ in range(settings.group_size))
    with torch.no_grad():
        old = None
        if settings.num_iterations > 1:
            old = completion_log_probs(model, prompts, completions, device, settings.temperature).detach()
        ref = None
        if settings.beta > 0:
            if reference is None:
                raise ValueError("beta > 0 needs the base model: pass reference=")
            with reference() as base:
                ref = completion_log_probs(base, prompts, completions, device, settings.temperature).detach()
    advantages = group_advantages(rewards, settings.group_size, settings.scale_rewards)
    return Rollout(prompts, completions, rewards, advantages, old, ref)


@dataclass(frozen=True)
class StepTotals:
    """What the step's loss is averaged over, summed over all its pieces (and processes)."""

    sequences: int
    tokens: int
    """Completion tokens (the mask's ones)."""
    pieces: int = 1
    """Micro-batches of the step (bnpo averages within each, then over them, as TRL)."""

    @classmethod
    def of(cls, rollout: Rollout) -> StepTotals:
        return cls(len(rollout), int(rollout.completions.mask.sum()))


def token_losses(log_probs: torch.Tensor, old_log_probs: torch.Tensor, ref_log_probs: torch.Tensor | None,
                 advantages: torch.Tensor, settings: GrpoConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token loss, per-token KL or zeros, per-token clipped flags), (N, T) each:
    -min(r A, clip(r, 1 - eps, 1 + eps_high) A) + beta x KL_k3 (x r with `kl_bias_correction`),
    r = exp(log p - log p_old)."""
    advantages = advantages[:, None]  # (N, 1)
    ratio = torch.exp(log_probs - old_log_probs)  # (N, T)
    clipped_ratio = torch.clamp(ratio, 1 - settings.epsilon, 1 + settings.clip_high)
    losses = -torch.min(ratio * advantages, clipped_ratio * advantages)
    clipped = (((ratio < 1 - settings.epsilon) & (advantages < 0))
               | ((ratio > 1 + settings.clip_high) & (advantages > 0)))  # where the clip took the gradient away
    kl = torch.zeros_like(losses)
    if settings.beta > 0:
        gap = ref_log_probs - log_probs
        kl = torch.exp(gap) - gap - 1  # k3: unbiased, always >= 0 (Schulman 2020; TRL's estimator)
        if settings.kl_bias_correction:  # x r: the gradient becomes (log p - log ref) d log p, the reverse KL's
            kl = kl * ratio
        losses = losses + settings.beta * kl
    return losses, kl, clipped


def aggregate(losses: torch.Tensor, mask: torch.Tensor, settings: GrpoConfig, totals: StepTotals) -> torch.Tensor:
    """The piece's share of the step's loss: its masked per-token losses (N, T) summed and divided as
    `loss_type` says, by the step's totals, so the pieces' shares add up to the step's loss."""
    masked = losses * mask
    if settings.loss_type == "grpo":  # each completion's mean, then the mean over completions
        return (masked.sum(1) / mask.sum(1).clamp(min=1)).sum() / totals.sequences
    if settings.loss_type == "bnpo":  # the piece's token mean, then the mean over pieces
        return masked.sum() / mask.sum().clamp(min=1) / totals.pieces
    if settings.loss_type == "dr_grpo":  # a constant: completions x the longest completion allowed
        return masked.sum() / (totals.sequences * settings.max_completion_tokens)
    return masked.sum() / max(1, totals.tokens)  # dapo: every completion token of the step weighs the same


def grpo_loss(model: Any, rollout: Rollout, settings: GrpoConfig, device: torch.device,
              totals: StepTotals | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """(the rollout's share of the step's loss, with its graph; its clip fraction and KL per completion
    token). `totals`: the whole step's, when the rollout is one piece of it (default: it is the step)."""
    totals = totals or StepTotals.of(rollout)
    log_probs = completion_log_probs(model, rollout.prompt_ids, rollout.completions, device,
                                     settings.temperature)  # (N, T)
    old = log_probs.detach() if rollout.old_log_probs is None else rollout.old_log_probs.to(device)
    ref = None if rollout.ref_log_probs is None else rollout.ref_log_probs.to(device)
    advantages = rollout.advantages.to(device=device, dtype=log_probs.dtype)
    losses, kl, clipped = token_losses(log_probs, old, ref, advantages, settings)
    mask = rollout.completions.mask.to(device=device, dtype=log_probs.dtype)
    tokens = float(mask.sum().clamp(min=1))
    return aggregate(losses, mask, settings, totals), {
        "clip_fraction": float((clipped * mask).sum()) / tokens, "kl": float((kl.detach() * mask).sum()) / tokens}


def rollout_metrics(rollout: Rollout, group_size: int) -> dict[str, float]:
    """What a step's samples say before any gradient: reward mean and std, the share of groups whose
    rewards all agree (they teach nothing), completion length and the share cut at the limit."""
    rewards = rollout.rewards
    spread = rewards.view(-1, group_size).std(dim=1)
    return {"reward": float(rewards.mean()), "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "flat_groups": float((spread < 1e-8).float().mean()),
            "completion_tokens": float(rollout.completions.mask.sum(1).float().mean()),
            "truncated": float(rollout.completions.truncated.float().mean())}


def grpo_step(model: Any, prompt_ids: Sequence[list[int]], rows: Sequence[Any], reward: RewardFunction,
              tokenizer: Any, settings: GrpoConfig, eos_ids: Sequence[int], pad_id: int, seed: int,
              device: torch.device, reference: Reference | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss (with its graph; the caller runs backward and the optimizer) and its metrics:
    reward, reward_std, flat_groups, completion_tokens, truncated, clip_fraction, kl."""
    rollout = roll_out(model, prompt_ids, rows, reward, tokenizer, settings, eos_ids, pad_id, seed, device, reference)
    loss, metrics = grpo_loss(model, rollout, settings, device)
    return loss, {**rollout_metrics(rollout, settings.group_size), **metrics}
