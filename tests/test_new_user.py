"""What a new user hits first: signals that answer at once, errors before anything loads and all at
once, a log that says what it does (issue 16 items 5, 6, 7, 8)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from click.testing import CliRunner

from tunesmith import load_config, train
from tunesmith.cli import main
from tunesmith.commands import train as recipe
from tunesmith.errors import ConfigError, RunDirError, StoppedBeforeTraining
from tunesmith.run import RunDir
from tunesmith.training.checkpoint import list_complete, read_train_state
from tunesmith.training.events import CheckpointEvent
from tunesmith.training.signals import StopFlag


def settings(data, model_dir, out, **more):
    return {"data": str(data), "model": str(model_dir), "output": str(out), "precision": "fp32", **more}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_first_step_leaves_no_run_directory(faq_file, tiny_model_dir, tmp_path, monkeypatch, sig):
    from tunesmith.training import objectives  # the evaluation's home (the session's Objective)

    measure = objectives.validation_loss

    def signalled(*args, **kwargs):  # the signal lands during the base evaluation
        os.kill(os.getpid(), sig)
        time.sleep(0.5)
        return measure(*args, **kwargs)

    monkeypatch.setattr(objectives, "validation_loss", signalled)
    # Ctrl-C as in a terminal: a shell starts background jobs with SIGINT ignored (`.ci/run &`), and
    # Python then installs no KeyboardInterrupt handler, rightly (nohup's promise is kept).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "run"
    try:
        with pytest.raises(StoppedBeforeTraining, match="before the first step") as stopped:
            train(load_config(None, settings(faq_file("chat"), tiny_model_dir, out, max_steps=2)), show_progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.exit_code == 130
    assert not out.exists()  # the same command can simply run again
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


def test_the_first_signal_says_so_at_once(capfd):
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert stop.requested == "SIGINT"
        assert "SIGINT: stopping after this step (saving a checkpoint)" in capfd.readouterr().err
        with pytest.raises(KeyboardInterrupt):  # the second stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)


def test_an_occupied_output_is_refused_before_anything_loads(faq_file, tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(recipe, "load_tokenizer", lambda *a, **k: pytest.fail("loaded the tokenizer first"))
    with pytest.raises(RunDirError, match="already holds files"):
        train(load_config(None, settings(faq_file("chat"), tiny_model_dir, out)), show_progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_every_unknown_key_in_one_message(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: d.jsonl\nlearning_rate: 1e-3\nmax_step: 5\nlora:\n  rank: 8\n")
    with pytest.raises(ConfigError) as error:
        load_config(config)
    message = str(error.value)
    assert "3 unknown config key(s)" in message
    for wrong, right in (("learning_rate", "lr"), ("max_step", "max_steps"), ("lora.rank", "lora.r")):
        assert f"'{wrong}' (did you mean '{right}'?)" in message


@pytest.mark.parametrize("flag, answer", [(["--learning-rate", "1e-3"], "use --lr"),
                                          (["--num-epochs", "2"], "use --epochs"),
                                          (["--lora-r", "8"], "config key 'lora.r'")])
def test_other_tools_flags_get_ours(flag, answer):
    result = CliRunner().invoke(main, ["train", "x.jsonl", *flag])
    assert result.exit_code == 2 and answer in result.output


def test_the_log_states_the_steps_run_and_few_steps_are_warned(faq_file, tiny_model_dir, tmp_path):
    result = CliRunner().invoke(main, ["train", str(faq_file("chat")), "--model", str(tiny_model_dir),
                                       "--output", str(tmp_path / "run"), "--max-steps", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "3 steps (max_steps;" in text and "epoch(s) = 3 steps" not in text
    assert "only 3 optimizer step(s)" in text


def test_wall_seconds_add_up_over_the_sessions_of_a_resumed_run(faq_file, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    config = load_config(None, settings(faq_file("chat"), tiny_model_dir, out, max_steps=4, save_every=2,
                                        eval_every=2))

    def slow_then_crash(event):
        if isinstance(event, CheckpointEvent) and event.step == 2:
            raise RuntimeError("crash after the checkpoint")
        time.sleep(0.75)  # the first session takes seconds the second does not

    with pytest.raises(RuntimeError):
        train(config, show_progress=False, subscribers=[slow_then_crash])
    first = read_train_state(list_complete(out)[-1][1]).wall_seconds
    assert first >= 1.5
    began = time.perf_counter()
    result = train(config, show_progress=False, resume=str(out))
    second = time.perf_counter() - began
    summary = RunDir.open(out).summary()
    assert summary["wall_seconds"] == pytest.approx(result.wall_seconds)
    # The first session's time plus the second's (the second alone, as before, would be `second`).
    assert summary["wall_seconds"] - first == pytest.approx(second, abs=0.5)
