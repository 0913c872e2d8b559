"""Training-loop correctness on the tiny model: accumulation, packing, adapters, run contracts."""

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors import safe_open

from tunesmith import load_config, train
from tunesmith.config import ConfigError, LoraConfig
from tunesmith.data import Conversation, Message, encode_conversation, prepare_data
from tunesmith.model.loading import add_adapter, load_model
from tunesmith.model.sharding import compile_layers, decoder_layers
from tunesmith.run import RunDir, load_run
from tunesmith.training.batching import eval_batches, loss_sum, pack_examples, split_batch
from tunesmith.training.events import StepEvent
from tunesmith.training.loss import backward_group, validation_loss


def examples(tokenizer, answers):
    return [encode_conversation(Conversation((Message("user", f"Question {i}?"), Message("assistant", a)), f"t:{i}"),
                                tokenizer, 512)[0] for i, a in enumerate(answers)]


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.numerics
def test_accumulation_normalises_by_trained_tokens(tiny_model_dir, tiny_tokenizer):
    exs = examples(tiny_tokenizer, ["Yes.", "No.", "The quick brown fox jumps over the lazy dog twice.",
                                    "Four to six weeks, sometimes twelve for large projects."])
    first, second = pack_examples(exs[:2]), pack_examples(exs[2:])
    assert first.n_trained * 2 < second.n_trained  # the halves differ, so averaging per micro-batch would be wrong
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = add_adapter(load_model(str(tiny_model_dir)), "full", LoraConfig())
    one = backward_group(model, [pack_examples(exs)], accelerator, torch.float32)
    g_one = grads(model)
    model.zero_grad()
    two = backward_group(model, [first, second], accelerator, torch.float32)
    g_two = grads(model)
    assert abs(one - two) < 1e-5
    for name in g_one:
        torch.testing.assert_close(g_two[name], g_one[name], rtol=1e-5, atol=1e-5)


@pytest.mark.numerics
def test_packed_loss_equals_examples_one_at_a_time(tiny_model_dir, tiny_tokenizer):
    exs = examples(tiny_tokenizer, ["Yes.", "The quick brown fox.", "Four to six weeks."])
    model = load_model(str(tiny_model_dir)).eval()
    device = torch.device("cpu")
    with torch.no_grad():
        packed = loss_sum(model, pack_examples(exs), device)
        alone = sum(loss_sum(model, pack_examples([e]), device) for e in exs)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.numerics
def test_plain_peft_loads_the_adapter_with_the_same_logits(tiny_model_dir, faq_file, tmp_path):
    from peft import PeftModel

    config = load_config(None, {"data": str(faq_file("chat")), "model": str(tiny_model_dir),
                                "output": str(tmp_path / "run"), "max_steps": 3, "lr": 5e-2, "method": "lora"})
    train(config, show_progress=False)
    ours, _ = load_run(tmp_path / "run")
    theirs = PeftModel.from_pretrained(load_model(str(tiny_model_dir)), tmp_path / "run" / "adapter").eval()
    lora_b = [p for n, p in theirs.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "training must have moved the adapter off zero"
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        base = load_model(str(tiny_model_dir))(ids).logits
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=0)
    assert not torch.allclose(base, theirs(ids).logits, atol=1e-4), "the adapter must change the logits"


def test_full_and_dora_runs_save_their_weights(tiny_model_dir, faq_file, tmp_path):
    for method, saved in (("full", "model/model.safetensors"), ("dora", "adapter/adapter_model.safetensors")):
        config = load_config(None, {"data": str(faq_file("instruction")), "model": str(tiny_model_dir),
                                    "output": str(tmp_path / method), "max_steps": 2, "method": method,
                                    "precision": "fp32"})
        result = train(config, show_progress=False)
        assert (tmp_path / method / saved).exists()
        # The saved weights, reloaded, give the final validation loss: the model saved is the one measured.
        # One example per batch: the mean per token does not depend on packing, nor on the attention used.
        model, tokenizer = load_run(tmp_path / method)
        data = prepare_data(config.data, None, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed)
        reloaded = validation_loss(model, eval_batches(data.val, 1), torch.device("cpu"), torch.float32)
        assert reloaded == pytest.approx(result.final_val_loss, rel=1e-5)
        assert result.final_val_loss != pytest.approx(result.base_val_loss, rel=1e-5)  # and it trained


def test_training_lowers_validation_loss(tiny_model_dir, faq_file, tmp_path):
    config = load_config(None, {"data": str(faq_file("chat")), "eval": str(faq_file("chat")),
                                "model": str(tiny_model_dir), "output": str(tmp_path / "run"), "max_steps": 30,
                                "lr": 1e-2, "method": "full"})
    result = train(config, show_progress=False)
    assert result.final_val_loss < 0.8 * result.base_val_loss


