"""Two CPU processes (gloo, launched by torchrun) train exactly like one process with the same global
batch, replicated (DDP) or sharded (FSDP), and resume exactly."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunesmith import load_config, train

SRC = str(Path(__file__).resolve().parents[1] / "src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "tunesmith", "train", *args, "--no-progress"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def set_distributed(config_file: Path, distributed: str, **more) -> None:
    settings = yaml.safe_load(config_file.read_text())
    config_file.write_text(yaml.safe_dump({**settings, "distributed": distributed, **more}))


@pytest.fixture
def config_file(faq_file, tiny_model_dir, tmp_path):
    # Dropout off: each process draws its own masks, which one process cannot reproduce.
    settings = {"data": str(faq_file("chat")), "model": str(tiny_model_dir), "max_steps": 6, "batch_size": 2,
                "precision": "fp32", "lr": 1e-2, "save_every": 1, "keep_last": 10, "lora": {"dropout": 0.0}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(config_file, tmp_path, distributed):
    set_distributed(config_file, distributed)
    done = torchrun(str(config_file), "--output", str(tmp_path / "ddp"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es)" in done.stderr + done.stdout
    assert ("sharded (FSDP)" in done.stderr + done.stdout) == (distributed == "fsdp")
    single = load_config(config_file, {"output": str(tmp_path / "one"), "grad_accum_steps": 2})
    train(single, show_progress=False)
    ddp, one = losses(tmp_path / "ddp"), losses(tmp_path / "one")
    assert len(ddp) == len(one) == 6
    assert max(abs(a - b) for a, b in zip(ddp, one)) < 1e-5
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_process_resume_continues_exactly(config_file, tmp_path, distributed):
    set_distributed(config_file, distributed)
    run = tmp_path / "ddp"
    assert torchrun(str(config_file), "--output", str(run)).returncode == 0
    full = losses(run)
    done = torchrun("--resume", str(run / "checkpoints" / "step-3"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert losses(run) == full
