"""Batched greedy decoding of token-id prompts: the one decode path of eval, compare and the probes
(and, with a seeded sampler from inference/sample.py, of GRPO's samples); and the adapter merged
into the weights while a tuned model decodes."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Container, Iterator, Sequence

import torch

from ..settings import GENERATION_BATCH


@torch.no_grad()
def generate_batch(model: Any, prompts: Sequence[list[int]], max_new_tokens: int, eos_ids: Sequence[int],
                   pad_id: int, batch_size: int = GENERATION_BATCH, sampler: Any | None = None) -> list[list[int]]:
    """Greedy continuations of token-id prompts, decoded in left-padded batches of similar length;
    each stops after its first token of `eos_ids` (kept, so a KL probe also scores whether the model
    ends its turn). Same answers as one prompt at a time (tests/test_compare.py); a step of a small
    model is bound by reading its weights, which a batch reads once: eval's 12 demo questions, 64
    new tokens, took 12.3 s in one batch against 60.9 s one at a time, the same tokens (SmolLM2-135M
    + LoRA, 2 cores, transformers 5.x). On the CPU each batch decodes at the threads `FreeCores`
    finds free: on quiet cores eval's 12 answers took 7.5-8.1 s at two threads against 9.7-10.0 s
    at one, and compare's long retrieval prompts 144 s against 241-258 s (16 prompts a batch
    against 8 also helps); beside other jobs one thread is kept, which is faster there.

    `sampler`: given a batch's prompt indices, a logits processor that picks each next token itself
    (inference/sample.py's seeded `TokenSampler`), so the greedy step takes its pick. The thread count
    then stays as it is: a sample must be a function of its seed, and another thread count can change
    the logits' last bits."""
    device = next(model.parameters()).device
    threads = torch.get_num_threads()
    cores = FreeCores(threads) if device.type == "cpu" and sampler is None else None
    try:
        return _generate_batches(model, prompts, max_new_tokens, eos_ids, pad_id, batch_size, device, cores, sampler)
    finally:
        torch.set_num_threads(threads)


def _generate_batches(model: Any, prompts: Sequence[list[int]], max_new_tokens: int, eos_ids: Sequence[int],
                      pad_id: int, batch_size: int, device: torch.device, cores: FreeCores | None,
                      sampler: Any | None = None) -> list[list[int]]:
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad little
    outputs: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        if cores is not None:
            torch.set_num_threads(cores.threads())
        group = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)  # (B, T), padded on the left
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        chooser = {} if sampler is None else {"logits_processor": [sampler(group)]}
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids), pad_token_id=pad_id, **chooser)
        for row, i in enumerate(group):
            outputs[i] = cut_after_end(out[row, width:].tolist(), eos_ids)  # (max_new,) padded after EOS
    return outputs


def cut_after_end(ids: list[int], eos_ids: Container[int]) -> list[int]:
    """Token ids up to and including the first end-of-turn token (all of them when there is none)."""
    return ids[: next((k + 1 for k, t in enumerate(ids) if t in eos_ids), len(ids))]


class FreeCores:
    """How many CPU threads a decoding batch can use: all of torch's when the other processes leave
    the cores free, one when they do not. OpenMP's threads wait for each other at every operation,
    so one thread that loses its core stalls the step: with other jobs on the 2 cores, 2 threads
    decoded 3-7x slower than 1 (16 tokens: 7.3 s against 1.4 s); on free cores 2 threads answer the
    demo's compare prompts in 0.80x the time of 1 (16 at a time: 42.1 s against 52.9 s), the same
    tokens. The others' load is measured, not guessed: the machine's busy CPU time (/proc/stat;
    processes under nice(1) yield and do not count, an autogroup's nice is not visible there) less
    this process's own, since the last batch."""

    def __init__(self, limit: int, probe_s: float = 0.1):
        self.limit = limit
        self.last = self._sample()
        if self.last is not None and limit > 1:
            time.sleep(probe_s)  # a first window, in which this process does nothing

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(the machine's busy CPU seconds, this process's CPU seconds, wall seconds); None off Linux."""
        try:
            with open("/proc/stat") as f:
                user, _nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
        except (OSError, ValueError):
            return None
        own = os.times()
        return ((user + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), own.user + own.system,
                time.monotonic())

    def threads(self) -> int:
        now = self._sample()
        if now is None or self.last is None or self.limit == 1:
            return 1
        busy, own, wall = (b - a for a, b in zip(self.last, now))
        self.last = now
        others = max(0.0, busy - own) / max(wall, 1e-3)  # cores the other processes kept busy
        return max(1, min(self.limit, int(len(os.sched_getaffinity(0)) - others + 0.5)))


@contextlib.contextmanager
def adapters_merged(model: Any) -> Iterator[Any]:
    """The peft model with its LoRA/DoRA deltas added into the base weights while inside, restored
    bit for bit on exit: each layer's weight is computed into a new tensor (peft's safe merge), the
    original tensor is kept aside and put back, rather than subtracting the delta again (W + d - d
    is not W in floating point). Decoding merged skips the adapter's matmuls at every step: 25%
    faster per token (SmolLM2-135M, r16 on all projections). Costs a copy of the adapted weights
    while inside. A model without adapters, merged, or with them disabled is yielded as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not layers or any(m.merged or m.disable_adapters for m in layers):  # nothing to do, or the base view
        yield model
        return
    kept = [(layer, layer.get_base_layer().weight.data, _bias(layer)) for layer in layers]
    try:
        model.merge_adapter(safe_merge=True)
        yield model
    finally:
        for layer, weight, bias in kept:
            base = layer.get_base_layer()
            base.weight.data = weight
            if bias is not None:
                base.bias.data = bias
            layer.merged_adapters.clear()  # what peft's unmerge() would leave, without its subtraction


def _bias(layer: Any) -> torch.Tensor | None:
    bias = getattr(layer.get_base_layer(), "bias", None)
    return None if bias is None else bias.data
