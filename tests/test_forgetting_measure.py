"""Base-vs-tuned measurement on the tiny model: identical models, perturbed models, the cache,
the budget, and the mitigations' building blocks."""

import copy
import math

import numpy as np
import pytest
import torch

from tunesmith.config import ForgettingBudget, LoraConfig
from tunesmith.forgetting import (
    ReplaySource,
    kl_to_base_loss,
    measure_probes,
    probe_metrics_row,
    replay_tokens,
    within_budget,
)
from tunesmith.forgetting.probes import ProbeSizes, TextItem, wiki_passages
from tunesmith.forgetting.scoring import target_logprobs, text_example
from tunesmith.model.loading import add_adapter, load_model
from tunesmith.training.batching import pack_examples

TINY = ProbeSizes("tiny", wiki_passages=4, wiki_max_tokens=48, analogies_per_section=1, trivia=4, kl_prompts=3,
                  kl_new_tokens=5)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A probe cache per test, so that cache hits and misses are this test's own."""
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def base(tiny_model_dir):
    return load_model(str(tiny_model_dir)).eval()


def sharpened(model, factor):
    """A copy whose final norm is scaled: logits x factor. The random model's predictions do not
    match text, so sharper (factor > 1) raises perplexity and flatter (factor -> 0) lowers it."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.norm.weight.mul_(factor)
    return other


def reference_perplexity(model, tokenizer, items, max_tokens):
    """Perplexity computed independently: transformers' own loss, one text at a time."""
    nll, count = 0.0, 0
    for item in items:
        ids = torch.tensor([text_example(item, tokenizer, max_tokens).input_ids])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        nll += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(nll / count)


def test_identical_models_give_zero_deltas_and_zero_kl(base, tiny_tokenizer, tiny_model_dir):
    result = measure_probes(base, tiny_tokenizer, str(tiny_model_dir), TINY, base_model=copy.deepcopy(base))
    assert set(result.probes) == {"wikipedia_ppl", "analogies", "trivia", "kl_drift"}
    for score in result.probes.values():
        assert score.delta == 0.0 and score.ci95 == (0.0, 0.0), score
    assert result.probes["kl_drift"].tuned == 0.0
    assert within_budget(ForgettingBudget(0, 0, 0), result)[0]


def test_fresh_lora_adapter_is_the_base(base, tiny_tokenizer, tiny_model_dir):
    tuned = add_adapter(base, "lora", LoraConfig(r=4))  # B = 0: the adapter is the identity
    result = measure_probes(tuned, tiny_tokenizer, str(tiny_model_dir), TINY)
    assert all(abs(s.delta) < 1e-6 for s in result.probes.values())


@pytest.mark.parametrize("factor, sign", [(4.0, 1), (0.05, -1)])
def test_perturbed_weights_move_perplexity_the_right_way(base, tiny_tokenizer, tiny_model_dir, factor, sign):
    tuned = sharpened(base, factor)
    result = measure_probes(tuned, tiny_tokenizer, str(tiny_model_dir), TINY, base_model=base)
    ppl = result.probes["wikipedia_ppl"]
    items = wiki_passages(TINY.wiki_passages, TINY.seed)
    assert ppl.base == pytest.approx(reference_perplexity(base, tiny_tokenizer, items, TINY.wiki_max_tokens), rel=1e-4)
    assert ppl.tuned == pytest.approx(reference_perplexity(tuned, tiny_tokenizer, items, TINY.wiki_max_tokens),
                                      rel=1e-4)
    assert np.sign(ppl.delta) == sign and np.sign(ppl.relative_delta) == sign
    assert ppl.ci95[0] <= ppl.delta <= ppl.ci95[1]
    assert result.probes["kl_drift"].tuned > 1e-4


def test_lora_base_view_disables_adapters(base, tiny_tokenizer, tiny_model_dir):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    torch.manual_seed(0)
    # init_lora_weights=False: B != 0, so the adapter changes the model (B = 0 would hide a broken view).
    tuned = get_peft_model(copy.deepcopy(base), PeftLoraConfig(r=4, lora_alpha=64, target_modules="all-linear",
                                                               init_lora_weights=False))
    result = measure_probes(tuned, tiny_tokenizer, str(tiny_model_dir), TINY)
    direct = measure_probes(tuned, tiny_tokenizer, str(tiny_model_dir), TINY, base_model=base, use_cache=False)
    assert result.probes["kl_drift"].tuned > 0
    assert result.probes["kl_drift"].tuned == pytest.approx(direct.probes["kl_drift"].tuned, rel=1e-4)
    assert result.probes["wikipedia_ppl"].base == pytest.approx(direct.probes["wikipedia_ppl"].base, rel=1e-5)


