"""The training objective: cross-entropy on answers (sft), a preference loss on packed pairs (dpo,
orpo), or GRPO on graded samples of prompts (grpo, training/rft.py), with each one's held-out
evaluation. `train.py` calls the session's `Objective` and nothing else differs: batching,
accumulation, checkpoints, resume, signals and the probes are the same code.

DPO (Rafailov et al. 2023, eq. 7): per pair, -log sigmoid(beta x ((log p(chosen) - log ref(chosen)) -
(log p(rejected) - log ref(rejected)))), log p summed over the answer's tokens; the reference is the
base: the same model with its adapters disabled (no second copy), or the frozen copy with method full.
ORPO (Hong et al. 2024, eq. 6-7): the chosen answers' cross-entropy plus lambda x -log sigmoid(log
odds(chosen) - log odds(rejected)), odds(y) = p / (1 - p) with p the mean per-token probability; no
reference. Both as TRL computes them (tests/test_preference.py holds the two to TRL's numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PreferenceConfig, TrainConfig
from ..evaluation.bootstrap import bootstrap_ci
from ..model.base import base_view
from ..model.precision import autocast
from .batching import Batch, sequence_log_probs
from .events import EvaluationEvent
from .loss import validation_loss
from .rft import GroupLoss, RewardTask, group_loss, held_out_rewards


@dataclass(frozen=True)
class PairScores:
    """One piece's pairs scored: losses with their graph, rewards without."""

    losses: torch.Tensor
    """(n_pairs,) the preference term of each pair (DPO's loss; ORPO's odds-ratio term, unweighted)."""
    chosen_nll: torch.Tensor
    """() the chosen answers' summed cross-entropy (ORPO's first term)."""
    chosen_rewards: torch.Tensor
    """(n_pairs,) DPO: beta x log-ratio to the reference; ORPO: mean per-token log-probability."""
    rejected_rewards: torch.Tensor


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation: two forms split at -ln 2 (Maechler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def score_pairs(model: Any, batch: Batch, device: torch.device, objective: str, settings: PreferenceConfig,
                reference: Callable[[], Any] | None) -> PairScores:
    """The pairs of a packed batch (sequences 2i and 2i+1: pair i's chosen and rejected) scored by
    `objective`; `reference` enters the reference model (DPO only)."""
    log_probs, counts = sequence_log_probs(model, batch, device)  # (2n,) each
    chosen, rejected = log_probs[0::2], log_probs[1::2]
    if objective == "dpo":
        with torch.no_grad(), reference() as ref:
            ref_log_probs = sequence_log_probs(ref, batch, device)[0].detach()
        chosen_rewards = settings.beta * (chosen - ref_log_probs[0::2])
        rejected_rewards = settings.beta * (rejected - ref_log_probs[1::2])
        losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    else:
        mean_chosen, mean_rejected = chosen / counts[0::2], rejected / counts[1::2]  # mean log p per token
        log_odds = (mean_chosen - mean_rejected) - (log1mexp(mean_chosen) - log1mexp(mean_rejected))
        losses, chosen_rewards, rejected_rewards = -F.logsigmoid(log_odds), mean_chosen, mean_rejected
    return PairScores(losses, -chosen.sum(), chosen_rewards.detach(), rejected_rewards.detach())


@dataclass(frozen=True)
class PairLoss:
    """A step's preference loss of one piece (a `StepLoss`): DPO's mean over the step's pairs; ORPO's
    chosen cross-entropy per chosen trained token of the step plus lambda x its mean odds-ratio term."""

    objective: str
    settings: PreferenceConfig
    reference: Callable[[Any], Callable[[], Any]] | None
    """The reference model of a model (DPO): its adapters disabled, or the frozen copy."""
    pairs: int
    """Pairs in the whole step (all micro-batches, all processes)."""
    chosen_tokens: int
    """Trained tokens of the step's chosen answers."""
    per_example: int = 2

    def __call__(self, model: Any, piece: Batch, device: torch.device) -> torch.Tensor:
        return self.total(self.score(model, piece, device))

    def score(self, model: Any, piece: Batch, device: torch.device) -> PairScores:
        inner = getattr(model, "module", model)  # DDP keeps the model in .module
        return score_pairs(model, piece, device, self.objective, self.settings,
                           self.reference(inner) if self.reference is not None else None)

    def total(self, scores: PairScores) -> torch.Tensor:
        """The piece's share of the step's loss."""
        if self.objective == "dpo":
            return scores.losses.sum() / self.pairs
        return scores.chosen_nll / self.chosen_tokens + self.settings.orpo_lambda * scores.losses.sum() / self.pairs


def chosen_trained(batch: Batch) -> int:
    """Trained tokens of a pair batch's chosen sides (its even sequences)."""
    trained = (batch.targets[0] != -100).to(torch.int64)
    sides = torch.zeros(len(batch.bounds) - 1, dtype=torch.int64).index_add(
        0, torch.bucketize(torch.arange(trained.numel()), batch.bounds[1:].to(torch.int64), right=True), trained)
    return int(sides[0::2].sum())


@dataclass(frozen=True)
class Objective:
    """What a run's steps minimise and how its evaluations measure it (the session's `objective`)."""

    name: str
    """The config's `objective`: sft, dpo, orpo or grpo."""
    settings: PreferenceConfig
    base_copy: Any | None
    """The frozen base of full fine-tuning (the DPO reference, GRPO's KL base); None with adapters."""
    rewards: RewardTask | None = None
    """Objective grpo: its settings, grader and prompts' rows; None for the others."""

    def reference(self) -> Callable[[Any], Callable[[], Any]] | None:
        if self.name != "dpo" and not (self.rewards is not None and self.rewards.settings.beta > 0):
            return None
        return lambda inner: base_view(inner, self.base_copy)

    def close(self) -> None:
        """Stop what the objective started: GRPO's python graders' processes, its judge's client, its vLLM folder."""
        if self.rewards is not None:
            self.rewards.close()

    def trained_tokens(self, batch: Batch) -> int:
        """The tokens a micro-batch trains, which size the KL term's general text (forgetting.kl_tokens
        per trained token): its answers' tokens; for grpo, the most its completions can have (prompts x
        group_size x max_completion_tokens), as the text is drawn before the step samples them."""
        if self.rewards is None:
            return batch.n_trained
        return len(batch.sources) * self.rewards.settings.group_size * self.rewards.settings.max_completion_tokens

    @property
    def splits_batches(self) -> bool:
        """Whether a micro-batch may run in pieces of `forward_tokens`: not GRPO's, whose prompts are
        a small part of what its forward pass reads (group_size completions each); batch_size bounds it."""
        return self.rewards is None

    def step_loss(self, batches: list[Batch], model: Any = None, step: int = 0, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> PairLoss | GroupLoss | None:
        """The loss of a step of these micro-batches (all processes'); None: cross-entropy (sft). GRPO
        samples and grades the step's answers here, with the unwrapped `model`, seeded by `step`."""
        if self.name == "sft":
            return None
        if self.rewards is not None:
            reference = self.reference()
            return group_loss(self.rewards, model, batches, step, device, dtype,
                              reference(model) if reference is not None else None)
        return PairLoss(self.name, self.settings, self.reference(), sum(len(b.sources) for b in batches),
                        max(1, sum(chosen_trained(b) for b in batches)))

    def evaluate(self, model: Any, batches: list[Batch], device: torch.device, dtype: torch.dtype,
                 step: int) -> EvaluationEvent:
        """The validation loss (sft: per trained token; dpo, orpo: the step loss over the held-out
        pairs; grpo: minus the held-out greedy reward) and, for preference, held-out preference
        accuracy and reward margin, for grpo the held-out rewards, with 95% intervals."""
        if self.name == "sft":
            return EvaluationEvent(step, validation_loss(model, batches, device, dtype))
        if self.rewards is not None:
            rewards = held_out_rewards(self.rewards, getattr(model, "module", model), batches, device, dtype)
            return EvaluationEvent(step, 0.0 - rewards["reward"], reward=rewards)  # 0 - r: no -0.0 in the record
        was_training = model.training
        model.eval()
        loss = self.step_loss(batches)
        with torch.no_grad(), autocast(device, dtype):
            scored = [loss.score(model, batch, device) for batch in batches]
        model.train(was_training)
        chosen, rejected = (torch.cat([getattr(s, side) for s in scored]).float().cpu().numpy()
                            for side in ("chosen_rewards", "rejected_rewards"))
        return EvaluationEvent(step, sum(float(loss.total(s)) for s in scored), preference_metrics(chosen, rejected))


def preference_metrics(chosen: np.ndarray, rejected: np.ndarray) -> dict[str, Any]:
    """Held-out preference accuracy (chosen scored above rejected; a tie counts half, so the untouched
    DPO model scores 0.5) and mean reward margin, each with its 95% bootstrap interval over pairs."""
    wins = (chosen > rejected) + 0.5 * (chosen == rejected)  # (n,)
    margins = chosen - rejected
    ones = np.ones(len(wins))
    return {"preference_accuracy": float(wins.mean()), "preference_accuracy_ci": list(bootstrap_ci(wins, ones)),
            "reward_margin": float(margins.mean()), "reward_margin_ci": list(bootstrap_ci(margins, ones)),
            "pairs": len(wins)}


def objective_for(config: TrainConfig, base_copy: Any | None, rewards: RewardTask | None = None) -> Objective:
    return Objective(config.objective, config.preference, base_copy, rewards)


def reference_needed(config: TrainConfig) -> bool:
    """Whether the run needs the base beside the trained model for its loss (DPO's reference, GRPO's
    KL to the base when grpo.beta > 0)."""
    return config.objective == "dpo" or (config.objective == "grpo" and config.grpo.beta > 0)


