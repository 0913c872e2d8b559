"""`tunesmith curve` on the tiny model: nested shares of the training split, the same held-out
examples for every point, normal run directories, the curve's files, and resume after kill -9."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from conftest import FAQ, write_jsonl
from tunesmith import load_config
from tunesmith.cli import main
from tunesmith.commands.curve import curve
from tunesmith.data import prepare_data
from tunesmith.data.prepare import training_subset
from tunesmith.run import RunDir

SRC = str(Path(__file__).resolve().parents[1] / "src")
FRACTIONS = (0.25, 0.5, 1.0)


def rows(n=48):
    """n distinct FAQ conversations (the ten questions, numbered)."""
    return [{"messages": [{"role": "user", "content": f"{q} ({i})"},
                          {"role": "assistant", "content": f"{a} Case {i}."}]} for i, (q, a) in
            ((i, FAQ[i % len(FAQ)]) for i in range(n))]


def settings(data, model, **extra):
    base = {"data": str(data), "model": str(model), "batch_size": 4, "lr": 1e-2, "epochs": 2, "val_fraction": 0.25,
            "precision": "fp32", "forgetting": {"measure_during_training": False}}
    return {**base, **extra}


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "faq.jsonl", rows())


def test_the_shares_are_nested_and_the_held_out_split_untouched(data, tiny_tokenizer):
    def prepared(fraction, seed=0):
        return prepare_data(str(data), None, tiny_tokenizer, 256, 0.25, seed, train_fraction=fraction)

    shares = {f: prepared(f) for f in (0.125, 0.25, 0.5, 1.0)}
    full = shares[1.0]
    assert [len(shares[f].train) for f in (0.125, 0.25, 0.5, 1.0)] == [4, 9, 18, 36]
    for small, large in ((0.125, 0.25), (0.25, 0.5), (0.5, 1.0)):
        assert {e.source for e in shares[small].train} < {e.source for e in shares[large].train}
    for share in shares.values():  # the same held-out examples, token for token, never trained on
        assert [(e.source, list(e.input_ids), list(e.targets)) for e in share.val] == \
            [(e.source, list(e.input_ids), list(e.targets)) for e in full.val]
        assert not {e.source for e in share.train} & {e.source for e in full.val}
    # Seeded: another seed draws another share (and another split); the same seed the same one.
    assert [e.source for e in prepared(0.25).train] == [e.source for e in shares[0.25].train]
    other = prepared(0.25, seed=1)
    assert {e.source for e in other.train} != {e.source for e in shares[0.25].train}
    # In file order, whatever order the draw took them in.
    lines = [int(e.source.rsplit(":", 1)[1]) for e in shares[0.25].train]
    assert lines == sorted(lines)
    assert len(training_subset(full.train, 1e-9, 0)) == 1  # never empty


def test_curve_trains_each_share_as_a_normal_run_and_writes_the_curve(data, tiny_model_dir, tmp_path):
    out = tmp_path / "curve"
    config = tmp_path / "curve.yaml"
    config.write_text(yaml.safe_dump(settings(data, tiny_model_dir)))
    result = curve(load_config(config), FRACTIONS, output=out, show_progress=False, generate=True)
    assert [p.examples for p in result.points] == [9, 18, 36]
    configs = [RunDir.open(p.run_dir).config() for p in result.points]
    assert [c.train_fraction for c in configs] == list(FRACTIONS)
    # Only the data differs: epochs and the evaluation interval are the full data's, at every point.
    assert {c.epochs for c in configs} == {2.0} and {c.eval_every for c in configs} == {4}
    for p in result.points:
        assert (p.run_dir / "adapter" / "adapter_config.json").exists() and RunDir.open(p.run_dir).summary()
        assert p.ci95[0] < p.loss < p.ci95[1] and p.forgetting == "not measured" and not p.reused
        assert set(p.generated) == {"n", "token_f1", "rouge_l"} and p.generated["n"] == 12
    heldout = [json.loads((p.run_dir / "heldout.json").read_text()) for p in result.points]
    assert len({tuple(h["sources"]) for h in heldout}) == 1 and len(heldout[0]["sources"]) == 12
    # The point's held-out loss is the one training measured on its final model.
    for p in result.points:
        assert p.loss == pytest.approx(RunDir.open(p.run_dir).summary()["final_val_loss"], rel=1e-4)
    report = json.loads((out / "curve.json").read_text())
    assert report["verdict"] == result.analysis.verdict and len(report["points"]) == 3
    assert report["fit"]["fit"]["kind"] == "power_law" and report["fit"]["check"]["n"] == 36
    assert report["base"]["loss"] == pytest.approx(result.base_loss) and result.base_loss > result.points[-1].loss
    assert (out / "curve.png").stat().st_size > 10_000 and "learning curve" in (out / "report.html").read_text()

    # The same command again reuses every point; --json prints curve.json.
    args = ["curve", str(config), "--output", str(out), "--fractions", "0.25,0.5,1", "--no-progress"]
    cli = CliRunner().invoke(main, [*args, "--generate", "--json"])
    assert cli.exit_code == 0, cli.output
    again = json.loads(cli.stdout)
    assert [p["reused"] for p in again["points"]] == [True] * 3
    assert [p["loss"] for p in again["points"]] == [p["loss"] for p in report["points"]]
    # Asked differently (another learning rate), a finished point is not passed off as this curve's.
    cli = CliRunner().invoke(main, [*args, "--lr", "0.02"])
    assert cli.exit_code == 1 and "was trained differently: config 'lr': saved 0.01, now 0.02" in cli.stderr


def test_the_same_command_after_kill_9_reuses_the_finished_points(data, tiny_model_dir, tmp_path):
    out = tmp_path / "curve"
    config = tmp_path / "curve.yaml"
    config.write_text(yaml.safe_dump(settings(data, tiny_model_dir, epochs=4, save_every=2)))
    args = [str(config), "--output", str(out), "--fractions", "0.25,0.5,1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "curve", *args], env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = out / "fraction-0.5"
    deadline = time.time() + 180
    while not (second / "checkpoints" / "step-2" / "COMPLETE").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "the second point did not reach step 2 in time"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (second / "summary.json").exists(), "the kill must land inside the second point"
    first = out / "fraction-0.25"
    stamps = {name: (first / name).stat().st_mtime_ns for name in ("summary.json", "heldout.json", "metrics.jsonl")}

    log = io.StringIO()
    result = curve(load_config(config), FRACTIONS, output=out, show_progress=False,
                   console=Console(file=log, width=300))
    text = log.getvalue()
    assert [p.reused for p in result.points] == [True, False, False]
    assert "point 1 of 3 (fraction 0.25, 9 examples): finished before, reused" in text
    assert f"resuming {second} from step-" in text  # the interrupted point continued, not restarted
    assert {name: (first / name).stat().st_mtime_ns for name in stamps} == stamps
    steps = [r["step"] for r in RunDir(second).metrics() if "loss" in r]
    assert steps == list(range(1, 21))  # 4 epochs of 5 steps (18 examples, 4 a step): each step once
    assert json.loads((out / "curve.json").read_text())["points"][1]["examples"] == 18


@pytest.mark.parametrize("flags, message", [
    (["--max-steps", "5"], "curve: max_steps fixes the optimizer steps"),
    (["--fractions", "0.5,0.25"], "config key 'curve.fractions' must be distinct and increasing"),
    (["--fractions", "1"], "needs at least 2 fractions"),
    (["--fractions", "half,1"], "expected comma-separated numbers"),
])
def test_bad_flags_are_refused_before_anything_trains(flags, message, data, tiny_model_dir, tmp_path):
    out = tmp_path / "curve"
    result = CliRunner().invoke(main, ["curve", str(data), "--model", str(tiny_model_dir), "--output", str(out),
                                       *flags])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not out.exists()


def test_a_run_directory_is_not_a_curve_folder(tiny_run, data, tiny_model_dir):
    result = CliRunner().invoke(main, ["curve", str(data), "--model", str(tiny_model_dir), "--output", str(tiny_run)])
    assert result.exit_code == 1 and "is a training run, not a curve's folder" in result.stderr
