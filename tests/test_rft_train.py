"""Objective grpo inside `train`: the config's checks, a learnable reward learned by the real training
loop, kill -9 + resume giving the uninterrupted run's steps, and `tunesmith eval` reporting the reward
base -> tuned. Tiny random model, fp32, a few short steps each."""

from __future__ import annotations

import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from conftest import FAQ, write_jsonl
from tunesmith import load_config, train
from tunesmith.config import ConfigError
from tunesmith.data import DataError
from tunesmith.run import RunDir

# A reward the tiny model can learn in a few steps: how close its answer is to the word "permit"
# (rapidfuzz's ratio, 0..1; a random answer scores about 0.2). Inside a multi grader, so that eval's
# per-grader sub-scores have something to report; `has` (the word present or not) is logged beside it.
GRADER = {"type": "multi", "name": "permit", "calculate_output": "close",
          "graders": {"close": {"type": "text_similarity", "name": "close", "evaluation_metric": "fuzzy_match",
                                "input": "{{sample.output_text}}", "reference": "{{item.answer}}"},
                      "has": {"type": "string_check", "name": "has", "operation": "like",
                              "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}}}


def rft_rows(copies: int = 2) -> list[dict]:
    """OpenAI's RFT rows: messages that end with the user's turn, plus the field the grader reads."""
    return [{"messages": [{"role": "user", "content": f"{q} [{k}]"}], "answer": "permit"}
            for k in range(copies) for q, _ in FAQ]


def grpo_config(tmp_path, tiny_model_dir, **extra) -> dict:
    rows = rft_rows()
    data, held_out = write_jsonl(tmp_path / "rft.jsonl", rows[:16]), write_jsonl(tmp_path / "rft-eval.jsonl", rows[16:])
    return {"data": str(data), "eval": str(held_out), "model": str(tiny_model_dir), "objective": "grpo",
            "grader": GRADER, "grpo": {"group_size": 8, "max_completion_tokens": 6}, "batch_size": 4,
            "warmup_ratio": 0, "precision": "fp32",
            "forgetting": {"measure_during_training": False, "kl_weight": 0}, **extra}


def test_grpo_settings_are_checked_with_the_field_and_the_fix():
    cases = [({"objective": "grpo"}, "'grader' is required with objective grpo"),
             ({"grader": "g.json"}, "set objective: grpo"),
             ({"objective": "grpo", "grader": "g.json", "forgetting": {"replay_fraction": 0.1}},
              "'forgetting.replay_fraction' must be 0 with objective grpo"),
             ({"objective": "grpo", "grader": "g.json", "grpo": {"num_iterations": 2}}, "'grpo.num_iterations'"),
             ({"objective": "grpo", "grader": "g.json", "grpo": {"group_size": 1}}, "'grpo.group_size'"),
             ({"objective": "grpo", "grader": "g.json", "grpo": {"group_sise": 4}}, "did you mean 'grpo.group_size'")]
    for values, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            load_config(None, {"data": "d.jsonl", **values})
    config = load_config(None, {"data": "d.jsonl", "objective": "grpo", "grader": GRADER, "grpo": {"beta": 0.04}})
    assert config.grader == GRADER and config.grpo.beta == 0.04 and config.lr is None


def test_a_judge_grader_is_refused_before_anything_trains(tmp_path, tiny_model_dir):
    judge = {"type": "score_model", "name": "judge", "model": "any", "range": [0, 1],
             "input": [{"role": "user", "content": "Score {{sample.output_text}} from 0 to 1."}]}
    out = tmp_path / "run"
    config = load_config(None, {**grpo_config(tmp_path, tiny_model_dir), "output": str(out), "grader": judge})
    with pytest.raises(ConfigError, match="'judge' needs a judge: set grpo.judge_url"):
        train(config, show_progress=False)
    assert not out.exists()
    with pytest.raises(ConfigError, match="'grpo.judge_url' must be an http"):
        load_config(None, {"data": "d.jsonl", "objective": "grpo", "grader": judge, "grpo": {"judge_url": "localhost"}})


class _LengthJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible judge that scores an answer by its length (0.1 a character, at most 1)."""

    seen: list[tuple[dict, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _LengthJudge.seen.append((body, self.headers.get("Authorization")))
        answer = body["messages"][-1]["content"].split("ANSWER:", 1)[1]
        reply = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                  "content": str(min(1.0, 0.1 * len(answer)))}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args) -> None:
        pass


def test_a_judge_grader_trains_with_the_judge_the_config_names(tmp_path, tiny_model_dir, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LengthJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TUNESMITH_JUDGE_API_KEY", "sk-judge")
    judge = {"type": "score_model", "name": "judge", "model": "gpt-judge", "range": [0, 1],
             "input": [{"role": "user", "content": "Score from 0 to 1. ANSWER:{{sample.output_text}}"}]}
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        train(load_config(None, {**grpo_config(tmp_path, tiny_model_dir), "output": str(out), "grader": judge,
                                 "grpo": {"group_size": 4, "max_completion_tokens": 6, "judge_url": url,
                                          "judge_model": "served-run"}, "max_steps": 1}), show_progress=False)
    finally:
        server.shutdown()
        server.server_close()
    steps = [r for r in RunDir(out).metrics() if "loss" in r]
    # the step's 4 prompts x 4 samples, and the 4 held-out prompts' greedy and sampled answers at steps 0 and 1
    assert len(_LengthJudge.seen) == 4 * 4 + 2 * (4 + 4)
    assert {auth for _, auth in _LengthJudge.seen} == {"Bearer sk-judge"}
    assert {body["model"] for body, _ in _LengthJudge.seen} == {"served-run"}
    assert 0 < steps[0]["reward"] <= 1  # the judge's scores, not 0 for every sample
    assert RunDir(out).config().grpo.judge_url == url and "sk-judge" not in (out / "config.yaml").read_text()


def test_rows_lacking_a_field_the_grader_reads_are_named_before_anything_trains(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    config = load_config(None, {**grpo_config(tmp_path, tiny_model_dir), "output": str(out)})
    rows = rft_rows()
    del rows[2]["answer"]
    write_jsonl(tmp_path / "rft.jsonl", rows[:16])
    with pytest.raises(DataError) as error:
        train(config, show_progress=False)
    assert f"{tmp_path / 'rft.jsonl'}:3" in str(error.value) and "item.answer" in str(error.value)
    assert not out.exists()


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory, tiny_model_dir):
    """Full fine-tuning at a high rate (the tiny model learns in a few steps), 8 steps of 4 prompts x 8
    samples: evaluations at 0 and 8."""
    tmp = tmp_path_factory.mktemp("grpo")
    out = tmp / "run"
    train(load_config(None, {**grpo_config(tmp, tiny_model_dir), "output": str(out), "method": "full", "lr": 5e-2,
                             "max_steps": 8, "eval_every": 8}), show_progress=False)
    return out


def test_a_learnable_reward_rises_in_train(learned_run):
    rows = RunDir(learned_run).metrics()
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all({"reward", "reward_std", "flat_groups", "clip_fraction", "kl"} <= set(r) for r in steps)
    first, last = (sum(r["reward"] for r in part) / 3 for part in (steps[:3], steps[-3:]))
    # measured with seeds 0 / 1 / 2 (other samples, as another CPU's last bits could give): 0.21 -> 0.54,
    # 0.29 -> 0.81, 0.26 -> 0.40; the held-out greedy reward 0.0 -> 0.9 with each
    assert last > first + 0.1, [r["reward"] for r in steps]
    base, tuned = evals[0], evals[-1]
    assert base["step"] == 0 and tuned["step"] == 8 and base["prompts"] == 4
    assert {"reward_ci", "reward_sampled", "reward_sampled_ci"} <= set(tuned)
    assert tuned["reward"] > base["reward"] + 0.5
    assert tuned["val_loss"] == -tuned["reward"]
    config = RunDir(learned_run).config()
    assert config.grader == GRADER  # the run keeps the grader it trained on


def test_eval_of_a_grpo_run_reports_the_reward_base_to_tuned(learned_run, monkeypatch):
    from tunesmith.commands.evaluate import evaluate_run
    from tunesmith.forgetting import probes as probe_module
    from tunesmith.forgetting.probes import ProbeSizes

    monkeypatch.setitem(probe_module.PROBE_SIZES, "standard", ProbeSizes(
        "standard", wiki_passages=2, wiki_max_tokens=32, analogies_per_section=1, trivia=2, kl_prompts=2,
        kl_new_tokens=4))
    result = evaluate_run(learned_run)
    task = result["task"]
    trained = [r for r in RunDir(learned_run).metrics() if "val_loss" in r]
    assert task["n_examples"] == 4 and set(task["sub_scores"]) == {"close", "has"}
    # the same held-out prompts, greedy answers and grader as training's last evaluation
    assert task["reward"]["base"] == pytest.approx(trained[0]["reward"])
    assert task["reward"]["tuned"] == pytest.approx(trained[-1]["reward"])
    assert task["reward"]["ci95"][0] > 0
    assert "held-out reward" in result["verdict"] and result["general"]


def test_the_kept_checkpoint_is_the_best_held_out_reward_within_the_budget():
    from tunesmith.training.events import EvaluationEvent, ProbesEvent
    from tunesmith.training.selection import select_final

    measured = ((2, 0.4, True), (4, 0.7, True), (6, 0.9, False))  # (step, held-out reward, within budget)
    metrics = [row for step, reward, ok in measured for row in (
        EvaluationEvent(step, -reward, reward={"reward": reward}).to_dict(), ProbesEvent(step, {}, ok).to_dict())]
    assert select_final(metrics) == (4, "best held-out reward within the forgetting budget")


def test_grpo_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_dir):
    """LoRA with beta > 0 (the KL to the base, its adapters disabled, in every step's loss), two
    micro-batches a step (one rollout, its loss in two pieces over the step's totals)."""
    from test_nothing_lost import losses, run_cli, wait_for_step

    def rewards(run):
        return {r["step"]: r["reward"] for r in RunDir(run).metrics() if "loss" in r}

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**grpo_config(tmp_path, tiny_model_dir), "output": str(tmp_path / "run"),
                                      "grpo": {"group_size": 4, "max_completion_tokens": 4, "beta": 0.04},
                                      "max_steps": 6, "batch_size": 1, "grad_accum_steps": 2, "lr": 1e-2,
                                      "save_every": 1, "eval_every": 6}))
    train(load_config(config, {"output": str(tmp_path / "ref")}), show_progress=False)
    proc = run_cli([str(config), "--no-progress"])
    wait_for_step(tmp_path / "run", 2, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert max(losses(tmp_path / "run")) < 6, "the kill must land mid-run"
    assert train(load_config(config), resume="auto", show_progress=False).steps == 6
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")  # bit for bit, every step
    assert rewards(tmp_path / "run") == rewards(tmp_path / "ref")  # the same samples, graded the same
    assert any(r["kl"] > 0 for r in RunDir(tmp_path / "run").metrics() if "loss" in r)  # beta: the base read


def test_the_grader_flag_is_a_train_flag(tmp_path):
    from click.testing import CliRunner

    from tunesmith.cli import main

    data = write_jsonl(tmp_path / "rft.jsonl", rft_rows())
    result = CliRunner().invoke(main, ["train", str(data), "--grader", "g.json"])  # no --objective grpo
    assert result.exit_code != 0 and "set objective: grpo" in result.output


def test_data_check_of_a_grpo_config_takes_its_prompts_and_its_grader(tmp_path, tiny_tokenizer):
    import json

    from tunesmith.cli_grade import check_files_with_grader
    from tunesmith.data.limits import CheckLimits

    rows = rft_rows()
    del rows[2]["answer"]
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GRADER))
    config = load_config(None, {"data": str(write_jsonl(tmp_path / "rft.jsonl", rows)), "objective": "grpo",
                                "grader": str(grader)})
    report = check_files_with_grader(config, tiny_tokenizer, CheckLimits(), 0, {}, None)
    assert [(e.line, e.field) for e in report.errors] == [(3, "item.answer")]  # not "has no answer to learn"
