"""The command line end to end on the tiny model: train, generate, resume, and clear errors."""

import json

from click.testing import CliRunner

from tunesmith.cli import main


def test_train_then_generate(faq_file, tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", str(faq_file("sharegpt")), "--model", str(tiny_model_dir), "--output", str(out),
                                  "--max-steps", "2", "--lr", "1e-2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "validation loss   base" in result.output and str(out) in result.output
    result = runner.invoke(main, ["generate", str(out), "--prompt", "What is a building permit?", "--max-new-tokens", "5"])
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


def test_unknown_config_key_is_a_clear_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: x.jsonl\nlearning_rate: 0.1\n")
    result = CliRunner().invoke(main, ["train", str(config)])
    assert result.exit_code == 1 and "did you mean 'lr'" in result.output


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
