"""`tunesmith plan`: counts match the real model and adapters; the estimate adds up."""

import json

from click.testing import CliRunner

from tunesmith import load_config
from tunesmith.cli import main
from tunesmith.commands.plan import count_parameters, plan_memory
from tunesmith.config import LoraConfig, TrainConfig
from tunesmith.model.loading import add_adapter, load_model


def test_counts_match_the_model_and_peft(tiny_model_dir):
    total, trainable, _, layers, hidden, _ = count_parameters(str(tiny_model_dir), "lora", 16)
    model = add_adapter(load_model(str(tiny_model_dir)), "lora", LoraConfig(r=16))
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    assert (layers, hidden) == (2, 32)
    assert count_parameters(str(tiny_model_dir), "full", 16)[1] == total


def test_estimate_adds_up_and_grows_with_the_batch(faq_file, tiny_model_dir):
    base = {"data": str(faq_file("chat")), "model": str(tiny_model_dir)}
    small = plan_memory(load_config(None, {**base, "batch_size": 2}), cuda=False)
    large = plan_memory(load_config(None, {**base, "batch_size": 8}), cuda=False)
    for plan in (small, large):
        parts = plan.runtime_gib + plan.weights_gib + plan.trainable_state_gib + plan.activations_gib + plan.logits_gib
        assert abs(plan.peak_gib - max(parts, plan.load_peak_gib)) < 1e-9
    assert large.max_micro_batch_tokens > small.max_micro_batch_tokens
    assert large.activations_gib > small.activations_gib
    checkpointed = plan_memory(load_config(None, {**base, "batch_size": 8, "gradient_checkpointing": True}), cuda=False)
    assert checkpointed.activations_gib < large.activations_gib / 10


def test_plan_command_prints_json(faq_file, tiny_model_dir):
    result = CliRunner().invoke(main, ["plan", str(faq_file("chat")), "--model", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    total, trainable = count_parameters(str(tiny_model_dir), TrainConfig.method, LoraConfig.r)[:2]
    assert (plan["parameters"], plan["trainable_parameters"]) == (total, trainable)  # as peft counts them (above)


def test_a_grpo_plan_counts_every_prompts_group_of_answers_in_one_pass(tmp_path, tiny_model_dir, tiny_tokenizer):
    """A GRPO micro-batch is its prompts, each with group_size answers of up to max_completion_tokens,
    in one forward pass (never split): reading its prompts as answers would find none to train."""
    from conftest import write_jsonl
    from test_rft_train import GRADER, rft_rows

    data = write_jsonl(tmp_path / "rft.jsonl", rft_rows())
    settings = {"data": str(data), "model": str(tiny_model_dir), "objective": "grpo", "grader": GRADER,
                "batch_size": 3, "val_fraction": 0.1, "grpo": {"group_size": 4, "max_completion_tokens": 10}}
    plan = plan_memory(load_config(None, settings), cuda=False)
    prompts = [len(tiny_tokenizer.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=True,
                                                       return_dict=False)) for r in rft_rows()]
    assert plan.max_forward_tokens == plan.max_micro_batch_tokens  # one pass per micro-batch
    assert 3 * 4 * (min(prompts) + 10) <= plan.max_forward_tokens <= 3 * 4 * (max(prompts) + 10)
    wider = plan_memory(load_config(None, {**settings, "grpo": {"group_size": 8, "max_completion_tokens": 10}}),
                        cuda=False)
    assert wider.max_forward_tokens == 2 * plan.max_forward_tokens  # the same prompts, twice the answers
    assert wider.logits_gib == 2 * plan.logits_gib
