"""End to end on the tiny model: every data format trains and writes the run-directory contracts."""

import pytest

from tunesmith import load_config, train
from tunesmith.data import prepare_data
from tunesmith.model.tokenizer import load_tokenizer
from tunesmith.run import RunDir
from tunesmith.training.events import StepEvent


@pytest.mark.parametrize("fmt", ["chat", "sharegpt", "instruction", "prompt_completion", "text"])
def test_each_format_trains(fmt, faq_file, tiny_model_dir, tmp_path):
    config = load_config(None, {"data": str(faq_file(fmt)), "model": str(tiny_model_dir),
                                "output": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4, "lr": 1e-2})
    steps: list[StepEvent] = []

    def record(event):
        if isinstance(event, StepEvent):
            steps.append(event)

    result = train(config, show_progress=False, subscribers=[record])
    run = tmp_path / "run"
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "summary.json", "adapter/adapter_config.json"):
        assert (run / name).exists(), name
    rows = RunDir(run).metrics()
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    summary = RunDir(run).summary()
    assert summary["base_val_loss"] == pytest.approx(result.base_val_loss)
    tokenizer = load_tokenizer(config.model, config.chat_template)
    data = prepare_data(config.data, None, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed)
    length = {e.source: len(e.input_ids) for e in data.train}
    assert len(length) == len(data.train)  # sources name the examples, so the steps' examples can be counted
    trained = sum(length[source] for step in steps for source in step.examples)  # packed: no padding counted
    assert summary["train_tokens"] == [r for r in rows if "loss" in r][-1]["tokens"] == trained
    assert summary["wall_seconds"] > 0
