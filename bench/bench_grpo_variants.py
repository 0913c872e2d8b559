"""GRPO's loss variants on one learnable reward: how far the reward rises in the same steps.

    python bench/bench_grpo_variants.py [--model DIR] [--steps 16] [--seeds 0 100 200]

Without --model, the tests' tiny random Llama (2 layers, 32 wide) is built in a temporary folder. The
loop is `grpo_step` by hand: two prompts, groups of 8, 8-token completions, plain AdamW (lr 1e-2) on all
weights, reward = the share of a completion's characters that are spaces. Each variant starts from
the same weights and samples with the same per-step seeds. Prints one JSON line per run, then a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

VARIANTS = {  # name: (loss_type, scale_rewards)
    "dapo, no std (tunesmith)": ("dapo", "none"),
    "dapo, group std (TRL 1.16)": ("dapo", "group"),
    "grpo, group std (paper)": ("grpo", "group"),
}


def run(model_dir: Path, loss_type: str, scale: str, steps: int, seed: int) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.grpo_config import GrpoConfig
    from tunesmith.model.attention import use_packed_attention
    from tunesmith.training.grpo import grpo_step

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    use_packed_attention(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    settings = GrpoConfig(max_completion_tokens=8, loss_type=loss_type, scale_rewards=scale)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
               for q in ("What is a permit?", "How long does it take?")]
    reward = lambda texts, rows: [t.count(" ") / max(1, len(t)) for t in texts]  # noqa: E731
    rewards = []
    for step in range(steps):
        loss, metrics = grpo_step(model, prompts, [{}, {}], reward, tokenizer, settings, [tokenizer.eos_token_id],
                                  tokenizer.pad_token_id, seed=seed + step, device=torch.device("cpu"))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        rewards.append(metrics["reward"])
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 100, 200])
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import build_model_dir

        model_dir = build_model_dir(Path(tempfile.mkdtemp()) / "tiny")
    table = {}
    for name, (loss_type, scale) in VARIANTS.items():
        gains = []
        for seed in args.seeds:
            rewards = run(model_dir, loss_type, scale, args.steps, seed)
            first, last = statistics.mean(rewards[:4]), statistics.mean(rewards[-4:])
            gains.append(last - first)
            print(json.dumps({"variant": name, "seed": seed, "first4": round(first, 4), "last4": round(last, 4),
                              "rewards": [round(r, 4) for r in rewards]}), flush=True)
        table[name] = gains
    print("| variant | reward gain, last 4 steps over first 4, per seed | mean |")
    print("|---|---|---|")
    for name, gains in table.items():
        print(f"| {name} | {', '.join(f'{g:+.3f}' for g in gains)} | {statistics.mean(gains):+.3f} |")


if __name__ == "__main__":
    main()
