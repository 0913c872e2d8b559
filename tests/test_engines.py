"""`--engine`: llama.cpp gives transformers' greedy tokens on the tiny run (an f32 GGUF, so the
same weights; skipped without llama-cpp-python), and vLLM refuses cleanly where it is absent."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from test_export import tiny_tokenizer_known_to_llama_cpp  # noqa: F401  (autouse: the exporter accepts the tiny tokenizer)
from tunesmith.data.render import encode_prompt, end_of_turn_ids, pad_id
from tunesmith.inference.decode import generate_batch
from tunesmith.inference.engines import EngineUnavailable, open_engine
from tunesmith.run import load_run

QUESTIONS = ["What is a building permit?", "How long does a permit take?", "Who decides on permits?",
             "Can I build without a permit?"]


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_engine_gives_transformers_greedy_tokens(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the engine exports into the run folder
    model, tokenizer = load_run(run)
    prompts = [encode_prompt([{"role": "user", "content": q}], tokenizer) for q in QUESTIONS]
    eos = sorted(end_of_turn_ids(tokenizer))
    reference = generate_batch(model, prompts, 24, eos, pad_id(tokenizer), batch_size=1)
    engine = open_engine("llama.cpp", run, eos, gguf_type="f32", log=lambda m: None)
    assert engine.path == run / "export-gguf" / "model-f32.gguf"  # exported on demand, kept in the run
    # f32 weights in both: llama.cpp's own kernels round differently, but not enough to change the
    # argmax of this model on these prompts (asserted exactly).
    assert engine.generate(prompts, 24) == reference


def test_vllm_engine_refuses_cleanly_without_vllm(tiny_run):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(EngineUnavailable, match=r"pip install vllm.*GPU"):
        open_engine("vllm", tiny_run, [0])
