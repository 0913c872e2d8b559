"""`tunesmith plan`: how much memory a run will need per device, before it is launched.

The estimate is built from the model's shape (counted on the meta device, no weights loaded), the
method, and the real token counts of the data's micro-batches. Activation cost per token is an
empirical constant measured on SmolLM2-135M (docs/distributed.md says how).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..config import TrainConfig
from ..data import data_options, prepare_data
from ..model.loading import count_parameters
from ..model.precision import compute_dtype, frozen_weight_dtype
from ..model.tokenizer import load_tokenizer
from ..training.batching import epoch_plan, pack_examples, split_batch

GIB = 1024**3
# Bytes kept for the backward pass per token, per layer, per unit of hidden width (bf16 autocast,
# LoRA with dropout, no recomputation). Measured on SmolLM2-135M, CPU: peak RSS 3.26 GiB at
# ~800-token and 8.41 GiB at ~3,200-token micro-batches, a slope of 2.2 MiB per token, of which
# the LM head takes ~0.28 MiB (0.6 trained tokens x 49,152 x 10 bytes).
ACTIVATION_BYTES_PER_TOKEN_LAYER_HIDDEN = 116
# With gradient checkpointing only each layer's input survives (plus one layer being recomputed).
CHECKPOINTED_BYTES_PER_TOKEN_LAYER_HIDDEN = 4
# Per trained token the LM head keeps fp32 logits and their gradient plus the bf16 matmul output.
LOGIT_BYTES_PER_TRAINED_TOKEN_VOCAB = 10
# The process itself (Python, torch, transformers, tokenizer, allocator slack): the intercept of
# the same two measurements once weights and adapter state are taken off.
RUNTIME_BYTES_CPU = int(1.15 * GIB)
RUNTIME_BYTES_CUDA = int(0.6 * GIB)  # CUDA context and kernels, on the device


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated peak memory of one process (one device)."""

    parameters: int
    trainable_parameters: int
    devices: int
    max_micro_batch_tokens: int
    max_forward_tokens: int
    tokens_per_step: int
    weights_gib: float
    trainable_state_gib: float
    """Trained weights, gradients and AdamW's two moments, fp32."""
    activations_gib: float
    logits_gib: float
    runtime_gib: float
    load_peak_gib: float
    """Loading weights from safetensors briefly holds the file pages and the tensors."""
    peak_gib: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_memory(config: TrainConfig, devices: int = 1, cuda: bool | None = None) -> MemoryPlan:
    """Peak memory per device of `config`, from the model's shape and the data's real token counts."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    total, trainable, linear_params, layers, hidden, vocab = count_parameters(
        config.model, config.method, config.lora.r, config.trust_remote_code)
    tokens, (worst_tokens, worst_trained) = (grpo_passes if config.objective == "grpo" else answer_passes)(
        config, tokenizer, cuda)

    frozen_bytes = frozen_weight_dtype(config.method, compute_dtype(config.precision)).itemsize
    if config.method == "full":
        weights = 0  # every weight is trained: counted in the trainable state
    elif config.method == "qlora":
        weights = linear_params // 2 + (total - linear_params) * 2  # NF4 linears, bf16 rest
    else:
        weights = linear_params * frozen_bytes + (total - linear_params) * 4
    state = trainable * 16
    per_token = CHECKPOINTED_BYTES_PER_TOKEN_LAYER_HIDDEN if config.gradient_checkpointing else \
        ACTIVATION_BYTES_PER_TOKEN_LAYER_HIDDEN
    activations = worst_tokens * layers * hidden * per_token
    logits = worst_trained * vocab * LOGIT_BYTES_PER_TRAINED_TOKEN_VOCAB
    runtime = RUNTIME_BYTES_CUDA if cuda else RUNTIME_BYTES_CPU
    if config.distributed == "fsdp" and devices > 1:
        weights, state = weights // devices, state // devices
    train_peak = runtime + weights + state + activations + logits
    load_peak = runtime + total * 4 * (1 if cuda else 2)  # fp32 tensors, plus the file's pages on CPU
    return MemoryPlan(
        parameters=total, trainable_parameters=trainable, devices=devices,
        max_micro_batch_tokens=max(tokens), max_forward_tokens=worst_tokens,
        tokens_per_step=int(math.fsum(tokens) / len(tokens) * config.grad_accum_steps * devices),
        weights_gib=weights / GIB, trainable_state_gib=state / GIB, activations_gib=activations / GIB,
        logits_gib=logits / GIB, runtime_gib=runtime / GIB, load_peak_gib=load_peak / GIB,
        peak_gib=max(train_peak, load_peak) / GIB,
    )


def answer_passes(config: TrainConfig, tokenizer: Any, cuda: bool) -> tuple[list[int], tuple[int, int]]:
    """Each micro-batch's tokens, and the (tokens, trained tokens) of the largest forward pass: the
    data's real examples packed as training packs them, split by `forward_tokens`."""
    data = prepare_data(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed,
                        **data_options(config), train_fraction=config.train_fraction)
    micro = [pack_examples([data.train[j] for j in m])
             for m in epoch_plan(data.train, config.batch_size, config.seed, 0, config.batch_tokens)]
    passes = [p for b in micro for p in split_batch(b, config.forward_token_limit("cuda" if cuda else "cpu"))]
    worst = max(passes, key=lambda p: p.n_tokens)  # activations are held for one forward pass at a time
    return [b.n_tokens for b in micro], (worst.n_tokens, worst.n_trained)


def grpo_passes(config: TrainConfig, tokenizer: Any, cuda: bool) -> tuple[list[int], tuple[int, int]]:
    """As `answer_passes` for objective grpo: a micro-batch's prompts each answered `group_size` times
    in one forward pass (it is never split), every completion counted at `max_completion_tokens`, the
    longest it can be; its completions are the trained tokens."""
    from ..data.prompts import prepare_prompts

    data = prepare_prompts(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction,
                           config.seed, **data_options(config), train_fraction=config.train_fraction)
    group, longest = config.grpo.group_size, config.grpo.max_completion_tokens
    sizes = [(sum(group * (len(data.train[j].input_ids) + longest) for j in m), len(m) * group * longest)
             for m in epoch_plan(data.train, config.batch_size, config.seed, 0, config.batch_tokens)]
    return [n for n, _ in sizes], max(sizes)


def plan_lines(plan: MemoryPlan, config: TrainConfig, devices: int) -> list[str]:
    """The estimate for the terminal: the model and method, the tokens per step, each share of the peak."""
    lines = [(f"{config.method} on {config.model}: {plan.parameters:,} parameters, "
              f"{plan.trainable_parameters:,} trained, {devices} device(s)"),
             (f"  tokens per optimizer step   {plan.tokens_per_step:,} (largest micro-batch "
              f"{plan.max_micro_batch_tokens:,} tokens, largest forward pass {plan.max_forward_tokens:,})")]
    for label, value in (("frozen weights", plan.weights_gib),
                         ("trained weights + grads + AdamW", plan.trainable_state_gib),
                         ("activations", plan.activations_gib), ("LM head logits", plan.logits_gib),
                         ("runtime", plan.runtime_gib), ("peak while loading", plan.load_peak_gib)):
        lines.append(f"  {label:<30} {value:7.2f} GiB")
    return [*lines, f"  estimated peak per device     {plan.peak_gib:7.2f} GiB"]
