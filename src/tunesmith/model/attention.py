"""Attention for packed rows that skips the empty blocks between examples.

With a block-diagonal mask, SDPA on the CPU still computes the whole T x T score matrix of a
packed row. This implementation runs causal SDPA once per example segment instead (the cost
falls from T^2 to the sum of squared example lengths) and falls back to transformers' SDPA for
anything that is not a packed training row (generation, padded batches).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "tunesmith_packed"
_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)  # enable_gqa came in torch 2.5


def packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """query (B=1, H, T, D), key/value (1, KV, T, D) -> output (1, T, H, D), per segment of `cu_seq_lens_q`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    gqa = {}
    if groups > 1 and _SDPA_GQA:  # grouped-query attention in the kernel: no repeated key/value copies saved
        gqa = {"enable_gqa": True}
    elif groups > 1:  # torch < 2.5: each key/value head repeated for the `groups` query heads it serves
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    p = dropout if module.training else 0.0
    edges = bounds.tolist()
    parts = [
        F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=p,
                                       is_causal=True, scale=scaling, **gqa)  # (1, H, len, D)
        for s, e in zip(edges[:-1], edges[1:])
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Register the implementation (and SDPA's mask builder for its fallback) with transformers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_packed_attention(model: Any) -> bool:
    """Switch a model that runs SDPA to the packed implementation; others (flash, eager) are left alone."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(register_packed_attention())
    return True
