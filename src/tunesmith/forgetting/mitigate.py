"""Mitigations the training loop can switch on: replay of general text, and a KL-to-base term.

Both read general text from the Wikipedia articles that no probe uses, so a mitigation never
trains on what measures it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..data import IGNORE, Example
from ..data.render import encode_text
from ..model.base import base_view
from ..training.batching import Batch, pack_examples
from .probes import PROBE_SEED, replay_texts


def replay_tokens(n_task_trained: int, fraction: float) -> int:
    """General-text tokens to add to a batch with `n_task_trained` task tokens, so that general
    text is `fraction` of the trained tokens: R / (T + R) = f  =>  R = T f / (1 - f)."""
    if fraction <= 0:
        return 0
    return round(n_task_trained * fraction / (1 - fraction))


class ReplaySource:
    """An endless, resumable stream of general-text tokens (held-out Wikipedia, EOS between articles).

    `position` is the only state: save it with a checkpoint and pass it back to resume exactly.
    """

    def __init__(self, tokenizer: Any, max_seq_tokens: int, position: int = 0,
                 texts: Sequence[str] | None = None, seed: int = PROBE_SEED) -> None:
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.stream: list[int] = [t for text in (texts if texts is not None else replay_texts(seed))
                                  for t in encode_text(tokenizer, text) + eos]
        if len(self.stream) < 2:
            raise ValueError("replay needs general text of at least two tokens")
        self.max_seq_tokens = max_seq_tokens
        self.position = position

    def take(self, n_trained: int) -> list[Example]:
        """Examples holding the next `n_trained` target tokens of the stream, each at most
        `max_seq_tokens` long, every token a target (plain language modelling). A chunk's last
        token has no target, so it opens the next chunk; the stream wraps around at its end."""
        examples = []
        while n_trained >= 1:
            targets = min(n_trained, self.max_seq_tokens - 1)
            start = self.position % len(self.stream)
            ids = (self.stream[start:] + self.stream)[: targets + 1]  # wrap: at most one extra pass
            examples.append(Example(ids, ids[1:] + [IGNORE], f"replay@{self.position}"))
            self.position += targets
            n_trained -= targets
        return examples

    def extend(self, batch: Batch, fraction: float) -> Batch:
        """`batch` with general text appended, so it makes up `fraction` of the trained tokens."""
        extra = self.take(replay_tokens(batch.n_trained, fraction))
        if not extra:
            return batch
        general = pack_examples(extra)
        return Batch(
            input_ids=torch.cat([batch.input_ids, general.input_ids], dim=1),  # (1, T + R)
            position_ids=torch.cat([batch.position_ids, general.position_ids], dim=1),
            targets=torch.cat([batch.targets, general.targets], dim=1),
            bounds=torch.cat([batch.bounds, general.bounds[1:] + batch.bounds[-1]]),
            sources=batch.sources + general.sources,
        )

    def batch(self, n_tokens: int) -> Batch:
        """A batch of the next `n_tokens` general-text target tokens (for the KL-to-base term)."""
        return pack_examples(self.take(max(1, n_tokens)))


def kl_to_base_loss(model: Any, batch: Batch, base_model: Any | None = None, inner: Any | None = None) -> torch.Tensor:
    """Mean per-token KL(base || tuned) over the batch's target positions, differentiable in the
    tuned model. The base pass runs without gradients, with the peft adapters disabled (no second
    copy of the model) or on `base_model` when given (full fine-tuning). `inner` is the peft model
    inside `model` when a wrapper (DDP) hides its `disable_adapter`; the base pass goes through it."""
    device = next(model.parameters()).device
    targets = batch.targets[0].to(device)
    keep = (targets != IGNORE).nonzero().squeeze(1)  # (n,)
    inputs = {"input_ids": batch.input_ids.to(device), "position_ids": batch.position_ids.to(device),
              "logits_to_keep": keep, "use_cache": False}
    with torch.no_grad(), base_view(inner if inner is not None else model, base_model)() as base:
        base_logp = F.log_softmax(base(**inputs).logits[0].float(), dim=-1)  # (n, vocab)
    tuned_logp = F.log_softmax(model(**inputs).logits[0].float(), dim=-1)  # (n, vocab)
    # F.kl_div(input=log Q, target=log P, log_target=True) = sum P (log P - log Q) = KL(P || Q).
    return F.kl_div(tuned_logp, base_logp, reduction="sum", log_target=True) / max(1, keep.numel())
