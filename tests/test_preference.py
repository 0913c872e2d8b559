"""Preference tuning (objective dpo / orpo): formats, the data check, ln 2 at step 0, parity with TRL's
losses and gradients, exact resume after kill -9, and a learnable preference learned."""

from __future__ import annotations

import math
import signal
import types

import pytest
import torch
import yaml

from conftest import FAQ, twin_of_trl_model, write_jsonl
from tunesmith import load_config, train
from tunesmith.config import ConfigError, PreferenceConfig
from tunesmith.data import DataError, read_records
from tunesmith.data.check import check_files
from tunesmith.data.preference import PairExample
from tunesmith.data.records import PreferencePair
from tunesmith.data.render import IGNORE, _shift
from tunesmith.run import RunDir
from tunesmith.training.batching import pack_examples, sequence_log_probs

LN2 = math.log(2)


def pairs_rows(n_copies: int = 3) -> list[dict]:
    """A learnable preference: the FAQ's answer preferred over a fixed evasive one."""
    rows = [{"prompt": q, "chosen": a, "rejected": f"I cannot say, sorry ({i})."} for i, (q, a) in enumerate(FAQ)]
    return [{**r, "prompt": f"{r['prompt']} [{k}]"} for k in range(n_copies) for r in rows]


def quiet(**extra):
    return {"forgetting": {"measure_during_training": False, "kl_weight": 0}, "precision": "fp32", **extra}


def test_both_preference_formats_are_read_as_pairs(tmp_path):
    plain = write_jsonl(tmp_path / "plain.jsonl", [
        {"prompt": "Hi?", "chosen": "Hello there.", "rejected": "Go away."},
        {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
         "chosen": [{"role": "assistant", "content": "Hello."}],
         "rejected": [{"role": "assistant", "content": "No."}]}])
    openai = write_jsonl(tmp_path / "openai.jsonl", [
        {"input": {"messages": [{"role": "user", "content": "Hi?"}]},
         "preferred_output": [{"role": "assistant", "content": "Hello."}],
         "non_preferred_output": [{"role": "assistant", "content": "No."}]}])
    first, second = read_records(plain)
    assert first == PreferencePair((read_records(plain)[0].prompt[0],), first.chosen, first.rejected, f"{plain}:1")
    assert [m.role for m in first.prompt] == ["user"] and first.chosen[0].content == "Hello there."
    assert [m.role for m in second.prompt] == ["system", "user"] and not any(m.trained for m in second.prompt)
    (pair,) = read_records(openai)
    assert pair.prompt[0].content == "Hi?" and pair.chosen[0].content == "Hello." and pair.rejected[0].content == "No."


def test_every_bad_pair_is_named_by_line_and_training_writes_nothing(tmp_path, tiny_model_dir, tiny_tokenizer):
    rows = [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."},
            {"prompt": "Hi?", "chosen": "Hello."},  # line 2: no rejected side
            {"prompt": "Hi?", "chosen": " Same. ", "rejected": "Same."},  # line 3: identical answers
            {"prompt": "Hi?", "chosen": "", "rejected": "No."},  # line 4: empty
            {"input": {"messages": [{"role": "user", "content": "Hi?"}]}, "preferred_output": [],
             "non_preferred_output": [{"role": "assistant", "content": "x"}]}]  # line 5: other format, empty side
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    report = check_files(data, None, tiny_tokenizer, 256)
    assert [(e.line, e.field) for e in report.errors] == [(2, "rejected"), (3, "rejected"), (4, "chosen"),
                                                          (5, "(row)")]
    out = tmp_path / "run"
    with pytest.raises(DataError):
        train(load_config(None, {"data": str(data), "model": str(tiny_model_dir), "output": str(out),
                                 "objective": "dpo", **quiet()}), show_progress=False)
    assert not out.exists()


