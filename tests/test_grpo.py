"""GRPO (objective grpo, the core): advantages and the loss's pieces by hand, loss and gradients equal to
TRL's GRPOTrainer on the same samples, seeded sampling, and a learnable reward learned."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import twin_of_trl_model
from tunesmith.config import ConfigError
from tunesmith.grpo_config import GrpoConfig
from tunesmith.inference.decode import generate_batch
from tunesmith.inference.sample import Completions, TokenSampler, nucleus, sample_completions
from tunesmith.training.grpo import (
    Rollout,
    StepTotals,
    aggregate,
    completion_log_probs,
    grader_reward,
    group_advantages,
    grpo_loss,
    roll_out,
    step_seed,
    token_losses,
)

CPU = torch.device("cpu")


# --- the pure pieces, by hand

def test_advantages_are_the_reward_less_the_group_mean_optionally_over_the_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    centred = [0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(group_advantages(rewards, 4, "none"), torch.tensor(centred))
    # group std of (1, 0, 0, 0), Bessel-corrected: sqrt((0.5625 + 3 x 0.0625) / 3) = 0.5; a flat group stays 0
    scaled = [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0, 0, 0, 0]
    torch.testing.assert_close(group_advantages(rewards, 4, "group"), torch.tensor(scaled))
    batch_std = math.sqrt(sum((r - 1.125) ** 2 for r in rewards.tolist()) / 7)
    torch.testing.assert_close(group_advantages(rewards, 4, "batch"), torch.tensor(centred) / (batch_std + 1e-4))
    torch.testing.assert_close(group_advantages(rewards, 2, "none"), torch.tensor([0.5, -0.5, 0, 0, 0, 0, 0, 0]))


def test_the_ratio_is_clipped_only_where_it_would_pay():
    settings = GrpoConfig(epsilon=0.2, epsilon_high=0.28)
    ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.1]])
    advantages = torch.tensor([1.0])
    log_probs = torch.log(ratios)
    losses, kl, clipped = token_losses(log_probs, torch.zeros_like(log_probs), None, advantages, settings)
    torch.testing.assert_close(losses, torch.tensor([[-1.28, -1.28, -0.5, -0.5, -1.1]]))  # r > 1.28 capped; r < 0.8 not
    assert clipped.tolist() == [[True, True, False, False, False]] and not kl.any()
    losses, _, clipped = token_losses(log_probs, torch.zeros_like(log_probs), None, -advantages, settings)
    torch.testing.assert_close(losses, torch.tensor([[1.5, 1.5, 0.8, 0.8, 1.1]]))  # a bad token: r < 0.8 floored
    assert clipped.tolist() == [[False, False, True, True, False]]


def test_the_kl_is_k3_and_added_with_beta():
    settings = GrpoConfig(beta=0.5)
    log_probs, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]])
    losses, kl, _ = token_losses(log_probs, log_probs, ref, torch.tensor([0.0]), settings)
    expected = math.exp(-0.5) + 0.5 - 1  # exp(ref - p) - (ref - p) - 1
    torch.testing.assert_close(kl, torch.tensor([[expected, 0.0]]))
    torch.testing.assert_close(losses, 0.5 * kl)


@pytest.mark.parametrize("loss_type, expected", [
    ("dapo", (1 + 2 + 3 + 4) / 4),  # every token of the step weighs the same
    ("grpo", (1 / 1 + (2 + 3 + 4) / 3) / 2),  # each completion's mean, then their mean
    ("bnpo", (1 + 2 + 3 + 4) / 4),  # one piece: the same as dapo
    ("dr_grpo", (1 + 2 + 3 + 4) / (2 * 5)),  # completions x max_completion_tokens
])
def test_each_normalisation_on_completion_tokens_only(loss_type, expected):
    settings = GrpoConfig(loss_type=loss_type, max_completion_tokens=5)
    losses = torch.tensor([[1.0, 100.0, 100.0], [2.0, 3.0, 4.0]])  # the 100s are past the first completion's end
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert float(aggregate(losses, mask, settings, StepTotals(sequences=2, tokens=4))) == pytest.approx(expected)
    pieces = StepTotals(sequences=2, tokens=4, pieces=2)  # two micro-batches of one completion add up to the step
    split = sum(float(aggregate(losses[i : i + 1], mask[i : i + 1], settings, pieces)) for i in range(2))
    if loss_type != "bnpo":  # bnpo averages per piece (as TRL's, it changes with the micro-batch size)
        assert split == pytest.approx(expected)


def test_a_grader_is_a_reward_function():
    from tunesmith.graders import GradingSession, parse_grader

    grader = parse_grader({"type": "string_check", "name": "s", "input": "{{sample.output_text}}",
                           "reference": "{{item.answer}}", "operation": "ilike"})
    with GradingSession(grader) as session:
        reward = grader_reward(session)
        assert reward(["It is Paris.", "Rome", "paris!"], [{"answer": "Paris"}] * 3) == [1.0, 0.0, 1.0]


def test_settings_are_checked_when_built():
    assert GrpoConfig().clip_high == 0.2 and GrpoConfig(epsilon_high=0.28).clip_high == 0.28
    for bad in ({"group_size": 1}, {"temperature": 0}, {"top_p": 0}, {"loss_type": "ppo"}, {"scale_rewards": "std"},
                {"beta": -1}, {"num_iterations": 0}):
        with pytest.raises(ConfigError, match=f"grpo.{next(iter(bad))}"):
            GrpoConfig(**bad)


def test_the_variant_table_of_the_docs_gives_the_defaults():
    """docs/rft.md's table of the variant, tunesmith's column, against GrpoConfig's fields."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "rft.md").read_text(encoding="utf-8")
    table = doc.split("| setting | tunesmith |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    defaults, checked = GrpoConfig(), []
    for row in table:
        names_cell, value_cell = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = re.findall(r"`(\w+)`", names_cell)
        values = re.split(r"\s*[/,]\s*", value_cell.split(":")[0].strip("` "))
        for name, value in zip(names, values, strict=True):
            actual = defaults.clip_high if name == "epsilon_high" else getattr(defaults, name)
            if re.fullmatch(r"[\d.]+", value):
                assert float(actual) == float(value), name
            else:
                assert str(actual).lower() == {"on": "true", "off": "false"}.get(value, value), name
            checked.append(name)
    assert len(checked) == 11


def test_the_nucleus_keeps_the_most_likely_tokens_that_reach_top_p():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    torch.testing.assert_close(nucleus(probs, 0.7), torch.tensor([[0.0, 0.5, 0.0, 0.3]]))
    torch.testing.assert_close(nucleus(probs, 0.85), torch.tensor([[0.15, 0.5, 0.0, 0.3]]))
    torch.testing.assert_close(nucleus(probs, 0.1), torch.tensor([[0.0, 0.5, 0.0, 0.0]]))  # the top token always stays
    assert nucleus(probs, 1.0) is probs


# --- sampling through the batched decoder

@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.model.attention import use_packed_attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    use_packed_attention(model)
    return model


def prompts_of(tokenizer, questions):
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                          return_dict=False) for q in questions]


