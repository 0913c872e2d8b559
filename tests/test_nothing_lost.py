"""Nothing lost: exact resume after kill -9, SIGTERM saves, non-finite stops, safe loading, retention."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunesmith import load_config, train
from tunesmith.commands.train import NonFiniteLossError
from tunesmith.model.loading import ModelError, load_model
from tunesmith.run import RunDir, RunDirError
from tunesmith.training import loss as loss_module
from tunesmith.training.checkpoint import COMPLETE, CheckpointError, list_complete, read_train_state, refuse_pickles
from tunesmith.training.events import CheckpointEvent, StepEvent

SRC = str(Path(__file__).resolve().parents[1] / "src")


def settings(data, model, out, **extra):
    # fp32 on the CPU is deterministic, so resumed losses can be compared bit for bit.
    base = {"data": str(data), "model": str(model), "output": str(out), "max_steps": 12, "batch_size": 3,
            "grad_accum_steps": 2, "save_every": 1, "eval_every": 4, "precision": "fp32", "lr": 1e-2}
    return {**base, **extra}


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in RunDir(run).metrics() if "loss" in r}


def steps_into(events: list):
    """A subscriber keeping the StepEvents."""
    return lambda event: events.append(event) if isinstance(event, StepEvent) else None


def crash_after_checkpoint(step: int, message: str):
    """A subscriber that raises once checkpoint `step` is complete (a crash right after saving)."""
    def crash(event):
        if isinstance(event, CheckpointEvent) and event.step == step:
            raise RuntimeError(message)
    return crash


def run_cli(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def wait_for_step(run: Path, step: int, proc, timeout=120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and any(s >= step for s in losses(run)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stdout.read().decode()}")
        time.sleep(0.005)
    raise AssertionError("training did not reach the step in time")


@pytest.fixture
def reference(faq_file, tiny_model_dir, tmp_path):
    """An uninterrupted run and what it consumed at each step."""
    data = faq_file("chat")
    rows = []
    train(load_config(None, settings(data, tiny_model_dir, tmp_path / "ref")), show_progress=False,
          subscribers=[steps_into(rows)])
    return data, losses(tmp_path / "ref"), rows


def test_kill_9_then_resume_auto_matches_bit_for_bit(faq_file, tiny_model_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings(faq_file("chat"), tiny_model_dir, tmp_path / "run", max_steps=40)))
    train(load_config(config, {"output": str(tmp_path / "ref40")}), show_progress=False)
    expected = losses(tmp_path / "ref40")
    proc = run_cli([str(config), "--no-progress"])
    wait_for_step(tmp_path / "run", 5, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done_before = max(losses(tmp_path / "run"))
    assert done_before < 40, "the kill must land mid-run"
    result = train(load_config(config), resume="auto", show_progress=False)
    assert result.steps == 40
    assert losses(tmp_path / "run") == expected  # bit for bit, every step


def test_crash_mid_checkpoint_uses_previous_complete_one(reference, tiny_model_dir, tmp_path):
    data, expected, _ = reference
    cfg = load_config(None, settings(data, tiny_model_dir, tmp_path / "run"))
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg, show_progress=False, subscribers=[crash_after_checkpoint(5, "power cut")])
    ckpts = tmp_path / "run" / "checkpoints"
    # A save of step 6 torn halfway: a staging folder, and a step folder without its marker.
    shutil.copytree(ckpts / "step-5", ckpts / ".staging-step-6")
    shutil.copytree(ckpts / "step-5", ckpts / "step-6")
    (ckpts / "step-6" / COMPLETE).unlink()
    (ckpts / "step-6" / "trainable.safetensors").write_bytes(b"torn")
    assert [s for s, _ in list_complete(tmp_path / "run")][-1] == 5
    train(cfg, resume="auto", show_progress=False)
    assert losses(tmp_path / "run") == expected
    assert not (ckpts / ".staging-step-6").exists()


def test_resume_mid_epoch_and_accumulation_consumes_the_same_rows(reference, tiny_model_dir, tmp_path):
    data, _, ref_rows = reference
    cfg = load_config(None, settings(data, tiny_model_dir, tmp_path / "run"))
    seen = []
    with pytest.raises(RuntimeError):
        train(cfg, show_progress=False, subscribers=[steps_into(seen), crash_after_checkpoint(2, "preempted")])
    # 9 train rows, 3 per micro-batch, 2 micro-batches per step: step 2's accumulation cycle took
    # the last micro-batch of epoch 0 and the first of epoch 1, so the run stops mid-epoch.
    state = read_train_state(tmp_path / "run" / "checkpoints" / "step-2")
    assert (state.epoch, state.index_in_epoch) == (1, 3)
    train(cfg, resume=str(tmp_path / "run"), show_progress=False, subscribers=[steps_into(seen)])
    assert [r.examples for r in seen] == [r.examples for r in ref_rows]
    assert [r.lr for r in seen] == [r.lr for r in ref_rows]


def test_sigterm_saves_at_a_step_boundary_and_exits_0(faq_file, tiny_model_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings(faq_file("chat"), tiny_model_dir, tmp_path / "run",
                                              max_steps=100000, save_every=100000, eval_every=100000)))
    proc = run_cli([str(config), "--no-progress"])
    wait_for_step(tmp_path / "run", 3, proc)
    at_signal = max(losses(tmp_path / "run"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    last = max(losses(tmp_path / "run"))
    # It finishes the step in progress and saves, not later (counted in steps, not seconds: a busy
    # machine makes a step slow, not more of them): the step under way when the signal came, and the
    # one whose metrics line may not have reached the file yet.
    assert at_signal <= last <= at_signal + 2
    assert [s for s, _ in list_complete(tmp_path / "run")] == [last]
    assert "--resume" in proc.stdout.read().decode()


def test_non_finite_loss_stops_naming_the_step_without_a_checkpoint(faq_file, tiny_model_dir, tmp_path, monkeypatch):
    poison_at_call = 5  # micro-batch 5 = the first of step 3
    calls = {"n": 0}
    real = loss_module.loss_sum

    def poisoned(model, batch, device):
        loss = real(model, batch, device)
        if loss.requires_grad:
            calls["n"] += 1
            if calls["n"] == poison_at_call:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loss_module, "loss_sum", poisoned)
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, tmp_path / "run"))
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(rows .*faq-chat.jsonl:\d+"):
        train(cfg, show_progress=False)
    assert [s for s, _ in list_complete(tmp_path / "run")] == [1, 2]

    calls["n"] = 0
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, tmp_path / "skip", skip_nonfinite=True))
    train(cfg, show_progress=False)
    summary = RunDir(tmp_path / "skip").summary()
    assert summary["skipped_steps"] == 1 and math.isfinite(summary["final_val_loss"])


def test_pickle_weights_are_refused_and_never_unpickled(tmp_path, tiny_model_dir):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ModelError, match="safetensors"):
        load_model(str(model_dir))
    with pytest.raises(CheckpointError, match="pickle"):
        refuse_pickles(model_dir)
    assert not marker.exists()


def test_non_empty_output_is_refused_and_untouched(faq_file, tiny_model_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="--overwrite"):
        train(load_config(None, settings(faq_file("chat"), tiny_model_dir, out)), show_progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_retention_keeps_best_and_newest_even_beside_stale_checkpoints(faq_file, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    # A rate high enough that validation loss rises again; no forgetting probes, so that the kept
    # final is the best on the task (with probes, the best within the budget is kept as well).
    cfg = load_config(None, settings(faq_file("chat"), tiny_model_dir, run, max_steps=10, keep_last=1, eval_every=3,
                                     lr=0.5, forgetting={"measure_during_training": False}))
    train(cfg, show_progress=False)
    states = {s: read_train_state(p).val_loss for s, p in list_complete(run)}
    vals = {r["step"]: r["val_loss"] for r in RunDir(run).metrics() if "val_loss" in r and r["step"] > 0}
    best = min(vals, key=vals.get)
    assert set(states) == {best, 10}
    # Reuse the directory from an earlier checkpoint while stale higher-numbered ones exist.
    shutil.copytree(run / "checkpoints" / "step-10", run / "checkpoints" / "step-99")
    shutil.copytree(run / "checkpoints" / "step-10", run / "checkpoints" / "step-100")
    train(cfg, resume=str(run / "checkpoints" / f"step-{best}"), show_progress=False)
    assert {s for s, _ in list_complete(run)} <= {best, 10} and 10 in {s for s, _ in list_complete(run)}


def test_resume_refuses_a_changed_config_unless_forced(reference, tiny_model_dir, tmp_path):
    data, _, _ = reference
    cfg = load_config(None, settings(data, tiny_model_dir, tmp_path / "ref", max_steps=12))
    changed = load_config(None, settings(data, tiny_model_dir, tmp_path / "ref", lr=5e-3, max_steps=14))
    with pytest.raises(RunDirError, match="'lr'"):
        train(changed, resume="auto", show_progress=False)
    result = train(changed, resume="auto", force=True, show_progress=False)
    assert result.steps == 14
    assert cfg.lr != changed.lr


def test_rerun_from_saved_config_reproduces_losses(reference, tmp_path):
    _, expected, _ = reference
    again = load_config(tmp_path / "ref" / "config.yaml", {"output": str(tmp_path / "again")})
    train(again, show_progress=False)
    assert losses(tmp_path / "again") == expected


def test_checkpoint_with_optimizer_state_by_position_is_refused_clearly(reference, tiny_model_dir, tmp_path):
    # Checkpoints from before FSDP support keyed AdamW's state by parameter position, not name.
    data, _, _ = reference
    step = tmp_path / "ref" / "checkpoints" / "step-4"
    state = json.loads((step / "state.json").read_text())
    for group in state["optimizer"]["param_groups"]:
        group["params"] = list(range(len(group["params"])))
    (step / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="by position"):
        train(load_config(None, settings(data, tiny_model_dir, tmp_path / "ref")), resume=str(step),
              show_progress=False)
