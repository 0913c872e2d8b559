"""bench/machine.py's instruction set classes, from hand-written /proc/cpuinfo text and environments
(no torch, no matmul: the classification alone)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MACHINE = Path(__file__).resolve().parents[1] / "bench" / "machine.py"
_spec = importlib.util.spec_from_file_location("bench_machine", MACHINE)
machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machine)

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2"
AVX512 = BASE + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
AVX512_BF16 = AVX512 + " avx512_bf16"
AMX = AVX512_BF16 + " avx512_fp16 amx_bf16 amx_tile amx_int8"  # a Sapphire Rapids line, shortened


def cpuinfo_text(flags: str, cores: int = 2) -> str:
    return "".join(f"processor\t: {i}\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: {i}\n"
                   f"flags\t\t: {flags}\n\n" for i in range(cores))


@pytest.mark.parametrize(("flags", "isa"), [(AMX, "AMX"), (AVX512_BF16, "AVX-512 BF16"), (AVX512, "AVX-512"),
                                            (BASE, "AVX2"), ("fpu sse sse2 avx", "other")])
def test_the_cpuinfo_flags_name_the_class(flags, isa):
    model, parsed, cores = machine.cpuinfo(cpuinfo_text(flags, cores=3))
    assert (model, cores) == ("Test CPU", 3)
    assert machine.isa_from_flags(parsed) == isa
    record = machine.classify_isa(parsed, {}, "AVX512" if "avx512f" in flags else "AVX2")
    assert (record["isa"], record["isa_cpu"], record["isa_restricted_by"]) == (isa, isa, {})


def test_amx_without_its_tiles_is_not_amx():
    assert machine.isa_from_flags(set((AVX512_BF16 + " amx_bf16").split())) == "AVX-512 BF16"


@pytest.mark.parametrize(("env", "isa"), [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX2"),
    ({"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, "AVX-512 BF16"),
    ({"DNNL_MAX_CPU_ISA": "AVX512_CORE"}, "AVX-512"),
    ({"MKL_ENABLE_INSTRUCTIONS": "AVX512_E3"}, "AVX-512 BF16"),
    ({"ATEN_CPU_CAPABILITY": "avx2"}, "AVX2"),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "AVX2"),  # the lowest wins
])
def test_an_environment_that_keeps_amx_off_is_reported(env, isa):
    record = machine.classify_isa(set(AMX.split()), env, "AVX2" if "ATEN_CPU_CAPABILITY" in env else "AVX512")
    assert (record["isa"], record["isa_cpu"]) == (isa, "AMX")
    assert record["isa_env"] == env
    assert set(record["isa_restricted_by"]) == {name for name, value in env.items()
                                                if machine.isa_cap(name, value) != "AMX"}


def test_settings_that_keep_nothing_off_are_recorded_but_restrict_nothing():
    env = {"ONEDNN_MAX_CPU_ISA": "ALL", "MKL_ENABLE_INSTRUCTIONS": "AVX512_E4"}
    record = machine.classify_isa(set(AMX.split()), env, "AVX512")
    assert (record["isa"], record["isa_env"], record["isa_restricted_by"]) == ("AMX", env, {})
    # A cap above what the CPU has restricts nothing either.
    record = machine.classify_isa(set(BASE.split()), {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "AVX2")
    assert (record["isa"], record["isa_restricted_by"]) == ("AVX2", {})


def test_a_torch_build_without_avx512_kernels_is_reported():
    record = machine.classify_isa(set(AVX512_BF16.split()), {}, "AVX2")
    assert record["isa"] == "AVX2" and "torch build" in record["isa_restricted_by"]