def test_base_results_are_cached_per_probe_set(base, tiny_tokenizer, tiny_model_dir, tmp_path):
    tuned = sharpened(base, 2.0)
    first = measure_probes(tuned, tiny_tokenizer, str(tiny_model_dir), TINY, base_model=base)
    again = measure_probes(tuned, tiny_tokenizer, str(tiny_model_dir), TINY, base_model=base)
    assert not first.base_cached and again.base_cached
    assert again.probes == first.probes
    assert len(list((tmp_path / "cache" / "probes").glob("*.json"))) == 1
    other = ProbeSizes(**{**TINY.__dict__, "trivia": 5})
    assert not measure_probes(tuned, tiny_tokenizer, str(tiny_model_dir), other, base_model=base).base_cached


def test_packed_scoring_matches_one_text_at_a_time(base, tiny_tokenizer):
    examples = [text_example(TextItem(t, "x"), tiny_tokenizer, 64)
                for t in ("The quick brown fox.", "What is a building permit? A decision.", "0123456789")]
    packed = target_logprobs(base, examples)
    for example, lp in zip(examples, packed):
        alone = target_logprobs(base, [example])[0]
        np.testing.assert_allclose(lp, alone, rtol=1e-4, atol=1e-5)


def test_within_budget_names_what_broke_it(base, tiny_tokenizer, tiny_model_dir):
    result = measure_probes(sharpened(base, 4.0), tiny_tokenizer, str(tiny_model_dir), TINY, base_model=base)
    ok, reason = within_budget(ForgettingBudget(max_ppl_increase=0.0, max_kl=100, max_accuracy_drop=1), result)
    assert not ok and reason.startswith("over budget") and "wikipedia_ppl" in reason and "kl_drift" not in reason
    ok, reason = within_budget(ForgettingBudget(max_ppl_increase=100, max_kl=0.0, max_accuracy_drop=1), result)
    assert not ok and "kl_drift" in reason
    assert within_budget(ForgettingBudget(100, 100, 1), result)[0]
    row = probe_metrics_row(5, result, ok)
    assert row["step"] == 5 and row["probes"]["wikipedia_ppl"]["relative_delta"] > 0


def test_replay_fraction_of_trained_tokens_and_resume(tiny_tokenizer):
    texts = ["The quick brown fox jumps over the lazy dog. " * 20, "How long does it take? " * 10]
    source = ReplaySource(tiny_tokenizer, max_seq_tokens=32, texts=texts)
    task = pack_examples([text_example(TextItem("What is a building permit? A decision.", "t"), tiny_tokenizer, 64)])
    mixed = source.extend(task, 0.25)
    general = mixed.n_trained - task.n_trained
    assert general == replay_tokens(task.n_trained, 0.25) == round(task.n_trained / 3)
    long = source.extend(pack_examples([text_example(TextItem(texts[0], "t"), tiny_tokenizer, 200)]), 0.5)
    assert long.n_trained == 2 * 199 and (long.position_ids[0, 200:] < 32).all()  # chunks restart positions
    resumed = ReplaySource(tiny_tokenizer, max_seq_tokens=32, texts=texts, position=source.position)
    assert torch.equal(resumed.batch(40).input_ids, source.batch(40).input_ids)
    assert source.extend(task, 0.0) is task


def test_kl_to_base_loss_is_zero_at_start_and_trains(base, tiny_tokenizer):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    source = ReplaySource(tiny_tokenizer, max_seq_tokens=32,
                          texts=["The quick brown fox jumps over the lazy dog. " * 8])
    batch = source.batch(48)
    fresh = add_adapter(copy.deepcopy(base), "lora", LoraConfig(r=4, dropout=0.0))
    assert float(kl_to_base_loss(fresh, batch).detach()) == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    moved = get_peft_model(copy.deepcopy(base), PeftLoraConfig(r=4, lora_alpha=64, target_modules="all-linear",
                                                               init_lora_weights=False))
    loss = kl_to_base_loss(moved, batch)
    assert float(loss.detach()) > 0
    loss.backward()
    grads = [p.grad for n, p in moved.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads)
    frozen = [p for n, p in moved.named_parameters() if "lora_" not in n]
    assert all(p.grad is None for p in frozen)
    # The same value from a frozen copy (full fine-tuning's route).
    assert float(kl_to_base_loss(moved, batch, base_model=base).detach()) == pytest.approx(float(loss), rel=1e-5)


def test_an_accuracy_drop_counts_only_when_its_interval_excludes_zero():
    from tunesmith.forgetting.measure import ForgettingResult, ProbeScore

    def result(delta, ci):
        score = ProbeScore("trivia", "choice", "accuracy", 0.625, 0.625 + delta, delta, ci, 8)
        return ForgettingResult({"trivia": score}, "train", "x", 0.0)

    budget = ForgettingBudget(max_accuracy_drop=0.10)
    assert within_budget(budget, result(-0.125, (-0.375, 0.0)))[0]  # one item lost: within the noise
    ok, reason = within_budget(budget, result(-0.25, (-0.5, -0.125)))
    assert not ok and "trivia accuracy -25.0 pt" in reason
    assert within_budget(budget, result(-0.05, (-0.08, -0.02)))[0]  # certain, but smaller than the limit