def test_sampling_is_a_function_of_the_seed_and_leaves_the_global_rng_alone(tiny, tiny_tokenizer):
    prompts = prompts_of(tiny_tokenizer, ["What is a permit?", "How long?"])
    eos, pad = [tiny_tokenizer.eos_token_id], tiny_tokenizer.pad_token_id
    sample = lambda seed, **kw: sample_completions(tiny, prompts, 4, 1.0, 1.0, 12, eos, pad, seed, **kw)  # noqa: E731
    torch.manual_seed(123)
    first = sample(7)
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the draws came from the sampler's own generator
    again = sample(7, batch_size=3)  # other batches of the decoder: the same samples still
    assert torch.equal(first.ids, again.ids) and torch.equal(first.mask, again.mask)
    assert not torch.equal(first.ids, sample(8).ids)
    assert first.ids.shape[0] == 8 and len({tuple(c) for c in first.lists()}) > 4  # a group's samples differ
    assert first.truncated.tolist() == [n == 12 and c[-1] not in eos for c, n in
                                        zip(first.lists(), first.mask.sum(1).tolist())]


def test_a_nucleus_of_one_token_samples_what_greedy_decodes(tiny, tiny_tokenizer):
    prompts = prompts_of(tiny_tokenizer, ["What is a permit?", "Who decides?", "Are you helpful?"])
    eos, pad = [tiny_tokenizer.eos_token_id], tiny_tokenizer.pad_token_id
    greedy = generate_batch(tiny, prompts, 10, eos, pad)
    sampled = sample_completions(tiny, prompts, 2, 1.0, 1e-6, 10, eos, pad, seed=0)
    assert sampled.lists() == [g for g in greedy for _ in range(2)]


