"""The command line end to end on the tiny model: train, generate, resume, and clear errors."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

import tunesmith.cli
from tunesmith.cli import main
from tunesmith.config import TrainConfig
from tunesmith.errors import CheckpointError, ConfigError


def test_train_then_generate(faq_file, tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", str(faq_file("sharegpt")), "--model", str(tiny_model_dir),
                                  "--output", str(out), "--max-steps", "2", "--lr", "1e-2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "validation loss   base" in result.output and str(out) in result.output
    result = runner.invoke(main, ["generate", str(out), "--prompt", "What is a building permit?",
                                  "--max-new-tokens", "5"])
    assert result.exit_code == 0, result.output
    # Greedy: the command prints exactly what the Python API answers for the same run.
    from tunesmith import generate, load_run

    model, tokenizer = load_run(out)
    expected = generate(model, tokenizer, [{"role": "user", "content": "What is a building permit?"}], max_new_tokens=5)
    assert result.stdout == expected + "\n"


def test_bad_data_names_file_line_and_field_and_creates_nothing(tiny_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q", "completion": ""}\n')
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(data), "--model", str(tiny_model_dir), "--output", str(out)])
    assert result.exit_code == 1
    assert f"{data}:2: completion: is empty" in " ".join(result.output.split())
    assert not out.exists()


@pytest.mark.parametrize("command", [["train"], ["plan"], ["data", "check"]])
def test_a_config_error_exits_2_from_every_command(tmp_path, command):
    config = tmp_path / "c.yaml"
    config.write_text("data: x.jsonl\nlearning_rate: 0.1\n")
    result = CliRunner().invoke(main, [*command, str(config)])
    assert result.exit_code == 2
    label = "usage error" if command == ["data", "check"] else "error"
    assert result.stderr == f"{label}: {config}: 1 unknown config key(s): 'learning_rate' (did you mean 'lr'?)\n"


def raising(exc: BaseException):
    def load_source(*args, **kwargs):
        raise exc
    return load_source


@pytest.mark.parametrize("exc, code, stderr", [
    (CheckpointError("checkpoint [bold]x[/] is incomplete"), 1, "error: checkpoint [bold]x[/] is incomplete\n"),
    (ConfigError("config key 'lr' must be positive"), 2, "error: config key 'lr' must be positive\n"),
    (FileNotFoundError(2, "No such file or directory", "gone.yaml"), 1,
     "error: [Errno 2] No such file or directory: 'gone.yaml'\n"),
    (KeyboardInterrupt(), 130, "interrupted: stopped at once by a second Ctrl-C\n"),
])
def test_one_handler_prints_label_and_message_and_exits_with_the_class_code(monkeypatch, exc, code, stderr):
    monkeypatch.setattr(tunesmith.cli, "load_source", raising(exc))
    result = CliRunner().invoke(main, ["plan", "c.yaml"])
    assert (result.exit_code, result.stderr, result.stdout) == (code, stderr, "")  # markup printed as written


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(tunesmith.cli, "load_source", raising(RuntimeError("a bug")))
    result = CliRunner().invoke(main, ["plan", "c.yaml"])
    assert isinstance(result.exception, RuntimeError) and result.exc_info[2] is not None


def test_help_states_the_config_defaults():
    from tunesmith.config import TrainConfig
    from tunesmith.data.limits import CheckLimits

    train_help = CliRunner().invoke(main, ["train", "--help"], terminal_width=200).output
    assert f"(default {TrainConfig.batch_size})" in train_help and "[lora|dora|full|qlora]" in train_help
    check_help = CliRunner().invoke(main, ["data", "check", "--help"], terminal_width=200).output
    assert CheckLimits.max_line_bytes == 1 << 20 and "(default 1 MiB)" in check_help  # written out, see cli.py


@pytest.mark.parametrize("command", ["train", "tune", "curve", "plan"])
def test_run_flags_reach_the_config_as_overrides_of_its_keys(monkeypatch, command):
    seen = {}

    def load_source(source, overrides):
        seen.update(overrides)
        raise KeyboardInterrupt  # stop before anything is loaded

    monkeypatch.setattr(tunesmith.cli, "load_source", load_source)
    monkeypatch.setattr("tunesmith.commands.tune.load_source", load_source)
    more = ["--lr", "2e-4", "--eval", "e.jsonl"] if command != "plan" else []
    flags = ["--method", "dora", "--batch-size", "3", *more]
    result = CliRunner().invoke(main, [command, "data.jsonl", *flags])
    assert result.exit_code == 130, result.output
    given = {k: v for k, v in seen.items() if v is not None}
    expected_more = {"lr": 2e-4, "eval": "e.jsonl"} if command != "plan" else {}
    assert given == {"method": "dora", "batch_size": 3, **expected_more}
    assert set(seen) <= {f.name for f in dataclasses.fields(TrainConfig)}  # config keys, each None unless given


def test_objective_is_a_flag_and_method_dpo_points_to_it(monkeypatch):
    seen = {}
    monkeypatch.setattr(tunesmith.cli, "load_source", lambda source, overrides: seen.update(overrides) or raising(
        KeyboardInterrupt())())
    assert CliRunner().invoke(main, ["train", "pairs.jsonl", "--objective", "dpo"]).exit_code == 130
    assert seen["objective"] == "dpo" and seen["method"] is None
    result = CliRunner().invoke(main, ["train", "pairs.jsonl", "--method", "dpo"])
    assert result.exit_code == 2 and "dpo is an objective: use --objective dpo" in result.stderr
    result = CliRunner().invoke(main, ["train", "pairs.jsonl", "--method", "lorax"])
    assert "'lorax' is not one of 'lora', 'dora', 'full', 'qlora'" in result.stderr  # click's own message otherwise


def test_a_flag_without_written_help_takes_its_fields_docstring():
    import click

    from tunesmith.cli_config import config_option
    from tunesmith.field_docs import field_docs

    option = config_option("warmup_ratio")(lambda **kwargs: None).__click_params__[0]
    assert option.opts == ["--warmup-ratio"] and option.type is click.FLOAT and option.default is None
    assert option.help == field_docs(TrainConfig)["warmup_ratio"] and option.help.startswith("Fraction of steps")


def test_resume_a_run_by_its_directory_alone(faq_file, tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", str(faq_file("chat")), "--model", str(tiny_model_dir), "--output", str(out), "--max-steps", "4",
            "--save-every", "1", "--no-progress"]
    assert runner.invoke(main, args).exit_code == 0
    (out / "summary.json").unlink()
    result = runner.invoke(main, ["train", "--resume", str(out / "checkpoints" / "step-4"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_show_in_a_pipe_marks_trained_tokens_in_the_text(faq_file, tiny_model_dir):
    """Not a terminal (CliRunner, like a pipe or CI log): no colours, so trained tokens are [[marked]]."""
    result = CliRunner().invoke(main, ["data", "check", str(faq_file("chat")), "--model", str(tiny_model_dir),
                                       "--show", "1"])
    assert result.exit_code == 0, result.output
    marked = result.stdout.split("[[", 1)[1].split("]]", 1)[0]
    first_answer = json.loads(faq_file("chat").read_text().splitlines()[0])["messages"][-1]["content"]
    assert marked == first_answer + "<|im_end|>"  # the answer and its end of turn, nothing of the prompt
    assert "\x1b[" not in result.stdout


def test_generate_base_answers_with_the_adapters_disabled(tiny_run):
    from tunesmith import generate, load_run

    model, tokenizer = load_run(tiny_run)
    question = [{"role": "user", "content": "What is a building permit?"}]
    with model.disable_adapter():
        base = generate(model, tokenizer, question, max_new_tokens=6)
    tuned = generate(model, tokenizer, question, max_new_tokens=6)
    assert base != tuned
    runner = CliRunner()
    for flags, expected in ((["--base"], base), ([], tuned)):
        result = runner.invoke(main, ["generate", str(tiny_run), "--prompt", question[0]["content"],
                                      "--max-new-tokens", "6", *flags])
        assert result.exit_code == 0, result.output
        assert result.stdout == expected + "\n"
