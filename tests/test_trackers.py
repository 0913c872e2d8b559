"""Experiment trackers: TensorBoard event files and an MLflow store read back with the trackers' own
readers hold what metrics.jsonl holds, each step once across a crash and resume; a tracker whose
package is missing is refused before anything is written; a failing tracker never stops training."""

import io
import json
import os
import sys
import types
import warnings

import pytest
from rich.console import Console

from tunesmith import load_config, train
from tunesmith.cli_options import report_to_flag
from tunesmith.errors import ConfigError
from tunesmith.run import RunDir
from tunesmith.training.events import CheckpointEvent, StepEvent


def settings(data, model, out, **extra):
    # fp32 on the CPU is deterministic: a step recomputed after a resume has bit-for-bit the same loss.
    base = {"data": str(data), "model": str(model), "output": str(out), "max_steps": 6, "batch_size": 3,
            "eval_every": 2, "save_every": 2, "precision": "fp32", "lr": 1e-2,
            "forgetting": {"measure_during_training": False}}
    return {**base, **extra}


@pytest.fixture(autouse=True)
def local_trackers(monkeypatch):
    """The user's tracker settings must not send a test's runs anywhere."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT", "TRACKIO_PROJECT",
                 "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "")  # recorded, so that what a run sets is undone after the test
        monkeypatch.delenv(name)


def rows(run, key):
    """(step, value) of every metrics.jsonl row that has `key`."""
    return [(r["step"], r[key]) for r in RunDir(run).metrics() if key in r]


def tensorboard_scalars(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def mlflow_run(run):
    from mlflow.tracking import MlflowClient

    ids = json.loads((run / "trackers.json").read_text(encoding="utf-8"))["mlflow"]
    return MlflowClient(tracking_uri=ids["tracking_uri"]), ids


def mlflow_history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def crash_at(kind, step):
    def crash(event):
        if isinstance(event, kind) and event.step == step:
            raise RuntimeError(f"crash at {kind.__name__} {step}")
    return crash


def test_tensorboard_event_files_hold_every_steps_figures_as_metrics_jsonl_does(faq_file, tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    train(load_config(None, settings(faq_file(), tiny_model_dir, run, report_to=["tensorboard"])), show_progress=False)
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm"),
                     ("eval/val_loss", "val_loss")):
        logged, expected = tensorboard_scalars(run, tag), rows(run, key)
        assert [s for s, _ in logged] == [s for s, _ in expected]
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)  # stored as float32
    assert [s for s, _ in tensorboard_scalars(run, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in tensorboard_scalars(run, "eval/val_loss")] == [0, 2, 4, 6]


def test_an_mlflow_store_holds_the_params_each_steps_metrics_once_and_the_summary(faq_file, tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "faq-lora"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(load_config(None, settings(faq_file(), tiny_model_dir, run, max_steps=4, report_to=["mlflow"],
                                         forgetting={"measure_during_training": True})), show_progress=False)
    # No announced break: MLflow's file store warns that it is in maintenance mode.
    assert not [str(w.message) for w in caught
                if "maintenance mode" in str(w.message) or "FILE_STORE" in str(w.message)]
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["faq-lora", "mlartifacts", "mlflow.db"]
    client, ids = mlflow_run(run)
    assert ids["tracking_uri"] == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"  # beside the run
    got = client.get_run(ids["run_id"])
    assert got.info.run_name == "faq-lora" and got.info.status == "FINISHED"
    assert got.data.tags["method"] == "lora" and got.data.tags["model"] == str(tiny_model_dir)
    params = got.data.params
    assert (params["lr"], params["lora.r"], params["forgetting.budget.max_kl"], params["max_steps"]) == \
        ("0.01", "16", "1.0", "4")
    assert mlflow_history(client, ids["run_id"], "train/loss") == rows(run, "loss")  # exact: float64, once per step
    assert mlflow_history(client, ids["run_id"], "eval/val_loss") == rows(run, "val_loss")
    within = rows(run, "within_budget")
    assert [s for s, _ in within] == [2, 4]
    assert mlflow_history(client, ids["run_id"], "probes/within_budget") == [(s, float(ok)) for s, ok in within]
    probe_keys = [k for k in got.data.metrics if k.startswith("probes/") and k.endswith("/delta")]
    assert len(probe_keys) == len(RunDir(run).metrics()[-1]["probes"]) > 0
    summary = RunDir(run).summary()
    assert got.data.metrics["summary/final_val_loss"] == summary["final_val_loss"]
    assert [a.path for a in client.list_artifacts(ids["run_id"])] == ["summary.json"]
    assert len(client.search_runs([got.info.experiment_id])) == 1
    import mlflow  # read back the plain way, as a user would

    mlflow.set_tracking_uri(ids["tracking_uri"])
    assert list(mlflow.search_runs([got.info.experiment_id])["run_id"]) == [ids["run_id"]]


@pytest.mark.parametrize("crash", [(CheckpointEvent, 4), (StepEvent, 5)], ids=["after-checkpoint-4", "at-step-5"])
def test_a_resumed_run_continues_the_tracker_runs_with_each_step_once(crash, faq_file, tiny_model_dir, tmp_path):
    """At step 5 the trackers have logged step 5 when the crash comes (they are before the caller's
    subscriber); the resumed run recomputes it from checkpoint 4 and logs it again: TensorBoard's
    purge replaces it, MLflow skips the step it holds."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    run = tmp_path / "runs" / "run"
    cfg = load_config(None, settings(faq_file(), tiny_model_dir, run, report_to=["tensorboard", "mlflow"]))
    with pytest.raises(RuntimeError, match="crash at"):
        train(cfg, show_progress=False, subscribers=[crash_at(*crash)])
    first = json.loads((run / "trackers.json").read_text(encoding="utf-8"))
    train(cfg, resume="auto", show_progress=False)
    assert json.loads((run / "trackers.json").read_text(encoding="utf-8")) == first  # the same tracker runs
    expected = rows(run, "loss")
    assert [s for s, _ in expected] == [1, 2, 3, 4, 5, 6]
    logged = tensorboard_scalars(run, "train/loss")
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert [s for s, _ in tensorboard_scalars(run, "eval/val_loss")] == [0, 2, 4, 6]
    client, ids = mlflow_run(run)
    assert mlflow_history(client, ids["run_id"], "train/loss") == expected
    assert [s for s, _ in mlflow_history(client, ids["run_id"], "eval/val_loss")] == [0, 2, 4, 6]
    got = client.get_run(ids["run_id"])
    assert got.info.status == "FINISHED" and len(client.search_runs([got.info.experiment_id])) == 1


