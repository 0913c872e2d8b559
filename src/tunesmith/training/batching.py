"""Batches and the loss: packing without cross-example attention, loss only on trained positions."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import IGNORE, Example
from ..model.head_loss import chunked_head, head_returns_loss


@dataclass(frozen=True)
class Batch:
    """Examples packed into one row: no padding, position ids restart per example."""

    input_ids: torch.Tensor  # (1, T) T = total tokens of the packed examples
    position_ids: torch.Tensor  # (1, T) 0..len-1 per example, which tells attention where examples end
    targets: torch.Tensor  # (1, T) next-token targets, IGNORE where untrained
    bounds: torch.Tensor  # (n_sequences + 1,) cumulative sequence lengths: sequence i is [bounds[i], bounds[i+1])
    # (one sequence per example; two per preference pair, chosen then rejected)
    sources: tuple[str, ...]

    @property
    def n_tokens(self) -> int:
        return self.input_ids.shape[1]

    @property
    def n_trained(self) -> int:
        return int((self.targets != IGNORE).sum())


def pack_examples(examples: Sequence[Example]) -> Batch:
    """Concatenate examples; transformers sees restarting position ids and masks across examples.

    An example with `segments` (a preference pair: chosen, then rejected) is that many sequences
    that do not attend to each other; `sources` keeps one entry per example."""
    lengths = [n for e in examples for n in getattr(e, "segments", (len(e.input_ids),))]
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


def split_batch(batch: Batch, max_tokens: int | None, per_example: int = 1) -> list[Batch]:
    """`batch` as consecutive pieces of whole examples of at most `max_tokens` tokens each (an
    example longer than that is a piece alone); the batch itself when it fits or `max_tokens` is None.
    `per_example`: sequences per example (2 for preference pairs, which are never cut apart).

    The summed losses of the pieces are the batch's, so running them one after another and adding
    their gradients changes nothing but the peak memory, which follows the piece, not the batch.
    """
    if max_tokens is None or batch.n_tokens <= max_tokens:
        return [batch]
    bounds = batch.bounds.tolist()[::per_example]  # the examples' edges
    cuts, start = [0], 0
    for i in range(1, len(bounds) - 1):  # cut before example i when it would overfill the piece
        if bounds[i + 1] - bounds[start] > max_tokens:
            cuts.append(i)
            start = i
    cuts.append(len(bounds) - 1)
    pieces = []
    for first, last in itertools.pairwise(cuts):
        a, z = bounds[first], bounds[last]
        pieces.append(Batch(input_ids=batch.input_ids[:, a:z], position_ids=batch.position_ids[:, a:z],
                            targets=batch.targets[:, a:z],
                            bounds=batch.bounds[first * per_example : last * per_example + 1] - a,
                            sources=batch.sources[first:last]))
    return pieces


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch; a pure function of (seed, epoch), so resumable."""
    order = list(range(n_examples))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return order


def best_fit_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: longest first, each item into the open bin it fills most tightly.

    Returns bins of item indices; within equal lengths the given order is kept (pure, resumable).
    """
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, bin id), sorted
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        spot = bisect.bisect_left(room, (lengths[item], -1))
        if spot == len(room):  # no open bin has room: open one
            bins.append([item])
            bisect.insort(room, (capacity - lengths[item], len(bins) - 1))
        else:
            free, bin_id = room.pop(spot)
            bins[bin_id].append(item)
            bisect.insort(room, (free - lengths[item], bin_id))
    return bins


def epoch_plan(examples: Sequence[Example], batch_size: int, seed: int, epoch: int,
               batch_tokens: int | None = None) -> list[list[int]]:
    """The micro-batches (example indices) of one epoch: `batch_size` examples in shuffled order, or
    bins of at most `batch_tokens` tokens in shuffled order. A pure function, so resumable."""
    order = epoch_order(len(examples), seed, epoch)
    if batch_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bins = best_fit_bins([len(examples[j].input_ids) for j in order], batch_tokens)
    random.Random(seed * 100_003 + epoch + 1).shuffle(bins)  # else the fullest bins come first
    return [[order[i] for i in b] for b in bins]


def micro_batches(examples: Sequence[Example], batch_size: int, seed: int, start_epoch: int = 0,
                  start_index: int = 0, batch_tokens: int | None = None) -> Iterator[tuple[int, int, Batch]]:
    """Endless (epoch, examples of the epoch before this batch, batch) stream, from any position
    (a preference pair is one example: both sides in the same batch)."""
    epoch, start = start_epoch, start_index
    while True:
        consumed = 0
        for members in epoch_plan(examples, batch_size, seed, epoch, batch_tokens):
            if consumed >= start:
                yield epoch, consumed, pack_examples([examples[j] for j in members])
            consumed += len(members)
        epoch, start = epoch + 1, 0


def eval_batches(examples: Sequence[Example], batch_size: int) -> list[Batch]:
    """Validation batches in file order."""
    return [pack_examples(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


def loss_sum(model: Any, batch: Batch, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the batch's trained positions.

    The LM head runs only where a target exists (`logits_to_keep` with indices), so the logits of
    untrained prompt tokens are never built; and it runs in chunks of rows with the loss computed
    inside (head_loss.py), so the [trained tokens x vocab] logits never exist at once either.
    """
    return _trained_positions(model, batch, device, per_row=False)[0]


def sequence_log_probs(model: Any, batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each sequence's trained tokens, its trained tokens), (n_sequences,)
    each, with `loss_sum`'s economy: the head runs on trained positions only, in chunks."""
    row_log_probs, keep = _trained_positions(model, batch, device, per_row=True)  # (n_trained,) each
    ends = batch.bounds[1:].to(device=device, dtype=torch.int64)
    sequence = torch.bucketize(keep, ends, right=True)  # the sequence of each trained position
    n = len(ends)
    sums = torch.zeros(n, dtype=row_log_probs.dtype, device=device).index_add(0, sequence, row_log_probs)
    return sums, torch.bincount(sequence, minlength=n)


def token_log_probs(model: Any, batch: Batch, device: torch.device, temperature: float = 1.0) -> torch.Tensor:
    """(n_trained,) the log-probability of each trained position's target under softmax(logits /
    temperature), in the batch's order, with `loss_sum`'s economy (GRPO's per-token ratios)."""
    return _trained_positions(model, batch, device, per_row=True, temperature=temperature)[0]


def _trained_positions(model: Any, batch: Batch, device: torch.device, per_row: bool, temperature: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(the summed cross-entropy, or with `per_row` each trained position's log-probability; the
    trained positions' indices)."""
    targets = batch.targets[0].to(device)
    keep = (targets != IGNORE).nonzero().squeeze(1)  # (n_trained,)
    head = chunked_head(model)
    with head_returns_loss(head, targets[keep], per_row, temperature) if head is not None else contextlib.nullcontext():
        out = model(
            input_ids=batch.input_ids.to(device),
            position_ids=batch.position_ids.to(device),
            logits_to_keep=keep,
            use_cache=False,
            cu_seq_lens_q=batch.bounds,  # read by the packed attention (attention.py); other kernels ignore it
        )
    if head is not None:
        return out.logits, keep  # from the head: the summed loss, or the rows' log-probabilities
    logits = out.logits[0].float() / temperature  # (n_trained, vocab)
    if per_row:
        return torch.log_softmax(logits, dim=1).gather(1, targets[keep, None])[:, 0], keep
    return F.cross_entropy(logits, targets[keep], reduction="sum"), keep
