"""Two CPU processes (gloo, launched by torchrun) train exactly like one process with the same global
batch, replicated (DDP) or sharded (FSDP), and resume exactly."""

import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tunesmith import load_config, train
from tunesmith.run import RunDir

SRC = str(Path(__file__).resolve().parents[1] / "src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args, cache: Path) -> subprocess.CompletedProcess:
    """`tunesmith train` in two processes, caching in `cache` (not the user's cache): a fresh folder
    makes these processes compute the base model's probe values (under FSDP: `generate` on a
    sharded model)."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "TUNESMITH_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "tunesmith", "train", *args, "--no-progress"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in RunDir(run).metrics() if "loss" in r]


def update_config(config_file: Path, **settings) -> None:
    config_file.write_text(yaml.safe_dump({**yaml.safe_load(config_file.read_text()), **settings}))


WEIGHTS_ATOL = 1e-5
"""Two processes sum the gradients in another order than one: fp32 rounding that 6 AdamW steps carry into
the weights, seen up to 1.1e-6 on AVX2 kernels and below 1e-6 on AVX-512 ones. A wrong batch, step or
shard moves a weight by about the learning rate (1e-2 here), a thousand times more."""


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between two safetensors files with the same tensors."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    return max(float((ta[k] - tb[k]).abs().max()) for k in ta)


@pytest.fixture
def config_file(faq_file, tiny_model_dir, tmp_path):
    # Dropout off: each process draws its own masks, which one process cannot reproduce. The KL-to-base
    # term (on by default) has its own test below.
    settings = {"data": str(faq_file("chat")), "model": str(tiny_model_dir), "max_steps": 6, "batch_size": 2,
                "precision": "fp32", "lr": 1e-2, "save_every": 1, "keep_last": 10, "lora": {"dropout": 0.0},
                "forgetting": {"kl_weight": 0.0}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.parametrize("distributed", [pytest.param("ddp", marks=pytest.mark.numerics), "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch_and_resume_exactly(config_file, tmp_path, distributed):
    update_config(config_file, distributed=distributed)
    run = tmp_path / "two"
    done = torchrun(str(config_file), "--output", str(run), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es)" in done.stderr + done.stdout
    assert ("sharded (FSDP)" in done.stderr + done.stdout) == (distributed == "fsdp")
    if distributed == "fsdp":  # rank 0 stores about half of the weights (FSDP pads uneven rows)
        share = re.search(r"stores [\d,]+ of the model's [\d,]+ weights \((\d+)%\)", done.stderr + done.stdout)
        assert share and 45 <= int(share.group(1)) <= 55, done.stdout + done.stderr
    single = load_config(config_file, {"output": str(tmp_path / "one"), "grad_accum_steps": 2})
    train(single, show_progress=False)
    two, one = losses(run), losses(tmp_path / "one")
    assert len(two) == len(one) == 6
    assert max(abs(a - b) for a, b in zip(two, one)) < 1e-5
    # The final adapter (FSDP: gathered from the shards) is the one a single process trains.
    adapter = Path("adapter") / "adapter_model.safetensors"
    assert max_difference(run / adapter, tmp_path / "one" / adapter) < WEIGHTS_ATOL
    done = torchrun("--resume", str(run / "checkpoints" / "step-3"), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert losses(run) == two


def test_fsdp_full_fine_tuning_matches_one_process_and_resumes_exactly(config_file, tmp_path):
    # Every weight sharded, the tied embedding / LM head included; optimizer state restored per shard.
    update_config(config_file, distributed="fsdp", method="full", lr=1e-3)
    run = tmp_path / "two"
    done = torchrun(str(config_file), "--output", str(run), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    full = losses(run)
    train(load_config(config_file, {"output": str(tmp_path / "one"), "grad_accum_steps": 2}), show_progress=False)
    assert max(abs(a - b) for a, b in zip(full, losses(tmp_path / "one"))) < 1e-5
    weights = Path("model") / "model.safetensors"
    assert max_difference(run / weights, tmp_path / "one" / weights) < WEIGHTS_ATOL
    done = torchrun("--resume", str(run / "checkpoints" / "step-3"), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert losses(run) == full


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_kl_to_base_with_two_processes_matches_one(config_file, tmp_path, distributed):
    # The base pass disables the adapters of the model inside the DDP wrapper / the sharded model.
    update_config(config_file, forgetting={"kl_weight": 0.5, "measure_during_training": False})
    without_kl = load_config(config_file, {"output": str(tmp_path / "plain"), "grad_accum_steps": 2,
                                           "forgetting": {"kl_weight": 0.0, "measure_during_training": False}})
    train(without_kl, show_progress=False)
    train(load_config(config_file, {"output": str(tmp_path / "one"), "grad_accum_steps": 2}), show_progress=False)
    update_config(config_file, distributed=distributed)
    done = torchrun(str(config_file), "--output", str(tmp_path / "two"), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    two, one, plain = losses(tmp_path / "two"), losses(tmp_path / "one"), losses(tmp_path / "plain")
    assert max(abs(a - b) for a, b in zip(one, plain)) > 1e-3  # the term is on
    assert max(abs(a - b) for a, b in zip(two, one)) < 1e-5


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_dpo_with_two_processes_matches_one(config_file, tmp_path, distributed):
    # Preference pairs: the step's pair count is reduced over the processes as SFT's token count is;
    # the reference is the model inside the DDP wrapper / the sharded model with its adapters disabled.
    from conftest import write_jsonl
    from test_preference import pairs_rows

    pairs = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows(2))
    update_config(config_file, data=str(pairs), objective="dpo", lr=1e-2,
                  forgetting={"kl_weight": 0.0, "measure_during_training": False})
    train(load_config(config_file, {"output": str(tmp_path / "one"), "grad_accum_steps": 2}), show_progress=False)
    update_config(config_file, distributed=distributed)
    done = torchrun(str(config_file), "--output", str(tmp_path / "two"), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    two, one = losses(tmp_path / "two"), losses(tmp_path / "one")
    assert len(two) == len(one) == 6 and abs(one[0] - math.log(2)) < 1e-7 and one[-1] < one[0] - 0.05
    assert max(abs(a - b) for a, b in zip(two, one)) < 1e-5
