"""Seeded sampling of several completions per prompt (GRPO's groups) through the project's batched
decoder (`generate_batch`), or through vLLM on a GPU (`VllmSampler`): the same seed gives the same
completions, so a resumed run samples what the uninterrupted one did."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..grpo_config import VLLM_METHODS
from ..settings import GENERATION_BATCH
from .decode import cut_after_end, generate_batch


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
        seeds = completion_seeds(self.seed, rows)
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
    return completions_of(out, eos_ids, pad_id)


def completion_seeds(seed: int, rows: Sequence[int]) -> list[int]:
    """Each completion's own seed, from the call's seed and the completion's index: the same draws in
    any batch, by either sampler."""
    return [int(np.random.SeedSequence([seed, row]).generate_state(1)[0]) for row in rows]


def completions_of(out: Sequence[list[int]], eos_ids: Sequence[int], pad_id: int) -> Completions:
    """Completions from token-id lists, each already cut after its first end-of-turn token."""
    width = max(1, max(len(c) for c in out))
    ids = torch.full((len(out), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(out), width), dtype=torch.long)
    for row, completion in enumerate(out):
        ids[row, : len(completion)] = torch.tensor(completion, dtype=torch.long)
        mask[row, : len(completion)] = 1
    ends = set(eos_ids)
    truncated = torch.tensor([not c or c[-1] not in ends for c in out])
    return Completions(ids, mask, truncated)


Sampler = Callable[..., Completions]
"""`sample_completions`' signature: (model, prompt_ids, group_size, temperature, top_p, max_new_tokens,
eos_ids, pad_id, seed) -> Completions."""


class VllmSampler:
    """GRPO's samples drawn by vLLM (GPU), as serve's vLLM engine answers: the base loaded once with LoRA
    enabled, and at every call the policy's adapter as it is now, saved to a fresh folder and passed as
    a new LoRARequest (vLLM caches adapters by id, so each call's weights get their own). Each
    completion is its own request with its own seed (`completion_seeds`, as `TokenSampler` seeds), so
    a resumed run asks for what the uninterrupted one did; vLLM's kernels, not transformers', draw them,
    so the two samplers' completions differ. The loss scores the samples under the training model."""

    def __init__(self, model_path: str, lora_rank: int, memory_share: float = 0.3) -> None:
        import importlib
        import tempfile

        try:
            self.vllm = importlib.import_module("vllm")
            self.lora_request = importlib.import_module("vllm.lora.request").LoRARequest
        except ImportError:
            from ..errors import ConfigError

            raise ConfigError("config key 'grpo.sampler' is vllm, and the 'vllm' package is not installed: pip "
                              "install vllm (Linux with an NVIDIA GPU), or set grpo.sampler: transformers") from None
        # training shares the GPU: vLLM takes `memory_share` of it for its weights and KV cache
        self.llm = self.vllm.LLM(model=model_path, enable_lora=True, max_lora_rank=lora_rank,
                                 gpu_memory_utilization=memory_share)
        self.folder = Path(tempfile.mkdtemp(prefix="tunesmith-vllm-policy-"))
        self.calls = 0

    def __call__(self, model: Any, prompt_ids: Sequence[list[int]], group_size: int, temperature: float,
                 top_p: float, max_new_tokens: int, eos_ids: Sequence[int], pad_id: int, seed: int) -> Completions:
        self.calls += 1
        adapter = self.folder / f"policy-{self.calls}"
        model.save_pretrained(str(adapter))  # peft: the adapter's weights and config only
        prompts = [list(p) for p in prompt_ids for _ in range(group_size)]  # (N,) prompt-major
        params = [self.vllm.SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                           seed=s, stop_token_ids=sorted(eos_ids))
                  for s in completion_seeds(seed, range(len(prompts)))]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                    lora_request=self.lora_request(adapter.name, self.calls, str(adapter)),
                                    use_tqdm=False)
        shutil.rmtree(self.folder / f"policy-{self.calls - 1}", ignore_errors=True)  # loaded: the last one stays
        ends = set(eos_ids)
        return completions_of([cut_after_end(list(o.outputs[0].token_ids), ends) for o in outputs], eos_ids, pad_id)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def vllm_wanted(choice: str, method: str) -> bool:
    """Whether GRPO samples with vLLM: `grpo.sampler` vllm, or auto on a CUDA machine where vllm is
    installed and the run trains a LoRA (vLLM takes the policy as a LoRA adapter, and serves no DoRA)."""
    if choice != "auto":
        return choice == "vllm"
    import importlib.util

    return (method in VLLM_METHODS and torch.cuda.is_available()
            and importlib.util.find_spec("vllm") is not None)