# Recorded on the tiny model (conftest: seed 0, 2 layers, 32 wide) with the FAQ, seed 0, fp32 on
# the CPU, before the recipe was split into phases. A change to these numbers is a change of
# numerics (loss normalisation, data order, packing, LoRA init, the schedule): make it on purpose,
# say why in the commit, and record the new values here. With the KL-to-base term off the loop is
# what it was; the defaults turn the term on (forgetting.kl_weight 1.0, kl_tokens 0.25), recorded
# when they did.
PINNED = {
    "kl off": ({"kl_weight": 0.0}, [5.994333744049072, 6.006674766540527, 5.985539436340332],
               6.0490816177860385, 6.037376157699093),
    "defaults": ({}, [5.994333744049072, 6.006689071655273, 5.9855756759643555], 6.0490816177860385,
                 6.037401753087198),
}


@pytest.mark.numerics
@pytest.mark.parametrize("case", PINNED)
def test_three_fp32_steps_give_the_pinned_losses(case, tiny_model_dir, faq_file, tmp_path):
    forgetting, step_losses, base_val_loss, final_val_loss = PINNED[case]
    config = load_config(None, {"data": str(faq_file("chat")), "model": str(tiny_model_dir),
                                "output": str(tmp_path / "run"), "max_steps": 3, "precision": "fp32",
                                "forgetting": forgetting})
    result = train(config, show_progress=False)
    rows = RunDir(tmp_path / "run").metrics()
    assert [r["loss"] for r in rows if "loss" in r] == pytest.approx(step_losses, rel=1e-6)
    assert result.base_val_loss == pytest.approx(base_val_loss, rel=1e-6)
    assert result.final_val_loss == pytest.approx(final_val_loss, rel=1e-6)


@pytest.mark.numerics
def test_bf16_frozen_weights_give_the_autocast_results(tiny_model_dir, tiny_tokenizer):
    """Storing the frozen linears in bf16 (and letting autocast, not peft, match the adapters' input
    dtype) is only a saving: under bf16 autocast the loss and the adapters' gradients are unchanged."""
    exs = examples(tiny_tokenizer, ["Yes.", "The quick brown fox.", "Four to six weeks."])
    batch = pack_examples(exs)
    device = torch.device("cpu")
    results = []
    for frozen in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = add_adapter(load_model(str(tiny_model_dir)), "lora", LoraConfig(dropout=0.0), frozen_dtype=frozen)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)  # adapters away from zero, so they take part
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_sum(model, batch, device)
        loss.backward()
        results.append((loss.detach(), grads(model)))
    assert [p.dtype for n, p in model.named_parameters() if "lora_" in n] == [torch.float32] * len(
        [n for n, _ in model.named_parameters() if "lora_" in n])
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-6, atol=1e-6)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():  # adapters see the same inputs and gradients
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's memory map")
def test_bf16_lora_unmaps_the_weights_file(tiny_model_dir, tmp_path):
    import gc
    import shutil

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")  # a path no other test has mapped
    weights = str(folder / "model.safetensors")
    model = load_model(str(folder))
    assert weights in Path("/proc/self/maps").read_text()  # from_pretrained's fp32 tensors are views of the file
    model = add_adapter(model, "lora", LoraConfig(), frozen_dtype=torch.bfloat16)
    gc.collect()
    assert weights not in Path("/proc/self/maps").read_text()
    assert model.get_input_embeddings().weight.dtype == torch.float32


@pytest.mark.numerics
def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir, tiny_tokenizer):
    exs = examples(tiny_tokenizer, ["Yes.", "The quick brown fox.", "Four to six weeks."])
    accelerator = Accelerator(cpu=True)
    found = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = add_adapter(load_model(str(tiny_model_dir)), "lora", LoraConfig(dropout=0.0),
                            gradient_checkpointing=checkpointing)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
        model.train()
        backward_group(model, [pack_examples(exs)], accelerator, torch.float32)
        found.append(grads(model))
    assert found[0].keys() == found[1].keys() and found[0]
    for name in found[0]:
        torch.testing.assert_close(found[1][name], found[0][name], rtol=1e-5, atol=1e-6)