def test_a_tracker_whose_package_is_missing_is_refused_before_anything_loads_or_is_written(faq_file, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    data = faq_file()
    run = tmp_path / "run"
    # A model that does not exist: a check after loading would fail on the model instead.
    cfg = load_config(None, settings(data, tmp_path / "no-such-model", run, report_to=["mlflow"]))
    with pytest.raises(ConfigError, match=r"mlflow needs `pip install mlflow-skinny`"):
        train(cfg, show_progress=False)
    assert list(tmp_path.iterdir()) == [data]  # no run directory, no mlruns/


class FakeWandbRun:
    """Logs like a W&B run until the server goes away at step 3."""

    def __init__(self, **init):
        self.init, self.id, self.logged, self.summary = init, "fake-1", [], {}

    def log(self, metrics, step):
        if step == 3:
            raise ConnectionError("server gone")
        self.logged.append((step, sorted(metrics)))

    def finish(self, exit_code=0):
        raise AssertionError("a dropped tracker is not called again")


def test_a_tracker_failing_mid_run_warns_once_and_training_finishes_with_the_same_losses(
        faq_file, tiny_model_dir, tmp_path, monkeypatch):
    data = faq_file()
    train(load_config(None, settings(data, tiny_model_dir, tmp_path / "ref")), show_progress=False)
    runs = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: runs.append(FakeWandbRun(**kw))
                                                                     or runs[-1]))
    out = io.StringIO()
    run = tmp_path / "run"
    result = train(load_config(None, settings(data, tiny_model_dir, run, report_to=["wandb"])), show_progress=False,
                   console=Console(file=out, width=1000))
    assert result.steps == 6 and (run / "summary.json").exists()
    assert rows(run, "loss") == rows(tmp_path / "ref", "loss")  # tracking changes no number
    assert out.getvalue().count("wandb tracking failed (ConnectionError: server gone)") == 1
    (fake,) = runs
    assert [step for step, _ in fake.logged] == [0, 1, 2, 2]  # nothing after the failure
    assert fake.logged[1][1] == ["train/epoch", "train/grad_norm", "train/loss", "train/lr", "train/tokens",
                                 "train/tokens_per_s"]
    assert (fake.init["name"], fake.init["dir"], fake.init["id"], fake.init["config"]["lora.r"]) == \
        ("run", str(run), None, "16")