def test_the_check_warns_of_duplicates_imbalance_and_truncation_and_counts_tokens(tmp_path, tiny_tokenizer):
    long = "The municipality decides on every permit. " * 12
    rows = [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."},
            {"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."},  # duplicate of line 1
            {"prompt": "Why?", "chosen": long, "rejected": "Because."},  # imbalance
            {"prompt": "Hm?", "chosen": long + "yes", "rejected": long + "no"}]  # differs only past the cut
    report = check_files(write_jsonl(tmp_path / "w.jsonl", rows), None, tiny_tokenizer, 64)
    assert report.ok
    assert [(w.line, w.kind) for w in report.warnings] == [(2, "duplicate"), (3, "length imbalance"),
                                                           (4, "truncation")]
    split = report.stats["splits"]["train"]
    assert split["format"] == "preference" and split["rows"] == 4 and split["over_max_seq_tokens"] == 2
    assert split["chosen_trained_tokens"]["total"] > split["rejected_trained_tokens"]["total"]


def test_objective_and_data_must_agree(tmp_path, tiny_model_dir, faq_file):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows(1))
    with pytest.raises(ConfigError, match="objective: dpo or orpo"):
        train(load_config(None, {"data": str(pairs), "model": str(tiny_model_dir), "output": str(tmp_path / "a"),
                                 **quiet()}), show_progress=False)
    with pytest.raises(DataError, match="preference rows"):
        train(load_config(None, {"data": str(faq_file("chat")), "model": str(tiny_model_dir),
                                 "output": str(tmp_path / "b"), "objective": "dpo", **quiet()}), show_progress=False)
    with pytest.raises(ConfigError, match="replay_fraction"):
        load_config(None, {"data": "x", "objective": "orpo", "forgetting": {"replay_fraction": 0.1}})


def test_dpo_with_lora_starts_at_ln_2_and_learns_a_learnable_preference(tmp_path, tiny_model_dir, monkeypatch):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows(4))
    out = tmp_path / "dpo"
    train(load_config(None, {"data": str(data), "model": str(tiny_model_dir), "output": str(out), "objective": "dpo",
                             "max_steps": 30, "batch_size": 4, "lr": 1e-2, "eval_every": 10, **quiet()}),
          show_progress=False)
    rows = RunDir(out).metrics()
    evals = [r for r in rows if "preference_accuracy" in r]
    first_step = next(r for r in rows if "loss" in r)
    assert evals[0]["step"] == 0 and evals[0]["val_loss"] == pytest.approx(LN2, abs=1e-7)
    assert first_step["loss"] == pytest.approx(LN2, abs=1e-7)  # policy = reference: every log-ratio is 0
    assert evals[0]["preference_accuracy"] == 0.5 and evals[0]["reward_margin"] == 0.0
    assert evals[-1]["preference_accuracy"] == 1.0 and evals[-1]["preference_accuracy_ci"][0] > 0.5
    assert evals[-1]["reward_margin"] > 0.5 and evals[-1]["val_loss"] < 0.3
    assert_eval_measures_the_preference(out, evals[-1]["reward_margin"], monkeypatch)


def assert_eval_measures_the_preference(run, reward_margin: float, monkeypatch) -> None:
    """`tunesmith eval` of a DPO run: the held-out pairs, each model's own preference, the verdict says it."""
    from tunesmith.commands.evaluate import TASK_SIZES, TaskSizes, evaluate_run
    from tunesmith.forgetting import probes as probe_module
    from tunesmith.forgetting.probes import ProbeSizes

    monkeypatch.setitem(probe_module.PROBE_SIZES, "standard", ProbeSizes(
        "standard", wiki_passages=2, wiki_max_tokens=32, analogies_per_section=1, trivia=2, kl_prompts=2,
        kl_new_tokens=4))
    monkeypatch.setitem(TASK_SIZES, "standard", TaskSizes(generate=2, max_new_tokens=6))
    task = evaluate_run(run)["task"]
    assert task["n_examples"] == RunDir(run).metrics()[0]["pairs"]  # every held-out pair, as training's evaluation
    assert {"preference_accuracy", "logp_margin", "loss", "token_f1"} <= set(task) and task["n_generated"] == 2
    # DPO's reward margin is beta times the change of the log-likelihood margin: the same movement.
    assert task["logp_margin"]["delta"] == pytest.approx(reward_margin / 0.1, rel=0.2)
    assert task["preference_accuracy"]["tuned"] >= task["preference_accuracy"]["base"]
    assert "prefers the chosen answer" in evaluate_run(run)["verdict"]