def test_qlora_says_clearly_what_it_needs(tiny_model_dir, faq_file, tmp_path):
    import pytest

    from tunesmith.config import ConfigError
    from tunesmith.model.loading import ModelError

    if torch.cuda.is_available():
        pytest.skip("on CUDA these paths run for real")
    settings = {"data": str(faq_file("chat")), "model": str(tiny_model_dir), "output": str(tmp_path / "run"),
                "max_steps": 1, "method": "qlora"}
    with pytest.raises(ModelError, match="CUDA"):
        train(load_config(None, settings), show_progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="distributed: ddp"):  # refused when the config is built
        load_config(None, {**settings, "distributed": "fsdp"})


@pytest.mark.numerics
def test_packed_attention_equals_examples_one_at_a_time(tiny_model_dir, tiny_tokenizer):
    from tunesmith.model.attention import use_packed_attention

    exs = examples(tiny_tokenizer, ["Yes.", "The quick brown fox.", "Four to six weeks."])
    model = load_model(str(tiny_model_dir)).eval()
    device = torch.device("cpu")
    with torch.no_grad():
        masked = loss_sum(model, pack_examples(exs), device)  # transformers' block-diagonal mask
        assert use_packed_attention(model)
        packed = loss_sum(model, pack_examples(exs), device)  # one causal SDPA per example
        alone = sum(loss_sum(model, pack_examples([e]), device) for e in exs)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, masked, rtol=1e-5, atol=1e-5)
    # Generation takes the fallback path (no segments, a KV cache) and still works.
    out = model.generate(torch.tensor([exs[0].input_ids[:6]]), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == 9


def test_best_fit_bins_respect_the_budget_and_fill_tightly():
    from tunesmith.training.batching import best_fit_bins

    lengths = [7, 5, 4, 3, 3, 2, 2, 1, 1]
    bins = best_fit_bins(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every item once
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 3  # 28 tokens: the fewest bins of 10 that can hold them
    # 7 leaves room 3 that the first 3 fills exactly; 5 and 4 share a bin that a 1 completes
    assert [sorted(lengths[i] for i in b) for b in bins] == [[3, 7], [1, 4, 5], [1, 2, 2, 3]]


def test_token_budget_epochs_cover_every_example_once_and_resume_mid_epoch(tiny_tokenizer):
    from tunesmith.training.batching import epoch_plan, micro_batches

    exs = examples(tiny_tokenizer, [f"Answer number {i} " + "word " * (i % 7) for i in range(23)])
    budget = 3 * max(len(e.input_ids) for e in exs)
    plan = epoch_plan(exs, 8, seed=1, epoch=0, batch_tokens=budget)
    assert sorted(i for b in plan for i in b) == list(range(len(exs)))
    assert all(sum(len(exs[i].input_ids) for i in b) <= budget for b in plan)
    stream = micro_batches(exs, 8, 1, batch_tokens=budget)
    first = [next(stream) for _ in range(len(plan) + 2)]  # into the second epoch
    epoch, index, _ = first[3]
    resumed = micro_batches(exs, 8, 1, epoch, index, batch_tokens=budget)
    for expected in first[3:]:
        got = next(resumed)
        assert got[:2] == expected[:2] and got[2].sources == expected[2].sources


def test_compile_layers_compiles_each_decoder_layer_in_place(tiny_model_dir):
    model = add_adapter(load_model(str(tiny_model_dir)), "lora", LoraConfig())
    names = [n for n, _ in model.named_parameters()]
    assert compile_layers(model) == 2  # the tiny model's two decoder layers
    layers = decoder_layers(model)
    assert [type(m).__name__ for m in layers] == ["LlamaDecoderLayer"] * 2
    assert all(m._compiled_call_impl is not None for m in layers)
    assert [n for n, _ in model.named_parameters()] == names  # nothing renamed: checkpoints stay compatible


def test_compile_without_a_cpp_compiler_says_what_to_install(tiny_model_dir, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler.*compile: false"):
        compile_layers(load_model(str(tiny_model_dir)))


@pytest.mark.slow  # inductor compiles the layers: about 100 s on 2 cores
def test_compiled_layers_train_like_eager_and_save_the_same_names(tiny_model_dir, faq_file, tmp_path):
    found = {}
    for compiled in (False, True):
        rows = []
        config = load_config(None, {"data": str(faq_file("chat")), "model": str(tiny_model_dir), "compile": compiled,
                                    "output": str(tmp_path / str(compiled)), "max_steps": 3, "precision": "fp32"})
        train(config, show_progress=False,
              subscribers=[lambda event: rows.append(event.to_dict()) if isinstance(event, StepEvent) else None])
        names = sorted(safe_open(str(tmp_path / str(compiled) / "adapter" / "adapter_model.safetensors"), "pt").keys())
        found[compiled] = [r["loss"] for r in rows], names
    torch.testing.assert_close(found[True][0], found[False][0], rtol=1e-4, atol=1e-4)
    assert found[True][1] == found[False][1]  # no `_orig_mod.` in the saved names


@pytest.mark.numerics
def test_forward_tokens_runs_a_micro_batch_in_pieces_with_the_same_gradients(tiny_model_dir, tiny_tokenizer):
    exs = examples(tiny_tokenizer, ["Yes.", "The quick brown fox jumps over the lazy dog twice.", "No.",
                                    "Four to six weeks, sometimes twelve for large projects.", "Maybe."])
    batch = pack_examples(exs)
    limit = max(len(e.input_ids) for e in exs) + 2
    pieces = split_batch(batch, limit)
    assert len(pieces) >= 3 and all(p.n_tokens <= limit for p in pieces)
    assert torch.equal(torch.cat([p.input_ids for p in pieces], 1), batch.input_ids)
    assert sum((p.sources for p in pieces), ()) == batch.sources
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = add_adapter(load_model(str(tiny_model_dir)), "full", LoraConfig())
    whole = backward_group(model, [batch], accelerator, torch.float32)
    g_whole = grads(model)
    model.zero_grad()
    split = backward_group(model, [batch], accelerator, torch.float32, forward_tokens=limit)
    g_split = grads(model)
    assert abs(whole - split) < 1e-5
    assert g_whole and g_whole.keys() == g_split.keys()
    for name in g_whole:
        torch.testing.assert_close(g_split[name], g_whole[name], rtol=1e-5, atol=1e-6)


def test_split_batch_keeps_a_long_example_whole_and_small_batches_as_they_are(tiny_tokenizer):
    exs = examples(tiny_tokenizer, ["Yes.", "The quick brown fox jumps over the lazy dog twice.", "No."])
    batch = pack_examples(exs)
    assert split_batch(batch, None) == [batch] and split_batch(batch, batch.n_tokens) == [batch]
    pieces = split_batch(batch, 1)  # every example is longer than the limit: one piece each
    assert [p.n_tokens for p in pieces] == [len(e.input_ids) for e in exs]
    assert all(p.bounds.tolist() == [0, p.n_tokens] for p in pieces)
    assert torch.equal(pieces[1].position_ids, batch.position_ids[:, batch.bounds[1]:batch.bounds[2]])


def test_forward_tokens_default_splits_on_cpu_only():
    config = load_config(None, {"data": "x.jsonl"})
    assert config.forward_token_limit("cpu") == 1024 and config.forward_token_limit("cuda") is None
    assert load_config(None, {"data": "x.jsonl", "forward_tokens": 0}).forward_token_limit("cpu") is None
    assert load_config(None, {"data": "x.jsonl", "forward_tokens": 300}).forward_token_limit("cuda") == 300


def test_init_from_starts_the_adapter_from_a_finished_runs_adapter(tiny_run, tiny_model_dir, tmp_path):
    """The new run's adapter begins as the earlier run's (its lora_B randomised, so not zero): after one
    step at a vanishing rate the saved adapter is still that one. A run that differs is refused, naming
    the key and the fix, before anything is written."""
    from safetensors.torch import load_file

    settings = {"data": str(tiny_run.parent / "tiny-lora-faq.jsonl"), "model": str(tiny_model_dir), "max_steps": 1,
                "batch_size": 4, "lr": 1e-9, "warmup_ratio": 0, "forgetting": {"measure_during_training": False}}
    train(load_config(None, {**settings, "output": str(tmp_path / "next"), "init_from": str(tiny_run)}),
          show_progress=False)
    started, earlier = (load_file(run / "adapter" / "adapter_model.safetensors")
                        for run in (tmp_path / "next", tiny_run))
    assert started.keys() == earlier.keys()
    assert all(torch.allclose(started[k], earlier[k], atol=1e-6) for k in earlier)
    assert any("lora_B" in k and earlier[k].abs().max() > 0.1 for k in earlier)  # not the zero init of a fresh run
    with pytest.raises(ConfigError, match=r"was trained with lora.r 16, this run has 4: set lora.r: 16"):
        train(load_config(None, {**settings, "output": str(tmp_path / "r4"), "init_from": str(tiny_run),
                                 "lora": {"r": 4}}), show_progress=False)
    assert not (tmp_path / "r4").exists()
    with pytest.raises(ConfigError, match="'init_from' must be a finished run with an adapter"):
        train(load_config(None, {**settings, "output": str(tmp_path / "nowhere"), "init_from": str(tmp_path)}),
              show_progress=False)
    with pytest.raises(ConfigError, match="'init_from' starts an adapter .* method is full"):
        load_config(None, {**settings, "method": "full", "init_from": str(tiny_run)})
