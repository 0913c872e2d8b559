"""The losses training computes: the validation loss, one optimizer step's gradients, the KL term."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..forgetting import kl_to_base_loss
from ..model.precision import autocast
from .batching import Batch, loss_sum, split_batch


def validation_loss(model: Any, batches: list[Batch], device: torch.device, dtype: torch.dtype) -> float:
    """Mean cross-entropy per trained token over all batches (token-weighted, not batch-weighted)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(device, dtype):
        for batch in batches:
            total += float(loss_sum(model, batch, device))
            count += batch.n_trained
    model.train(was_training)
    return total / max(1, count)


@dataclass(frozen=True)
class KLTerm:
    """The KL-to-base mitigation for one step: its weight, a general-text batch per micro-batch, and
    the frozen base (None with adapters: the same model with adapters disabled)."""

    weight: float
    """forgetting.kl_weight: how much KL(base || tuned) adds to the step's loss."""
    batches: list[Batch]
    """One general-text batch per micro-batch of this process."""
    base_model: Any | None
    """The frozen base copy; None with adapters (the tuned model with its adapters disabled)."""


class StepLoss(Protocol):
    """An objective's loss of one piece of a step, already divided by the step's totals (so that the
    pieces' losses add up to the step's), and how many sequences make one of its examples."""

    per_example: int

    def __call__(self, model: Any, piece: Batch, device: torch.device) -> torch.Tensor: ...


def backward_group(model: Any, group: list[Batch], accelerator: Any, dtype: torch.dtype,
                   group_trained: int | None = None, kl_term: KLTerm | None = None,
                   forward_tokens: int | None = None, step_loss: StepLoss | None = None) -> float:
    """Accumulate this process's gradients of one optimizer step; returns its share of the step's
    mean loss per trained token.

    Each micro-batch's summed loss is divided by the trained tokens of the whole step (across
    micro-batches and processes, `group_trained`), not by the number of micro-batches, so two
    micro-batches of N/2 give exactly the gradient of one batch of N whatever their token counts
    (the accumulation bug that bit HF Trainer users). The same makes a micro-batch of more than
    `forward_tokens` tokens safe to run in pieces (`split_batch`). DDP averages gradients over
    processes, so each process scales its part by the world size to make that average the sum
    (FSDP's reduce-scatter averages the same way). `kl_term` adds
    weight x KL(base || tuned) on general text, averaged over the step's micro-batches. `step_loss`
    replaces the cross-entropy by another objective's loss (training/objectives.py), normalised the
    same way by the step's totals.
    """
    n_trained = group_trained or sum(b.n_trained for b in group)
    world = accelerator.num_processes
    total = 0.0
    for i, batch in enumerate(group):
        pieces = split_batch(batch, forward_tokens, step_loss.per_example if step_loss is not None else 1)
        for j, piece in enumerate(pieces):
            last = i == len(group) - 1 and j == len(pieces) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                with autocast(accelerator.device, dtype):
                    loss = step_loss(model, piece, accelerator.device) if step_loss is not None else \
                        loss_sum(model, piece, accelerator.device) / n_trained
                    if kl_term is not None and j == 0:
                        kl = kl_to_base_loss(model, kl_term.batches[i], kl_term.base_model,
                                             inner=accelerator.unwrap_model(model))
                        loss = loss + kl_term.weight * kl / (len(group) * world)
                accelerator.backward(loss * world)
            total += float(loss.detach())
    return total
