"""The LM head and cross-entropy in chunks of rows: [tokens x vocab] logits never exist at once.

With a 49,152-token vocabulary the logits are the largest tensors of a small model's step: 1,000
trained tokens make 197 MB of fp32 logits, as much again for their softmax gradient, and a bf16
copy of each. Here the head runs `CHUNK_ROWS` rows at a time; each chunk's loss and gradients
(to the hidden states and, when the head trains, to its weight) are computed in the forward pass
and the logits are dropped at once, so the step holds one chunk of logits at most.

The loss is computed inside the head's own forward call (its `forward` is swapped for the length
of one model call), so DDP and FSDP see an ordinary forward: FSDP's gathered weights and DDP's
gradient hooks work unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

CHUNK_ROWS = 256  # rows of logits at a time: 256 x 49,152 fp32 = 50 MB; measured fastest of 64-512 on a 2-core CPU


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of cross_entropy(hidden @ weight.T, targets); gradients made in the forward pass."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int, grads: bool) -> torch.Tensor:
        # hidden (n, d) and weight (V, d) in the compute dtype; targets (n,) all trained. `grads`:
        # whether autograd was on at the call (inside forward it is always off)
        need_hidden, need_weight = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # logits and loss: fp32 at least
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_one = torch.full((1, 1), -1.0, dtype=acc, device=hidden.device)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None
        for start in range(0, hidden.shape[0], chunk):
            rows = hidden[start : start + chunk]  # (c, d)
            target = targets[start : start + chunk, None]  # (c, 1)
            # (c, V): the only logits alive; log-softmax casts up to fp32 in the same pass
            log_probs = torch.log_softmax(rows @ weight.T, dim=1, dtype=acc)
            total -= log_probs.gather(1, target).sum()
            if not (need_hidden or need_weight):
                continue
            grad = log_probs.exp_().scatter_add_(1, target, grad_one.expand(len(target), 1))  # softmax - one-hot
            grad = grad.to(hidden.dtype)
            if need_hidden:
                grad_hidden[start : start + chunk] = grad @ weight
            if need_weight:
                grad_weight += (grad.T @ rows).to(acc)
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight) if g is not None))
        ctx.need = (need_hidden, need_weight)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        # grad_total has the loss's dtype (fp32 at least); torch multiplies bf16 by it in fp32
        grad_hidden = next(saved) * grad_total if ctx.need[0] else None
        grad_weight = next(saved) * grad_total if ctx.need[1] else None
        return grad_hidden, grad_weight, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """Summed cross-entropy of `hidden` (n, d) through the head `weight` (V, d) against `targets` (n,).

    Under autocast both run in the autocast dtype (as the head's Linear would); log-softmax is fp32.
    """
    return _apply_head(_LinearCrossEntropy, hidden, weight, targets, chunk)


class _LinearLogProbs(torch.autograd.Function):
    """log softmax(hidden @ weight.T)[row, target] per row: the preference losses need each sequence's
    summed log-probability, not one total. The rows' gradients to `hidden` are made in the forward
    pass and scaled by each row's incoming gradient; the head weight's (full fine-tuning only) needs
    that gradient inside the sum, so it is recomputed chunk by chunk in the backward pass."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int, grads: bool) -> torch.Tensor:
        need_hidden, need_weight = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
        acc = torch.promote_types(hidden.dtype, torch.float32)
        out = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)  # (n,)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        for start in range(0, hidden.shape[0], chunk):
            rows, target = hidden[start : start + chunk], targets[start : start + chunk, None]  # (c, d), (c, 1)
            log_probs = torch.log_softmax(rows @ weight.T, dim=1, dtype=acc)  # (c, V)
            out[start : start + chunk] = log_probs.gather(1, target)[:, 0]
            if need_hidden:  # d log p[target] / d logits = one-hot - softmax
                grad = _one_hot_minus_softmax(log_probs, target).to(hidden.dtype)
                grad_hidden[start : start + chunk] = grad @ weight
        ctx.save_for_backward(grad_hidden if need_hidden else None, *((hidden, weight, targets) if need_weight else ()))
        ctx.need, ctx.chunk = (need_hidden, need_weight), chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        grad_hidden = saved[0] * grad_out[:, None].to(saved[0].dtype) if ctx.need[0] else None
        grad_weight = None
        if ctx.need[1]:
            hidden, weight, targets = saved[1:]
            acc = torch.promote_types(hidden.dtype, torch.float32)
            grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
            for start in range(0, hidden.shape[0], ctx.chunk):
                rows, target = hidden[start : start + ctx.chunk], targets[start : start + ctx.chunk, None]
                grad = _one_hot_minus_softmax(torch.log_softmax(rows @ weight.T, dim=1, dtype=acc), target)
                grad_weight += ((grad * grad_out[start : start + ctx.chunk, None]).to(hidden.dtype).T @ rows).to(acc)
        return grad_hidden, grad_weight, None, None, None


def _one_hot_minus_softmax(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(c, V) one-hot(target) - softmax, made in place of `log_probs`."""
    grad = log_probs.exp_().neg_()
    return grad.scatter_add_(1, target, torch.ones_like(target, dtype=grad.dtype))


def linear_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                     chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """(n,) log-probability of each row's target through the head `weight` (V, d), fp32 at least;
    the autocast dtype as in `linear_cross_entropy`."""
    return _apply_head(_LinearLogProbs, hidden, weight, targets, chunk)


def _apply_head(function: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int) -> torch.Tensor:
    """`function` (an autograd Function over the head) in the autocast dtype when autocast is on, as
    the head's Linear would run, else in the hidden states' dtype; autocast off inside it."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    elif weight.dtype != hidden.dtype:
        weight = weight.to(hidden.dtype)
    with torch.autocast(device, enabled=False):
        return function.apply(hidden, weight, targets, chunk, torch.is_grad_enabled())


def chunked_head(model: Any) -> torch.nn.Linear | None:
    """The model's output layer when the chunked loss can stand in for it, else None.

    It can when the head is a bias-free Linear whose logits the model does not post-process
    (Gemma's final logit soft-capping does, so those models keep the plain path).
    """
    inner = getattr(model, "module", model)  # DDP keeps the model in .module
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    config = getattr(inner, "config", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    if getattr(config, "final_logit_softcapping", None) is not None:
        return None
    return head


@contextlib.contextmanager
def head_returns_loss(head: torch.nn.Linear, targets: torch.Tensor, per_row: bool = False,
                      temperature: float = 1.0) -> Iterator[None]:
    """For one model call, the head returns the summed cross-entropy of its rows against `targets`
    (in the model output's `logits` field) instead of their logits; with `per_row`, each row's
    log-probability of its target, (n,). `temperature`: the logits divided by it first (GRPO scores
    its samples under the temperature that drew them); the head has no bias, so the hidden states are."""
    loss = linear_log_probs if per_row else linear_cross_entropy
    scale = (lambda hidden: hidden) if temperature == 1.0 else (lambda hidden: hidden / temperature)
    head.forward = lambda hidden: loss(scale(hidden.reshape(-1, hidden.shape[-1])), head.weight, targets, CHUNK_ROWS)
    try:
        yield
    finally:
        del head.forward
