"""The machine a bench ran on, and its bf16 matmul peak right around each system's run.

Every bench puts `machine_record()` in its JSON line and brackets each system's run with
`bracketed`, so that no figure is read without the CPU's instruction set class beside it and the
peak of that moment: an AMX host's peak moves threefold with its neighbours' load (AMX units are
shared per physical core), and hosts without AMX reach a fraction of it (docs/benchmarks.md,
"Comparing figures").
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ISA_CLASSES = ("other", "AVX2", "AVX-512", "AVX-512 BF16", "AMX")
"""Instruction set classes for bf16 matmuls, lowest first."""

# Environment variables that keep a library off instructions the CPU has. oneDNN runs PyTorch's
# bf16 matmuls on the CPU (DNNL_MAX_CPU_ISA is its older name), MKL its fp32 ones, and
# ATEN_CPU_CAPABILITY picks ATen's vectorized kernels (the elementwise work).
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def isa_from_flags(flags: set[str]) -> str:
    """The best class the CPU's /proc/cpuinfo flags allow: AMX needs amx_bf16 (with its tiles),
    AVX-512 BF16 needs avx512_bf16, AVX-512 the foundation and the byte/word extension."""
    if {"amx_bf16", "amx_tile"} <= flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16"
    if {"avx512f", "avx512bw"} <= flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "other"


def isa_cap(variable: str, value: str) -> str:
    """The highest class a setting of one of ISA_ENV leaves in use ("AMX" when it keeps nothing off).

    Values as the libraries spell them: oneDNN's ALL, AVX2, AVX512_CORE, AVX512_CORE_BF16,
    AVX512_CORE_AMX, AVX10_1_512_AMX...; MKL's AVX2, AVX512, AVX512_E1..E5 (E3 adds BF16, E4 AMX);
    ATen's default, avx2, avx512 (ATen has no AMX kernels, so avx512 is its top)."""
    value = value.strip().upper()
    if variable == "ATEN_CPU_CAPABILITY":
        return {"AVX512": "AMX", "AVX2": "AVX2"}.get(value, "other")
    if variable == "MKL_ENABLE_INSTRUCTIONS":
        if value in ("AVX512_E4", "AVX512_E5"):
            return "AMX"
        if value == "AVX512_E3":
            return "AVX-512 BF16"
    if value in ("ALL", "DEFAULT", "") or "AMX" in value:
        return "AMX"
    if "BF16" in value or "FP16" in value or value.startswith("AVX10"):  # FP16 and AVX10 include BF16
        return "AVX-512 BF16"
    if "AVX512" in value:
        return "AVX-512"
    if value.startswith("AVX2"):
        return "AVX2"
    return "other"


def torch_cap(capability: str) -> str:
    """The class ATen's own kernels top out at, from `torch.backends.cpu.get_cpu_capability()`."""
    return {"AVX512": "AMX", "AMX": "AMX", "AVX2": "AVX2"}.get(capability.upper(), "other")


def classify_isa(flags: set[str], env: Mapping[str, str], torch_capability: str) -> dict:
    """The class the CPU has, the class PyTorch will use, and what keeps it lower when something does."""
    cpu = isa_from_flags(flags)
    caps = {name: isa_cap(name, env[name]) for name in ISA_ENV if name in env}
    if torch_cap(torch_capability) != "AMX" and "ATEN_CPU_CAPABILITY" not in env:
        caps["torch build"] = torch_cap(torch_capability)  # a build without ATen's AVX-512 kernels
    used = min([cpu, *caps.values()], key=ISA_CLASSES.index)
    restricted = {name: cap for name, cap in caps.items() if ISA_CLASSES.index(cap) < ISA_CLASSES.index(cpu)}
    return {"isa": used, "isa_cpu": cpu, "torch_cpu_capability": torch_capability,
            "isa_env": {name: env[name] for name in ISA_ENV if name in env},
            "isa_restricted_by": {name: f"{env.get(name, torch_capability)} -> {cap}"
                                  for name, cap in restricted.items()}}


def cpuinfo(text: str) -> tuple[str, set[str], int]:
    """Model name, flags and physical cores (distinct socket and core ids) from /proc/cpuinfo's text."""
    model, flags, cores, socket = "unknown", set(), set(), "0"
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model == "unknown":
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            socket = value
        elif key == "core id":
            cores.add((socket, value))
    return model, flags, len(cores)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_record() -> dict:
    """What every bench's JSON line carries about the host: CPU, cores, the ISA class in use."""
    import torch

    path = Path("/proc/cpuinfo")
    model, flags, physical = cpuinfo(path.read_text()) if path.exists() else ("unknown", set(), 0)
    return {"cpu": model, "cpus": os.cpu_count(), "cpus_usable": usable_cpus(), "physical_cores": physical or None,
            **classify_isa(flags, os.environ, torch.backends.cpu.get_cpu_capability()),
            "torch": torch.__version__, "peak_threads": usable_cpus()}


def describe(record: dict) -> str:
    """One line for printed tables: 'Intel(R) Xeon(R) ..., 2 CPUs, ISA AMX (torch AVX512)'."""
    limited = f", restricted by {', '.join(record['isa_restricted_by'])}" if record["isa_restricted_by"] else ""
    return (f"{record['cpu']}, {record['cpus_usable']} CPUs, ISA {record['isa']} "
            f"(CPU {record['isa_cpu']}, torch {record['torch_cpu_capability']}{limited})")


def matmul_peak_gflops(size: int = 2048, repeats: int = 8, budget_s: float = 1.0) -> float:
    """The bf16 matmul rate this machine reaches right now on all its usable CPUs, the denominator of
    model FLOP utilization: the best of `repeats` 2048² products (~0.1 s with AMX, ~0.4 s at ~400
    GFLOP/s), or of those done within `budget_s` (at least two); smaller products where bf16 is
    emulated and a 2048² one would take a minute. Best, not median: what the units can do now."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(usable_cpus())  # the machine's peak, whatever threads the bench's system runs on
    try:
        n = 256  # grow the product up to `size` while one takes under budget_s / 8: emulated bf16 stops early
        while True:
            a = torch.randn(n, n, dtype=torch.bfloat16)
            b = torch.randn(n, n, dtype=torch.bfloat16)
            a @ b  # the first call at a size: oneDNN picks and builds its kernel
            start = time.perf_counter()
            a @ b
            if n >= size or time.perf_counter() - start > budget_s / 8:
                break
            n *= 2
        best = 0.0
        began = time.perf_counter()
        for done in range(repeats):
            if done >= 2 and time.perf_counter() - began > budget_s:
                break
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    finally:
        torch.set_num_threads(threads)
    return round(best, 1)


def bracketed(run: Callable[[], dict]) -> dict:
    """`run()`'s result with the bf16 matmul peak measured right before and right after it."""
    before = matmul_peak_gflops()
    result = run()
    return {**result, "peak_gflops_before": before, "peak_gflops_after": matmul_peak_gflops()}


def peaks(runs: list[dict]) -> dict[str, list[float]]:
    """The peaks around each of a system's runs, in run order, for its summary in the JSON line."""
    return {"peak_gflops_before": [r["peak_gflops_before"] for r in runs],
            "peak_gflops_after": [r["peak_gflops_after"] for r in runs]}


def median_peak(runs: list[dict]) -> float:
    """The median of every peak measured around a system's runs: its MFU denominator."""
    return statistics.median([r[k] for r in runs for k in ("peak_gflops_before", "peak_gflops_after")])
