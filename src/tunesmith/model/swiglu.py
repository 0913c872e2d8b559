"""A SwiGLU MLP activation that keeps only its two inputs for the backward pass.

`down(silu(gate(x)) * up(x))` run by autograd saves gate, silu(gate) and up: three tensors of the
intermediate width (1,536 for the default model) per layer and token. `silu_mul` saves gate and
up and recomputes silu(gate) in the backward pass, one cheap elementwise kernel, so a quarter of
the MLP's saved activations go; the values and gradients are the same bit for bit.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


class _SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad * up, gate), grad * F.silu(gate)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, saving only gate and up for the backward pass."""
    return _SiluMul.apply(gate, up)


def _swiglu_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


def is_swiglu_mlp(module: Any) -> bool:
    """The Llama-family MLP (Llama, Mistral, Qwen2/3, SmolLM): gate, up and down projections and a
    SiLU, nothing else inside."""
    children = dict(module.named_children())
    act = children.pop("act_fn", None)
    return (children.keys() == {"gate_proj", "up_proj", "down_proj"}
            and act is not None and type(act).__name__ in ("SiLU", "SiLUActivation"))


def use_fused_swiglu(model: Any) -> int:
    """Route every Llama-family MLP of `model` through `silu_mul`; returns how many. Other MLPs
    (GELU, fused gate-up weights) are left as they are."""
    mlps = [m for m in model.modules() if is_swiglu_mlp(m)]
    for mlp in mlps:
        mlp.forward = types.MethodType(_swiglu_forward, mlp)
    return len(mlps)