def test_report_to_is_a_list_of_known_trackers_and_the_flag_a_comma_list():
    assert load_config(None, {"data": "x.jsonl"}).report_to == []  # no trackers unless asked
    assert load_config(None, {"data": "x.jsonl", "report_to": ["mlflow", "tensorboard"]}).report_to == \
        ["mlflow", "tensorboard"]
    with pytest.raises(ConfigError, match="report_to"):
        load_config(None, {"data": "x.jsonl", "report_to": ["mlflow", "neptune"]})
    with pytest.raises(ConfigError, match="report_to"):
        load_config(None, {"data": "x.jsonl", "report_to": ["mlflow", "mlflow"]})
    assert report_to_flag(None, None, "tensorboard, mlflow") == ["tensorboard", "mlflow"]
    assert report_to_flag(None, None, "none") == [] and report_to_flag(None, None, None) is None


def test_the_train_command_refuses_an_unknown_tracker_as_a_usage_error(faq_file):
    from click.testing import CliRunner

    from tunesmith.cli import main

    result = CliRunner().invoke(main, ["train", str(faq_file()), "--report-to", "tensorboard,neptune"])
    assert result.exit_code == 2 and "report_to" in result.output and "neptune" in result.output


def test_eval_logs_its_verdict_figures_and_report_into_the_runs_trackers(faq_file, tiny_model_dir, tmp_path,
                                                                        monkeypatch):
    """`tunesmith eval` after training: the same MLflow run gets the verdict, every figure with its
    interval, and report.html / eval.json as artifacts; TensorBoard the verdict and the figures."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunesmith.commands.evaluate import evaluate_run

    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    train(load_config(None, settings(faq_file(), tiny_model_dir, run, report_to=["tensorboard", "mlflow"],
                                     forgetting={"measure_during_training": True})), show_progress=False)
    probes_row = next(r for r in RunDir(run).metrics() if "probes" in r)
    low, high = probes_row["probes"]["wikipedia_ppl"]["ci95"]  # training's probes carry their interval
    client, ids = mlflow_run(run)
    assert mlflow_history(client, ids["run_id"], "probes/wikipedia_ppl/ci95_low")[0][1] == pytest.approx(low)
    result = evaluate_run(run)
    logged = client.get_run(ids["run_id"])
    assert logged.info.status == "FINISHED" and logged.data.tags["verdict"] == result["verdict"]
    assert logged.data.metrics["evaluation/within_budget"] == float(result["within_budget"])
    loss = result["task"]["loss"]
    assert logged.data.metrics["evaluation/task/loss/delta"] == pytest.approx(loss["delta"])
    assert logged.data.metrics["evaluation/task/loss/ci95_low"] == pytest.approx(loss["ci95"][0])
    assert logged.data.metrics["evaluation/probes/analogies/tuned"] == \
        pytest.approx(result["general"]["analogies"]["tuned"])
    artifacts = {a.path for a in client.list_artifacts(ids["run_id"])}
    assert {"report.html", "eval.json", "summary.json"} <= artifacts
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    assert "evaluation/verdict/text_summary" in events.Tags()["tensors"]
    assert events.Scalars("evaluation/within_budget")[-1].value == float(result["within_budget"])


def test_a_tracker_may_be_added_on_resume(faq_file, tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(load_config(None, settings(faq_file(), tiny_model_dir, run)), show_progress=False,
              subscribers=[crash_at(CheckpointEvent, 4)])
    train(load_config(None, settings(faq_file(), tiny_model_dir, run, report_to=["tensorboard"])),
          show_progress=False, resume=str(run))  # no --force: who watches a run changes nothing it trains
    assert [s for s, _ in tensorboard_scalars(run, "train/loss")] == [5, 6]
