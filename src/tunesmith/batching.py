"""Batches and the loss: packing without cross-example attention, loss only on trained positions."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import IGNORE, Example


@dataclass(frozen=True)
class Batch:
    """Examples packed into one row: no padding, position ids restart per example."""

    input_ids: torch.Tensor  # (1, T) T = total tokens of the packed examples
    position_ids: torch.Tensor  # (1, T) 0..len-1 per example, which tells attention where examples end
    targets: torch.Tensor  # (1, T) next-token targets, IGNORE where untrained
    bounds: torch.Tensor  # (n_examples + 1,) cumulative example lengths: example i is [bounds[i], bounds[i+1])
    sources: tuple[str, ...]

    @property
    def n_tokens(self) -> int:
        return self.input_ids.shape[1]

    @property
    def n_trained(self) -> int:
        return int((self.targets != IGNORE).sum())


def pack_examples(examples: Sequence[Example]) -> Batch:
    """Concatenate examples; transformers sees restarting position ids and masks across examples."""
    lengths = [len(e.input_ids) for e in examples]
    input_ids = np.concatenate([np.asarray(e.input_ids, dtype=np.int64) for e in examples])  # (T,)
    targets = np.concatenate([np.asarray(e.targets, dtype=np.int64) for e in examples])  # (T,)
    positions = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])  # (T,)
    return Batch(
        input_ids=torch.from_numpy(input_ids)[None],
        position_ids=torch.from_numpy(positions)[None],
        targets=torch.from_numpy(targets)[None],
        bounds=torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32),
        sources=tuple(e.source for e in examples),
    )


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch; a pure function of (seed, epoch), so resumable."""
    order = list(range(n_examples))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return order


def micro_batches(examples: Sequence[Example], batch_size: int, seed: int, start_epoch: int = 0,
                  start_index: int = 0) -> Iterator[tuple[int, int, Batch]]:
    """Endless (epoch, index in epoch, batch) stream over shuffled epochs, from any position."""
    epoch, start = start_epoch, start_index
    while True:
        order = epoch_order(len(examples), seed, epoch)
        for i in range(start, len(order), batch_size):
            yield epoch, i, pack_examples([examples[j] for j in order[i : i + batch_size]])
        epoch, start = epoch + 1, 0


def eval_batches(examples: Sequence[Example], batch_size: int) -> list[Batch]:
    """Validation batches in file order."""
    return [pack_examples(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


def loss_sum(model: Any, batch: Batch, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the batch's trained positions.

    The LM head runs only where a target exists (`logits_to_keep` with indices), so the
    [tokens x vocab] logits of untrained prompt tokens are never built.
    """
    targets = batch.targets[0].to(device)
    keep = (targets != IGNORE).nonzero().squeeze(1)  # (n_trained,)
    out = model(
        input_ids=batch.input_ids.to(device),
        position_ids=batch.position_ids.to(device),
        logits_to_keep=keep,
        use_cache=False,
        cu_seq_lens_q=batch.bounds,  # read by the packed attention (attention.py); other kernels ignore it
    )
    logits = out.logits[0].float()  # (n_trained, vocab)
    return F.cross_entropy(logits, targets[keep], reduction="sum")