def test_orpo_raises_held_out_preference_accuracy(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows(4))
    out = tmp_path / "orpo"
    train(load_config(None, {"data": str(data), "model": str(tiny_model_dir), "output": str(out),
                             "objective": "orpo", "preference": {"orpo_lambda": 1.0}, "max_steps": 30,
                             "batch_size": 4, "lr": 1e-2, "eval_every": 10, **quiet()}), show_progress=False)
    evals = [r for r in RunDir(out).metrics() if "preference_accuracy" in r]
    assert evals[-1]["preference_accuracy"] > evals[0]["preference_accuracy"]
    assert evals[-1]["reward_margin"] > evals[0]["reward_margin"] and evals[-1]["val_loss"] < evals[0]["val_loss"]


@pytest.mark.numerics
def test_per_row_log_probs_match_log_softmax_with_gradients(tiny_model_dir, tiny_tokenizer):
    """The chunked head's per-row log-probabilities, and their gradients to every weight (the head
    included, as in full fine-tuning), equal the plain log-softmax's."""
    from transformers import AutoModelForCausalLM

    from tunesmith.model.attention import use_packed_attention

    ids = [1, 50, 60, 70, 80, 90, 2, 1, 55, 65, 75, 2]
    trained = [False] * 3 + [True] * 4 + [False] * 2 + [True] * 3
    example = PairExample(ids, _shift(ids, trained), "x:1", chosen_tokens=7)
    batch = pack_examples([example])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    use_packed_attention(model)
    weights = torch.tensor([0.3, -1.7])
    sums, counts = sequence_log_probs(model, batch, torch.device("cpu"))
    (sums * weights).sum().backward()
    chunked = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    head = model.get_output_embeddings()
    original = head.forward
    model.get_output_embeddings = lambda: None  # the plain path: full logits
    sums_plain, _ = sequence_log_probs(model, batch, torch.device("cpu"))
    (sums_plain * weights).sum().backward()
    assert head.forward == original and counts.tolist() == [4, 3]
    torch.testing.assert_close(sums, sums_plain, rtol=0, atol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(chunked[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_dpo_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_dir):
    from test_nothing_lost import losses, run_cli, wait_for_step

    data = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows(3))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": str(data), "model": str(tiny_model_dir), "output": str(tmp_path / "run"),
                                      "objective": "dpo", "max_steps": 30, "batch_size": 3, "grad_accum_steps": 2,
                                      "save_every": 1, "eval_every": 10, "lr": 1e-2, **quiet()}))
    train(load_config(config, {"output": str(tmp_path / "ref")}), show_progress=False)
    expected = losses(tmp_path / "ref")
    proc = run_cli([str(config), "--no-progress"])
    wait_for_step(tmp_path / "run", 4, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert max(losses(tmp_path / "run")) < 30, "the kill must land mid-run"
    assert train(load_config(config), resume="auto", show_progress=False).steps == 30
    assert losses(tmp_path / "run") == expected  # bit for bit, every step


# --- parity with TRL: the same weights, token ids and beta give the same losses and gradients

def trl_setup(tiny_model_dir, tmp_path):
    """TRL's DPOTrainer on four FAQ pairs with a LoRA whose B is not zero (so gradients differ from
    the base's), the rows as TRL tokenized them, and our packed copy of the same model."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer


    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": "I do not know."}]} for q, a in FAQ[:4]]
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=4, report_to=[],
                     use_cpu=True, bf16=False, max_steps=1, save_strategy="no")
    # A new adapter: TRL's reference is then the model with its adapters disabled, as ours
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=lora)
    ours = twin_of_trl_model(trainer.model, tiny_model_dir, lora)
    tokenized = [trainer.train_dataset[i] for i in range(4)]
    return trainer, ours, tokenized


def as_pair(row: dict) -> PairExample:
    """TRL's token ids as our pair: targets on the completion tokens only."""
    sides = []
    for completion in (row["chosen_ids"], row["rejected_ids"]):
        ids = row["prompt_ids"] + completion
        sides.append((ids, _shift(ids, [False] * len(row["prompt_ids"]) + [True] * len(completion))))
    (chosen, chosen_targets), (rejected, rejected_targets) = sides
    return PairExample(chosen + rejected, chosen_targets + rejected_targets, "trl", chosen_tokens=len(chosen))


def trainable_grads(model) -> dict[str, torch.Tensor]:
    grads = {n.replace("base_model.model.", ""): p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return grads


@pytest.mark.numerics
def test_dpo_loss_and_gradients_equal_trls(tiny_model_dir, tmp_path):
    pytest.importorskip("trl")
    from tunesmith.model.base import base_view
    from tunesmith.training.objectives import PairLoss

    trainer, ours, tokenized = trl_setup(tiny_model_dir, tmp_path)
    batch = trainer.data_collator(tokenized)
    expected = trainer.compute_loss(trainer.model, batch)
    expected.backward()
    expected_grads = trainable_grads(trainer.model)
    packed = pack_examples([as_pair(r) for r in tokenized])
    loss = PairLoss("dpo", PreferenceConfig(beta=0.1), lambda inner: base_view(inner), pairs=4, chosen_tokens=1)
    got = loss(ours, packed, torch.device("cpu"))
    got.backward()
    assert abs(float(got) - float(expected)) < 1e-5 and abs(float(got) - LN2) > 1e-3  # B != 0: not the trivial ln 2
    got_grads = trainable_grads(ours)
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=0, atol=1e-5, msg=name)


@pytest.mark.numerics
def test_orpo_loss_and_gradients_equal_trls_formula(tiny_model_dir, tmp_path):
    """TRL's ORPOTrainer functions (`get_batch_logps` with mean log-probabilities, `odds_ratio_loss`)
    on a padded batch, against ours on the packed one. TRL's cross-entropy term reads the prompt
    tokens too; ours, like every tunesmith loss, the answer's only (the ORPO paper's L_SFT), so the
    TRL side here gets the answer's labels."""
    pytest.importorskip("trl")
    from trl.experimental.orpo import ORPOTrainer

    from tunesmith.training.objectives import PairLoss

    trainer, ours, tokenized = trl_setup(tiny_model_dir, tmp_path)
    theirs = trainer.model
    sequences = [(r["prompt_ids"] + r[side], len(r["prompt_ids"])) for side in ("chosen_ids", "rejected_ids")
                 for r in tokenized]  # chosen rows first, as TRL concatenates
    width = max(len(s) for s, _ in sequences)
    input_ids = torch.tensor([s + [0] * (width - len(s)) for s, _ in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in sequences])
    labels = torch.tensor([[IGNORE] * n + s[n:] + [IGNORE] * (width - len(s)) for s, n in sequences])
    logits = theirs(input_ids=input_ids, attention_mask=mask).logits
    mean_log_probs = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    nll = torch.nn.CrossEntropyLoss()(logits[:4, :-1].reshape(-1, logits.shape[-1]), labels[:4, 1:].reshape(-1))
    odds = types.SimpleNamespace(beta=0.5, accelerator=types.SimpleNamespace(device="cpu"))
    ratio_losses = ORPOTrainer.odds_ratio_loss(odds, mean_log_probs[:4], mean_log_probs[4:])[0]
    expected = nll - ratio_losses.mean()
    expected.backward()
    expected_grads = trainable_grads(theirs)
    pairs = [as_pair(r) for r in tokenized]
    chosen_tokens = sum(sum(t != IGNORE for t in p.targets[: p.chosen_tokens]) for p in pairs)
    loss = PairLoss("orpo", PreferenceConfig(orpo_lambda=0.5), None, pairs=4, chosen_tokens=chosen_tokens)
    got = loss(ours, pack_examples(pairs), torch.device("cpu"))
    got.backward()
    assert abs(float(got) - float(expected)) < 1e-5
    got_grads = trainable_grads(ours)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=0, atol=1e-5, msg=name)
