"""End to end on the tiny model: every data format trains and writes the run-directory contracts."""

import pytest

from tunesmith import load_config, train
from tunesmith.run import RunDir


@pytest.mark.parametrize("fmt", ["chat", "sharegpt", "instruction", "prompt_completion", "text"])
def test_each_format_trains(fmt, faq_file, tiny_model_dir, tmp_path):
    config = load_config(None, {"data": str(faq_file(fmt)), "model": str(tiny_model_dir),
                                "output": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4, "lr": 1e-2})
    result = train(config, show_progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "summary.json", "adapter/adapter_config.json"):
        assert (run / name).exists(), name
    rows = RunDir(run).metrics()
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    summary = RunDir(run).summary()
    assert summary["base_val_loss"] == pytest.approx(result.base_val_loss)
    assert summary["train_tokens"] > 0 and summary["wall_seconds"] > 0
