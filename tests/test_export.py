"""`tunesmith export` on the tiny model: adapter card, merged parity, GGUF round trips and Modelfile.

The run's adapter has lora_B filled with random values (see `make_tiny_run`), so a merge or a GGUF
conversion that drops or mangles the adapter changes the logits and fails here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import llama_cpp_greedy, make_tiny_run
from tunesmith.data.render import end_of_turn_ids
from tunesmith.errors import ExportError
from tunesmith.export.exporter import export_run
from tunesmith.export.gguf import GGUF_TOLERANCE, permute_qk
from tunesmith.export.parity import logit_diff, sample_inputs
from tunesmith.model.loading import load_gguf_model, load_model
from tunesmith.run import RunDirError, load_run


@pytest.fixture(autouse=True)
def tiny_tokenizer_known_to_llama_cpp(tiny_model_dir, monkeypatch):
    """llama.cpp names a pre-tokenizer by the hash of its tokens for a probe text, so it knows the
    tiny test vocabulary by no name. Its pre-tokenizer is GPT-2's byte-level regex exactly, so
    'gpt-2' is what llama.cpp's converter would write for it, were it listed: list it."""
    from transformers import AutoTokenizer

    import tunesmith.export.gguf as gguf_export

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    digest = hashlib.sha256(str(tokenizer.encode(gguf_export.CHECK_TEXT)).encode()).hexdigest()
    known = {**gguf_export.known_pre_tokenizers(), digest: "gpt-2"}
    monkeypatch.setattr(gguf_export, "known_pre_tokenizers", lambda: known)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tuned(tiny_run):
    return load_run(tiny_run)


def fresh_inputs(tokenizer) -> list[torch.Tensor]:
    """Inputs the export's own check never saw."""
    ids = tokenizer("Do I need drawings for a shed? twelve weeks", add_special_tokens=False)["input_ids"]
    return [torch.tensor([ids]), torch.randint(0, len(tokenizer), (2, 17), generator=torch.Generator().manual_seed(1))]


def test_adapter_export_has_card_and_leaves_run_alone(tiny_run, tmp_path):
    before = digest(tiny_run / "adapter")
    result = export_run(tiny_run, "adapter", tmp_path / "adapter")
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(result.files)
    card = (tmp_path / "adapter" / "README.md").read_text()
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    summary = json.loads((tiny_run / "summary.json").read_text())
    config_model = [line for line in (tiny_run / "config.yaml").read_text().splitlines()
                    if line.startswith("model:")][0]
    assert f"base_model: {config_model.split(': ', 1)[1]}" in card
    assert all(h in card for h in manifest["data_sha256"].values())
    assert f"{summary['final_val_loss']:.4f}" in card
    assert digest(tiny_run / "adapter") == before
    assert digest(tmp_path / "adapter")["adapter_model.safetensors"] == before["adapter_model.safetensors"]


@pytest.mark.numerics
def test_merged_equals_base_plus_adapter(tiny_run, tuned, tmp_path, capsys):
    model, tokenizer = tuned
    before = digest(tiny_run / "adapter")
    result = export_run(tiny_run, "merged", tmp_path / "merged")
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert "max |logit difference|" in capsys.readouterr().out
    merged = load_model(str(tmp_path / "merged"))
    assert not hasattr(merged, "peft_config")  # a plain model: no adapter layers left
    diff, _ = logit_diff(model, merged, fresh_inputs(tokenizer))
    assert diff <= 1e-4
    # ...and the adapter really matters, so the check above could fail.
    with model.disable_adapter():
        adapter_effect, _ = logit_diff(model, merged, fresh_inputs(tokenizer))
    assert adapter_effect > 1e-2
    config = json.loads((tmp_path / "merged" / "tokenizer_config.json").read_text())
    template = config.get("chat_template") or (tmp_path / "merged" / "chat_template.jinja").read_text()
    assert template == tokenizer.chat_template
    assert digest(tiny_run / "adapter") == before  # the adapter is never touched


