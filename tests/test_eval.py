"""`tunesmith eval` end to end on a tiny trained run: eval.json schema, report.html and its PNGs."""

import json

import pytest
from click.testing import CliRunner

from tunesmith import load_config, train
from tunesmith.cli import main
from tunesmith.commands.evaluate import TASK_SIZES, TaskSizes, evaluate_run
from tunesmith.evaluation.report import LOSS_PNG, PROBES_PNG, TRADEOFF_PNG, write_report
from tunesmith.forgetting import probes as probe_module
from tunesmith.forgetting.probes import ProbeSizes
from tunesmith.run import RunDir

TINY = ProbeSizes("standard", wiki_passages=4, wiki_max_tokens=48, analogies_per_section=1, trivia=4, kl_prompts=3,
                  kl_new_tokens=5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    from conftest import faq_rows, write_jsonl

    root = tmp_path_factory.mktemp("eval")
    data = write_jsonl(root / "faq.jsonl", faq_rows("chat") * 2)
    config = load_config(None, {"data": str(data), "model": str(tiny_model_dir), "output": str(root / "run"),
                                "max_steps": 4, "batch_size": 4, "lr": 3e-2, "eval_every": 2,
                                "forgetting": {"measure_during_training": False}})  # the last step, no probe rows
    train(config, show_progress=False)
    return root / "run"


@pytest.fixture(autouse=True)
def small_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(probe_module.PROBE_SIZES, "standard", TINY)
    monkeypatch.setitem(TASK_SIZES, "standard", TaskSizes(generate=2, max_new_tokens=6))


def test_eval_writes_the_schema_and_the_report(tiny_run):
    result = evaluate_run(tiny_run)
    written = json.loads((tiny_run / "eval.json").read_text())
    assert written["within_budget"] == result["within_budget"] and isinstance(written["within_budget"], bool)
    assert {"loss", "perplexity", "exact_match", "token_f1", "rouge_l", "looping", "n_examples"} <= set(written["task"])
    assert written["task"]["n_generated"] == 2 and len(written["task"]["samples"]) == 2
    assert set(written["general"]) == {"wikipedia_ppl", "analogies", "trivia", "kl_drift"}
    for score in list(written["general"].values()) + [written["task"]["loss"]]:
        assert {"base", "tuned", "delta", "ci95"} <= set(score)
        lo, hi = score["ci95"]
        assert lo <= score["delta"] + 1e-9 and score["delta"] <= hi + 1e-9
    assert written["general"]["kl_drift"]["tuned"] > 0  # the run trained, so the model moved
    assert written["task"]["loss"]["delta"] < 0  # and it learned the task
    assert written["verdict"].count("\n") == 2
    page = (tiny_run / "report.html").read_text()
    assert ("within" if result["within_budget"] else "OVER") in page
    for png in (LOSS_PNG, PROBES_PNG):
        assert (tiny_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png in page
    assert not (tiny_run / TRADEOFF_PNG).exists()  # no probe rows in metrics.jsonl yet


def test_tradeoff_plot_appears_with_probe_rows(tiny_run, tmp_path):
    saved = tiny_run / "eval.json"
    result = json.loads(saved.read_text()) if saved.exists() else evaluate_run(tiny_run)
    run = RunDir.open(tiny_run)
    for step, rise in ((2, 0.01), (4, 0.3)):
        run.append_metrics({"step": step, "probes": {"wikipedia_ppl": {
            "metric": "perplexity", "base": 30.0, "tuned": 30.0 * (1 + rise), "delta": 30.0 * rise,
            "relative_delta": rise, "ci95": [0.0, 1.0]}}, "within_budget": rise < 0.1})
    write_report(run, result)
    assert (tiny_run / TRADEOFF_PNG).exists() and TRADEOFF_PNG in (tiny_run / "report.html").read_text()


def test_the_tradeoff_plot_shows_the_probe_that_decides_the_verdict():
    """The demo's case: perplexity well inside its 10% while analogies lose 16.7 points (limit 10,
    interval clear of zero). The plot drew perplexity only, every step inside its line, while the
    verdict was OVER; now each probe counts against its own budget, and the worst is named."""
    from tunesmith.config import ForgettingBudget
    from tunesmith.evaluation.report import budget_points

    probes = {"wikipedia_ppl": {"metric": "perplexity", "base": 36.5, "tuned": 36.8, "delta": 0.3,
                                "relative_delta": 0.008, "ci95": [-0.2, 0.8]},
              "analogies": {"metric": "accuracy", "base": 0.857, "tuned": 0.690, "delta": -0.167,
                            "relative_delta": None, "ci95": [-0.286, -0.071]},
              "trivia": {"metric": "accuracy", "base": 0.667, "tuned": 0.542, "delta": -0.125,
                         "relative_delta": None, "ci95": [-0.25, 0.0]},  # reaches zero: not counted
              "kl_drift": {"metric": "kl_per_token", "base": 0.0, "tuned": 0.5, "delta": 0.5,
                           "relative_delta": None, "ci95": [0.4, 0.6]}}
    rows = [{"step": 0, "val_loss": 3.68}, {"step": 57, "val_loss": 2.78},
            {"step": 57, "probes": probes, "within_budget": False}]
    [(step, gain, share, probe)] = budget_points(rows, ForgettingBudget())
    assert (step, probe) == (57, "analogies")
    assert share == pytest.approx(1.67) and gain == pytest.approx(0.2446, abs=1e-4)
    probes["analogies"]["ci95"] = [-0.3, 0.01]  # no longer significant: KL (0.5 of 1.0) is the worst
    [(_, _, share, probe)] = budget_points(rows, ForgettingBudget())
    assert (probe, share) == ("kl_drift", pytest.approx(0.5))


def test_cli_eval_json(tiny_run):
    out = CliRunner().invoke(main, ["eval", str(tiny_run), "--json"])
    assert out.exit_code == 0, out.output
    assert "within_budget" in json.loads(out.stdout)


def test_cli_eval_names_a_bad_probe_file(tiny_run, tmp_path):
    config = (tiny_run / "config.yaml").read_text()
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"question": "q"}\n')
    broken = tmp_path / "run"
    import shutil

    shutil.copytree(tiny_run, broken)
    (broken / "config.yaml").write_text(config.replace("probes: []", f"probes: [{bad}]"))
    out = CliRunner().invoke(main, ["eval", str(broken)])
    assert out.exit_code == 1 and "mine.jsonl:1" in out.output


def test_lm_eval_hook_says_how_to_install_it(tiny_run):
    import importlib.util

    if importlib.util.find_spec("lm_eval") is not None:
        pytest.skip("lm-eval is installed here")
    out = CliRunner().invoke(main, ["eval", str(tiny_run), "--lm-eval", "hellaswag"])
    assert out.exit_code == 1 and "pip install lm-eval" in out.output


def test_verdict_counts_answers_that_loop():
    from tunesmith.commands.evaluate import verdict

    task = {"loss": {"base": 3.0, "tuned": 2.0, "delta": -1.0, "ci95": [-1.2, -0.8]}, "n_generated": 12,
            "token_f1": {"base": 0.15, "tuned": 0.12}, "looping": {"base": 0.0, "tuned": 0.25}}
    text = verdict(task, True, [("wikipedia_ppl", True, "wikipedia_ppl +1%")])
    assert "3 of 12 tuned answers loop" in text and "base 0" in text and text.count("\n") == 2
    task["looping"]["tuned"] = 0.0
    assert "loop" not in verdict(task, True, [("wikipedia_ppl", True, "wikipedia_ppl +1%")])


def test_the_report_says_when_the_training_probes_judged_otherwise():
    """The fast probes chose a step as within budget; the report's larger set finds it over: the
    verdict must say so and say which to trust, and say nothing when they agree."""
    from tunesmith.commands.evaluate import training_verdict, verdict

    task = {"loss": {"base": 3.0, "tuned": 2.0, "delta": -1.0, "ci95": [-1.1, -0.9]}}
    checks = [("analogies", False, "analogies accuracy -16.7 pt")]
    training = training_verdict({"selected_step": 57, "within_budget": True}, ok=False)
    assert training == {"step": 57, "within_budget": True, "probe_set": "train", "agrees": False}
    text = verdict(task, False, checks, training)
    assert text.count("\n") == 3
    assert text.splitlines()[-1].startswith("Note: during training the fast probe set judged step 57 within")
    assert "trust this report" in text
    agreeing = training_verdict({"selected_step": 57, "within_budget": False}, ok=False)
    assert agreeing["agrees"] and verdict(task, False, checks, agreeing).count("\n") == 2
    assert training_verdict({"selected_step": 57, "within_budget": None}, ok=True) is None
