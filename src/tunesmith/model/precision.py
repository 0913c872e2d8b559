"""Numeric precision: which dtype a run computes in, and which its frozen weights are stored in."""

from __future__ import annotations

from typing import Any

import torch


def bf16_available() -> bool:
    """bf16 where the hardware computes it natively: modern GPUs, CPUs with AVX-512 BF16 or AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = torch.backends.cpu
    return bool(getattr(cpu, "get_cpu_capability", lambda: "")() in ("AVX512", "AMX")) and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def compute_dtype(precision: str) -> torch.dtype:
    """The autocast dtype of a run: bf16 when asked, or when `auto` and the hardware has it."""
    if precision == "bf16" or (precision == "auto" and bf16_available()):
        return torch.bfloat16
    return torch.float32


def frozen_weight_dtype(method: str, compute: torch.dtype) -> torch.dtype:
    """How the frozen linear weights under the adapters are stored.

    LoRA under bf16 compute stores them in bf16: autocast would round them to bf16 on every forward
    anyway (same matmul results), so this only saves the copies and half their memory. DoRA keeps
    fp32 (its magnitude vector is computed from the frozen weight's norm, and bf16 storage was never
    checked against it), QLoRA's are 4-bit, and full fine-tuning trains every weight in fp32."""
    return compute if method == "lora" else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> Any:
    """Mixed precision per call, not through accelerate's process-wide state, so that runs with
    different precision can follow each other in one process (tests, notebooks)."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