def test_the_sampler_draws_from_the_tempered_distribution():
    scores = torch.tensor([[0.0, math.log(3.0)]]).expand(20_000, 2)  # p = (0.25, 0.75) at temperature 1
    rows = range(len(scores))
    picks = TokenSampler(1.0, 1.0, seed=0)(rows)(None, scores).argmax(1)
    assert abs(float(picks.float().mean()) - 0.75) < 0.02
    picks = TokenSampler(0.5, 1.0, seed=0)(rows)(None, scores).argmax(1)  # logits x 2: p = (0.1, 0.9)
    assert abs(float(picks.float().mean()) - 0.9) < 0.02


# --- parity with TRL's GRPOTrainer: the same weights, samples, rewards and settings

def trl_grpo(tiny_model_dir, tmp_path, temperature):
    """TRL's GRPOTrainer on the tiny model with a LoRA whose B is not zero (so the base, TRL's reference
    with adapters disabled, differs from the policy), and our packed copy of the same weights."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer


    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=8, num_generations=4,
                      temperature=temperature, max_completion_length=7, beta=0.04, report_to=[], use_cpu=True,
                      bf16=False, max_steps=1, save_strategy="no")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                          reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=args,
                          train_dataset=Dataset.from_list([{"prompt": "Hi"}] * 8), processing_class=tokenizer,
                          peft_config=lora)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); one micro-batch a step here
    ours = twin_of_trl_model(trainer.model, tiny_model_dir, lora)
    return trainer, ours


def fixed_samples(tokenizer) -> tuple[list[list[int]], Completions]:
    """Two prompts x 4 completions of lengths 1..7 (some ended by the end-of-turn token, some cut)."""
    prompts = prompts_of(tokenizer, ["What is a building permit?", "Who?"])
    generator = torch.Generator().manual_seed(1)
    lengths, eos = [3, 7, 1, 5, 7, 2, 6, 4], tokenizer.eos_token_id
    ids = torch.full((8, 7), tokenizer.pad_token_id)
    mask = torch.zeros((8, 7), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, len(tokenizer), (n,), generator=generator)
        if row % 2 == 0:
            ids[row, n - 1] = eos
        mask[row, :n] = 1
    return [p for p in prompts for _ in range(4)], Completions(ids, mask, torch.tensor([r % 2 == 1 for r in range(8)]))


def trl_inputs(prompts, completions, pad_id):
    width = max(len(p) for p in prompts)
    prompt_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])  # left-padded, as TRL
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completions.ids,
            "completion_mask": completions.mask, "num_items_in_batch": completions.mask.sum()}


def lora_grads(model) -> dict[str, torch.Tensor]:
    grads = {n.replace("base_model.model.", ""): p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return grads


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
def test_grpo_loss_and_gradients_equal_trls(tiny_model_dir, tiny_tokenizer, tmp_path, loss_type):
    """TRL's own `_compute_loss` on inputs built here (its sampling and rewards skipped): the same
    completions, advantages, sampling-policy log-probabilities moved off the current ones (so the
    clip acts), its reference log-probabilities (adapters disabled), temperature 0.7, beta 0.04."""
    pytest.importorskip("trl")
    from trl.trainer.utils import use_adapter

    from tunesmith.model.base import base_view

    trainer, ours = trl_grpo(tiny_model_dir, tmp_path, temperature=0.7)
    settings = GrpoConfig(group_size=4, temperature=0.7, max_completion_tokens=7, beta=0.04, epsilon=0.2,
                          epsilon_high=0.28, loss_type=loss_type, scale_rewards="group")
    trainer.loss_type, trainer.epsilon_high = loss_type, 0.28
    prompts, completions = fixed_samples(tiny_tokenizer)
    inputs = trl_inputs(prompts, completions, tiny_tokenizer.pad_token_id)
    advantages = group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.0, 2.0, 3.0, 2.0, 0.0]), 4, "group")
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        current = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention, 7)[0]
        with use_adapter(trainer.model, None):
            ref = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention, 7)[0]
    noise = torch.randn(current.shape, generator=torch.Generator().manual_seed(2)) * 0.3
    old = (current + noise) * completions.mask  # as if the weights had moved since sampling (num_iterations > 1)
    expected = trainer._compute_loss(trainer.model, {**inputs, "advantages": advantages,
                                                     "old_per_token_logps": old, "ref_per_token_logps": ref})
    expected.backward()
    expected_grads = lora_grads(trainer.model)

    with torch.no_grad(), base_view(ours)() as base:
        our_ref = completion_log_probs(base, prompts, completions, CPU, 0.7)
    torch.testing.assert_close(our_ref, ref, rtol=0, atol=1e-5)
    rollout = Rollout(tuple(prompts), completions, torch.zeros(8), advantages, old, our_ref)
    got, metrics = grpo_loss(ours, rollout, settings, CPU)
    got.backward()
    assert abs(float(got) - float(expected)) < 1e-5, (float(got), float(expected))
    assert metrics["clip_fraction"] > 0 and metrics["kl"] > 0  # both terms are in play, not trivially 0
    assert metrics["clip_fraction"] == pytest.approx(trainer._metrics["train"]["clip_ratio/region_mean"][-1], abs=1e-6)
    assert metrics["kl"] == pytest.approx(trainer._metrics["train"]["kl"][-1], abs=1e-6)
    got_grads = lora_grads(ours)
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=0, atol=1e-5, msg=name)
    assert max(float(g.abs().max()) for g in expected_grads.values()) > 1e-3  # gradients that a 1e-5 check can see


def test_a_resumed_run_samples_and_steps_as_the_uninterrupted_one(tiny_model_dir, tiny_tokenizer):
    """Weights and optimizer saved after step 1, loaded into fresh objects: steps 2 and 3 sample the
    same completions and give the same losses, bit for bit, as the run that went on."""
    from transformers import AutoModelForCausalLM

    settings = GrpoConfig(group_size=4, max_completion_tokens=6)
    prompts = prompts_of(tiny_tokenizer, ["What is a permit?", "Who decides?"])
    reward = lambda texts, rows: [t.count(" ") / max(1, len(t)) for t in texts]  # noqa: E731
    eos, pad = [tiny_tokenizer.eos_token_id], tiny_tokenizer.pad_token_id

    from tunesmith.model.attention import use_packed_attention

    def fresh():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        use_packed_attention(model)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2)

    def steps(model, optimizer, first, last):
        seen = []
        for step in range(first, last):
            rollout = roll_out(model, prompts, [{}, {}], reward, tiny_tokenizer, settings, eos, pad,
                               step_seed(1234, step), CPU)
            loss, _ = grpo_loss(model, rollout, settings, CPU)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seen.append((rollout.completions.ids.clone(), float(loss)))
        return seen

    model, optimizer = fresh()
    steps(model, optimizer, 0, 2)
    saved = ({k: v.clone() for k, v in model.state_dict().items()}, copy.deepcopy(optimizer.state_dict()))
    expected = steps(model, optimizer, 2, 4)
    model, optimizer = fresh()
    model.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])
    got = steps(model, optimizer, 2, 4)
    for (ids, loss), (expected_ids, expected_loss) in zip(got, expected):
        assert torch.equal(ids, expected_ids) and loss == expected_loss
    assert not torch.equal(got[0][0], got[1][0]) and step_seed(1234, 2) != step_seed(1234, 3)
