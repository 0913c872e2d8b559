"""Model-facing measurements: per-example log-likelihoods, multiple-choice picks, KL between two
views of a model, and batched greedy generation. Everything runs without gradients, in eval mode.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..data import IGNORE, Example, encode_prompt
from ..data.render import encode_text
from ..training.batching import Batch, pack_examples
from .probes import ChoiceItem, TextItem

MAX_BATCH_TOKENS = 512
"""Tokens packed into one forward pass. Packed rows pay attention over the whole L x L square (no
varlen kernel on the CPU), so short rows are cheaper; 512 still keeps the matmuls of a 135M model busy."""


def prompt_ids(tokenizer: Any, user_text: str) -> list[int]:
    """A user turn ending in the assistant header; plain 'Question/Answer' text for models without a template."""
    if getattr(tokenizer, "chat_template", None):
        return encode_prompt([{"role": "user", "content": user_text}], tokenizer)
    return encode_text(tokenizer, f"Question: {user_text}\nAnswer:")


def text_example(item: TextItem, tokenizer: Any, max_tokens: int) -> Example:
    """Every token after the first is a target; the text is cut at `max_tokens`."""
    ids = encode_text(tokenizer, item.text)[:max_tokens]
    return Example(ids, ids[1:] + [IGNORE], item.source)


def continuation_example(context: list[int], continuation: list[int], source: str) -> Example:
    """`context + continuation`, with only the continuation's tokens as targets."""
    ids = context + continuation
    targets = [IGNORE] * (len(context) - 1) + continuation + [IGNORE]
    return Example(ids, targets, source)


def choice_examples(item: ChoiceItem, tokenizer: Any) -> list[Example]:
    """One example per choice, scored on the choice's tokens only."""
    context = prompt_ids(tokenizer, item.context) if item.chat else encode_text(tokenizer, item.context)
    return [continuation_example(context, encode_text(tokenizer, c), item.source) for c in item.choices]


def token_batches(examples: Sequence[Example], max_batch_tokens: int = MAX_BATCH_TOKENS
                  ) -> Iterator[tuple[list[int], Batch]]:
    """(indices, packed batch) groups in order, each under `max_batch_tokens` (one example may exceed it)."""
    group: list[int] = []
    size = 0
    for i, example in enumerate(examples):
        if group and size + len(example.input_ids) > max_batch_tokens:
            yield group, pack_examples([examples[j] for j in group])
            group, size = [], 0
        group.append(i)
        size += len(example.input_ids)
    if group:
        yield group, pack_examples([examples[j] for j in group])


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def kept_logits(model: Any, batch: Batch) -> torch.Tensor:
    """fp32 logits at the batch's target positions only: (n_targets, vocab)."""
    device = _device(model)
    targets = batch.targets[0].to(device)
    keep = (targets != IGNORE).nonzero().squeeze(1)  # (n_targets,)
    out = model(input_ids=batch.input_ids.to(device), position_ids=batch.position_ids.to(device),
                logits_to_keep=keep, use_cache=False)
    return out.logits[0].float()


def _segments(group: list[int], examples: Sequence[Example]) -> list[int]:
    """Number of targets of each example in the group, in order (to split kept logits per example)."""
    return [examples[j].n_trained for j in group]


@torch.no_grad()
def target_logprobs(model: Any, examples: Sequence[Example]) -> list[np.ndarray]:
    """log p(target) at every target position of each example: one (n_targets_i,) array each."""
    out: list[np.ndarray] = []
    for group, batch in token_batches(examples):
        logits = kept_logits(model, batch)  # (n_targets, vocab)
        targets = batch.targets[0][batch.targets[0] != IGNORE].to(logits.device)
        logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)  # (n_targets,)
        out.extend(p.cpu().numpy() for p in torch.split(logp, _segments(group, examples)))
    return out


def choice_correct(model: Any, items: Sequence[ChoiceItem], tokenizer: Any) -> np.ndarray:
    """(n,) 1.0 where the choice with the highest log-likelihood per UTF-8 byte is the answer.

    Per-byte normalisation (lm-eval's acc_norm) keeps long answers from losing only for length,
    and does not depend on the tokenizer.
    """
    examples, owners = [], []
    for k, item in enumerate(items):
        for example in choice_examples(item, tokenizer):
            examples.append(example)
            owners.append(k)
    logps = target_logprobs(model, examples)
    scores: list[list[float]] = [[] for _ in items]
    for k, lp, example in zip(owners, logps, examples):
        scores[k].append(float(lp.sum()))
    correct = np.zeros(len(items))
    for k, item in enumerate(items):
        per_byte = [s / max(1, len(c.encode("utf-8"))) for s, c in zip(scores[k], item.choices)]
        correct[k] = float(int(np.argmax(per_byte)) == item.answer)
    return correct


@torch.no_grad()
def kl_sums(base: contextlib.AbstractContextManager, model: Any, examples: Sequence[Example]) -> np.ndarray:
    """(n, 2): per example, [sum over target positions of KL(base || tuned), number of positions].

    `base` is re-entered per batch and yields the base model (adapters disabled, or a frozen copy);
    the same packed batch goes through both, so the two distributions see identical inputs.
    """
    out = np.zeros((len(examples), 2))
    for group, batch in token_batches(examples):
        with _enter(base) as base_model:
            base_logp = torch.log_softmax(kept_logits(base_model, batch), dim=-1)  # (n_targets, vocab)
        tuned_logp = torch.log_softmax(kept_logits(model, batch), dim=-1)
        # KL(P || Q) = sum_v P(v) (log P(v) - log Q(v)), P = base, Q = tuned.
        kl = (base_logp.exp() * (base_logp - tuned_logp)).sum(-1).clamp_min(0.0)  # (n_targets,)
        for j, part in zip(group, torch.split(kl, _segments(group, examples))):
            out[j] = (float(part.sum()), part.numel())
    return out


def _enter(view: Any) -> contextlib.AbstractContextManager:
    """Accept a zero-argument factory of context managers, so a view can be entered many times."""
    return view() if callable(view) else view
