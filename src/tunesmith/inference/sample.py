"""Seeded sampling of several completions per prompt (GRPO's groups) through the project's batched
decoder (`generate_batch`): the same seed gives the same completions, so a resumed run samples what
the uninterrupted one did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..settings import GENERATION_BATCH
from .decode import generate_batch


class TokenSampler:
    """Seeded sampling for `generate_batch`: for each batch of prompts (their indices in the call) a
    logits processor that draws every next token from softmax(logits / temperature), cut to the top-p
    nucleus, and hands the greedy step a row that only the drawn token can win.

    Each prompt index has its own `torch.Generator`, seeded from (seed, index): a completion's draws do
    not depend on the batch the decoder put it in (its logits can, in their last bits, through the
    batch's padding), and they never touch torch's global RNG (a step's dropout or shuffling cannot
    shift them, nor they those)."""

    def __init__(self, temperature: float, top_p: float, seed: int):
        self.temperature, self.top_p, self.seed = temperature, top_p, seed

    def __call__(self, rows: Sequence[int]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        seeds = [int(np.random.SeedSequence([self.seed, row]).generate_state(1)[0]) for row in rows]
        generators: list[torch.Generator] = []  # made on the logits' device at the first token

        def choose(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            # scores (B, V) fp32: the model's next-token logits after generate's own processors
            if not generators:
                generators.extend(torch.Generator(device=scores.device).manual_seed(s) for s in seeds)
            probs = nucleus(torch.softmax(scores / self.temperature, dim=-1), self.top_p)  # (B, V)
            picks = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])  # (B,)
            return torch.full_like(scores, -torch.inf).scatter_(1, picks[:, None], 0.0)

        return choose


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) probabilities outside the smallest set of most likely tokens whose mass reaches `top_p`
    set to 0 (the most likely token always stays), as transformers' TopPLogitsWarper and vLLM cut."""
    if top_p >= 1.0:
        return probs
    ordered, order = probs.sort(dim=-1, descending=True)
    before = ordered.cumsum(dim=-1) - ordered  # mass of the more likely tokens
    return probs.scatter(-1, order, ordered.masked_fill(before >= top_p, 0.0))


@dataclass(frozen=True)
class Completions:
    """`group_size` completions of each prompt, prompt-major: rows i*G .. i*G+G-1 answer prompt i."""

    ids: torch.Tensor
    """(N, T) completion token ids, right-padded with the pad id; N = prompts x group_size, T the longest."""
    mask: torch.Tensor
    """(N, T) 1 on each completion's tokens up to and including its first end-of-turn token, 0 after."""
    truncated: torch.Tensor
    """(N,) True where the completion reached `max_new_tokens` without an end-of-turn token."""

    def lists(self) -> list[list[int]]:
        return [row[: int(n)].tolist() for row, n in zip(self.ids, self.mask.sum(1))]


def sample_completions(model: Any, prompt_ids: Sequence[list[int]], group_size: int, temperature: float,
                       top_p: float, max_new_tokens: int, eos_ids: Sequence[int], pad_id: int, seed: int,
                       batch_size: int = GENERATION_BATCH) -> Completions:
    """`group_size` sampled completions of each token-id prompt, each cut after its first token of
    `eos_ids` (kept: the model is rewarded and trained for ending its turn). Decoded in eval mode in
    the decoder's left-padded batches; a function of (weights, prompts, settings, seed)."""
    prompts = [list(p) for p in prompt_ids for _ in range(group_size)]  # (N,) prompt-major
    was_training = model.training
    model.eval()
    try:
        out = generate_batch(model, prompts, max_new_tokens, eos_ids, pad_id, batch_size,
                             sampler=TokenSampler(temperature, top_p, seed))
    finally:
        model.train(was_training)
    width = max(1, max(len(c) for c in out))
    ids = torch.full((len(out), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(out), width), dtype=torch.long)
    for row, completion in enumerate(out):
        ids[row, : len(completion)] = torch.tensor(completion, dtype=torch.long)
        mask[row, : len(completion)] = 1
    ends = set(eos_ids)
    truncated = torch.tensor([not c or c[-1] not in ends for c in out])
    return Completions(ids, mask, truncated)