def test_merged_refuses_beyond_tolerance_and_writes_nothing(tiny_run, tmp_path):
    with pytest.raises(ExportError, match="differs from base \\+ adapter"):
        export_run(tiny_run, "merged", tmp_path / "strict", tolerance=0.0)
    assert not (tmp_path / "strict").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".strict")]


def test_existing_output_is_not_overwritten(tiny_run, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="--overwrite"):
        export_run(tiny_run, "adapter", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    export_run(tiny_run, "adapter", tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists()


def test_permutation_matches_transformers_unpermute():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(8 * 4, 3)  # 4 heads of dim 8
    permuted = permute_qk(w, 4)
    assert not np.array_equal(permuted, w)
    assert np.array_equal(LlamaTensorProcessor()._reverse_permute_weights(permuted, 4, 4), w)


@pytest.mark.numerics
@pytest.mark.parametrize("gguf_type", ["f32", "f16", "q8_0"])
def test_gguf_round_trip(tiny_run, tuned, tmp_path, gguf_type):
    model, tokenizer = tuned
    out = tmp_path / gguf_type
    result = export_run(tiny_run, "gguf", out, gguf_type=gguf_type)
    name = f"model-{gguf_type}.gguf"
    assert set(result.files) == {name, "Modelfile"}
    assert result.relative_diff <= GGUF_TOLERANCE[gguf_type]
    loaded = load_gguf_model(out, name)
    _, rel = logit_diff(model, loaded, fresh_inputs(tokenizer))
    assert rel <= GGUF_TOLERANCE[gguf_type]
    if gguf_type == "f32":
        assert result.max_abs_diff <= 1e-4


@pytest.mark.numerics
def test_gguf_q8_weights_are_exactly_the_quantized_merge(tiny_run, tmp_path):
    import gguf

    from tunesmith.export.parity import merged_model
    from tunesmith.run import RunDir

    export_run(tiny_run, "gguf", tmp_path / "q8", gguf_type="q8_0")
    merged, _, _ = merged_model(RunDir.open(tiny_run))
    loaded = load_gguf_model(tmp_path / "q8", "model-q8_0.gguf").state_dict()
    qtype = gguf.GGMLQuantizationType.Q8_0
    for name, weight in merged.state_dict().items():
        if name.endswith("proj.weight"):  # q/k included: the permutation must round-trip exactly
            expected = gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), qtype), qtype)
            assert np.array_equal(loaded[name].numpy(), expected), name


def test_gguf_metadata_and_modelfile(tiny_run, tuned, tmp_path):
    import gguf

    _, tokenizer = tuned
    export_run(tiny_run, "gguf", tmp_path / "g", gguf_type="f16")
    reader = gguf.GGUFReader(tmp_path / "g" / "model-f16.gguf")
    meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "gpt-2"  # llama.cpp's name; it refuses an unknown one
    tokens = meta["tokenizer.ggml.tokens"]
    assert tokens[tokenizer.eos_token_id] == "<|im_end|>" and len(tokens) == len(tokenizer)
    assert len(meta["tokenizer.ggml.merges"]) > 0

    modelfile = (tmp_path / "g" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf\n")
    stops = {line.split('"')[1] for line in modelfile.splitlines() if line.startswith("PARAMETER stop")}
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    assert stops == {vocab[i] for i in end_of_turn_ids(tokenizer)} and "<|im_end|>" in stops
    # The Go template must produce what the Jinja template produces for a system + user turn.
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    go_render = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    jinja = tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                          tokenize=False, add_generation_prompt=True)
    assert jinja == go_render
    assert template == ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                        "<|im_start|>assistant\n")
    assert 'SYSTEM """You are a helpful assistant."""' in modelfile  # the template's own default


def test_gguf_tokenizer_loads_back(tiny_run, tuned, tmp_path):
    from transformers import AutoTokenizer

    _, tokenizer = tuned
    export_run(tiny_run, "gguf", tmp_path / "g", gguf_type="f32")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "g", gguf_file="model-f32.gguf")
    text = "What is a building permit? 0123 twelve weeks"
    assert loaded(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded.eos_token == "<|im_end|>"


def test_full_finetune_run_exports(tiny_model_dir, tmp_path):
    run = make_tiny_run(tiny_model_dir, tmp_path / "full-run", method="full")
    with pytest.raises(ExportError, match="full fine-tune"):
        export_run(run, "adapter")
    merged = export_run(run, "merged", tmp_path / "merged")
    assert merged.max_abs_diff <= 1e-4
    gguf_result = export_run(run, "gguf", tmp_path / "gguf", gguf_type="f32")
    assert gguf_result.relative_diff <= GGUF_TOLERANCE["f32"]
    tuned_model = load_model(str(run / "model"))
    base = load_model(str(tiny_model_dir))
    changed, _ = logit_diff(base, load_model(str(tmp_path / "merged")), sample_inputs(load_run(run)[1]))
    assert changed > 0  # the export carries the tuned weights, not the base
    same, _ = logit_diff(tuned_model, load_model(str(tmp_path / "merged")), sample_inputs(load_run(run)[1]))
    assert same <= 1e-6


def test_cli_export_and_chat(tiny_run, tmp_path):
    from click.testing import CliRunner

    from tunesmith.cli import main

    runner = CliRunner()
    done = runner.invoke(main, ["export", str(tiny_run), "--format", "gguf", "--gguf-type", "q8_0",
                                "--output", str(tmp_path / "g")])
    assert done.exit_code == 0, done.output
    assert "model-q8_0.gguf" in done.output and (tmp_path / "g" / "Modelfile").exists()
    refused = runner.invoke(main, ["export", str(tiny_run), "--format", "adapter", "--output", str(tmp_path / "g")])
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    chat = runner.invoke(main, ["chat", str(tiny_run), "--max-new-tokens", "4"], input="Hello\n/exit\n")
    assert chat.exit_code == 0, chat.output
    assert "bot> " in chat.output and "/reset" in chat.output


def test_gguf_refuses_a_tokenizer_llama_cpp_does_not_know(tiny_run, tmp_path, monkeypatch):
    import tunesmith.export.gguf as gguf_export

    monkeypatch.setattr(gguf_export, "known_pre_tokenizers", dict)
    with pytest.raises(ExportError, match="llama.cpp does not know this tokenizer's pre-tokenizer"):
        export_run(tiny_run, "gguf", tmp_path / "g", gguf_type="f16")
    assert not (tmp_path / "g").exists() and not list(tmp_path.glob(".g.*"))


def test_gguf_runs_in_llama_cpp_with_transformers_greedy_tokens(tiny_run, tuned, tmp_path):
    """The file loads in a real llama.cpp (not only in transformers' GGUF reader) and decodes the
    same greedy tokens as base + adapter in transformers."""
    model, tokenizer = tuned
    export_run(tiny_run, "gguf", tmp_path / "g", gguf_type="f32")
    prompt = sample_inputs(tokenizer)[0][0].tolist()
    with torch.no_grad():
        expected = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
    assert llama_cpp_greedy(tmp_path / "g" / "model-f32.gguf", prompt, 12) == expected[:12]


def test_a_q8_0_export_generates_in_llama_cpp_on_two_threads(tiny_run, tuned, tmp_path):
    """q8_0, the quantisation users ship most, on two threads: the matrix kernels that a native build
    of llama.cpp on a host with AMX took there died with SIGILL (f16 and one thread did not reach them).
    The greedy tokens are those of transformers reading the same q8_0 file, up to where the two
    engines' rounding of 8-bit products may first part (the first tokens)."""
    model, tokenizer = tuned
    export_run(tiny_run, "gguf", tmp_path / "q", gguf_type="q8_0")
    prompt = sample_inputs(tokenizer)[0][0].tolist()
    one, two = (llama_cpp_greedy(tmp_path / "q" / "model-q8_0.gguf", prompt, 12, threads) for threads in (1, 2))
    assert len(two) == 12 and two == one  # the thread count changes who computes, not what
    dequantized = load_gguf_model(tmp_path / "q", "model-q8_0.gguf")
    with torch.no_grad():
        expected = dequantized.generate(input_ids=torch.tensor([prompt]), max_new_tokens=3, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
    assert two[:1] == expected[:1]
