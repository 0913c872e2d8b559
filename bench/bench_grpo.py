"""GRPO speed and memory: tunesmith (objective grpo) against TRL's GRPOTrainer + peft, on the same prompts.

Same model, same prompts and grader (the RFT demo's: examples/rft-demo, built when missing), LoRA r 16,
alpha 32, dropout 0 on all linear layers on both sides, `--prompts` prompts per optimizer step, each
answered `--group` times at temperature 1, at most `--tokens` completion tokens, the same learning
rate, the same number of optimizer steps, GRPO's settings matched (loss_type dapo, no std scaling,
beta 0, one iteration per batch of samples), bf16 autocast where the CPU has it. Each system runs in
its own process, alternating round by round. Per system, leaving out the first step:
- sampling tokens/s: completion tokens sampled / seconds in the sampler (tunesmith's
  `sample_completions`, TRL's `_generate`);
- training tokens/s: the same completion tokens / the rest of the steps' seconds (grading, the
  log-probabilities, backward, the optimizer);
- step tokens/s: completion tokens / the steps' seconds; peak RSS of the process.
Medians over rounds, then tunesmith / TRL ratios. The bf16 matmul peak is measured right before and
right after each run, and the JSON names the host's CPU and instruction set class (bench/machine.py).
The last line printed is one JSON object for scripts.

    python bench/bench_grpo.py [--model smollm2-135m-instruct] [--steps 4] [--rounds 2] [--prompts 2]
                               [--group 4] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import bracketed, describe, machine_record, peaks

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "rft-demo"
SYSTEMS = ("tunesmith", "trl")
FIGURES = ("sampling_tokens_per_s", "training_tokens_per_s", "step_tokens_per_s", "peak_rss_gib")
LR = 1e-4


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def demo_prompts() -> Path:
    """examples/rft-demo/prompts.jsonl, built from the bundled FAQ when missing."""
    path = DEMO / "prompts.jsonl"
    if not path.exists():
        subprocess.run([sys.executable, str(DEMO / "build.py")], check=True, capture_output=True)
    return path


def figures(steps: list[tuple[float, float]], sampled: list[tuple[float, float, int]]) -> dict:
    """From the steps' (start, end) and the sampler's (start, end, completion tokens) calls: the three
    rates over the steps after the first, and the peak RSS."""
    kept = steps[1:]
    inside = [s for s in sampled if any(a <= s[0] and s[1] <= b for a, b in kept)]
    tokens = sum(n for _, _, n in inside)
    sampling = sum(b - a for a, b, _ in inside)
    total = sum(b - a for a, b in kept)
    return {"sampling_tokens_per_s": tokens / sampling, "training_tokens_per_s": tokens / (total - sampling),
            "step_tokens_per_s": tokens / total, "peak_rss_gib": peak_rss_gib()}


def run_tunesmith(model: str, data: Path, args: argparse.Namespace, out: Path) -> dict:
    from tunesmith import load_config, train
    from tunesmith.training import grpo
    from tunesmith.training.events import StepEvent

    sampled: list[tuple[float, float, int]] = []
    real = grpo.sample_completions

    def timed(*a, **k):
        start = time.perf_counter()
        completions = real(*a, **k)
        sampled.append((start, time.perf_counter(), int(completions.mask.sum())))
        return completions

    grpo.sample_completions = timed
    marks = [time.perf_counter()]
    config = load_config(None, {
        "data": str(data), "model": model, "output": str(out), "objective": "grpo",
        "grader": str(DEMO / "grader.json"), "max_steps": args.steps, "batch_size": args.prompts, "lr": LR,
        "eval_every": 10**6, "val_fraction": 0.05, "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "grpo": {"group_size": args.group, "max_completion_tokens": args.tokens},
        "forgetting": {"measure_during_training": False, "kl_weight": 0}})
    train(config, show_progress=False, subscribers=[
        lambda e: marks.append(time.perf_counter()) if isinstance(e, StepEvent) else None])
    starts = [sampled[0][0]] + marks[1:-1]  # a step runs from the previous step's end; the first from its sampling
    return figures(list(zip(starts, marks[1:])), sampled)


def run_trl(model: str, data: Path, args: argparse.Namespace, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.graders import grade_rows, load_grader, make_sample
    from tunesmith.model.precision import compute_dtype
    from tunesmith.model.tokenizer import load_tokenizer, resolve_model_path

    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": r["messages"], "team": r["team"], "source": r["source"]} for r in rows])
    grader = load_grader(DEMO / "grader.json")

    def reward(completions, team, source, **_):
        items = [{"team": t, "source": s} for t, s in zip(team, source)]
        return [r.reward for r in grade_rows(grader, [(make_sample(c[0]["content"]), item)
                                                      for c, item in zip(completions, items)])]

    sampled: list[tuple[float, float, int]] = []
    steps: list[tuple[float, float]] = []

    class Marks(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            steps.append((time.perf_counter(), 0.0))

        def on_step_end(self, args, state, control, **kwargs):
            steps[-1] = (steps[-1][0], time.perf_counter())

    bf16 = compute_dtype("auto") == torch.bfloat16
    config = GRPOConfig(output_dir=str(out), num_generations=args.group, max_completion_length=args.tokens,
                        per_device_train_batch_size=args.prompts * args.group, learning_rate=LR,
                        max_steps=args.steps, report_to=[], use_cpu=not torch.cuda.is_available(), bf16=bf16,
                        save_strategy="no", logging_steps=args.steps, loss_type="dapo", scale_rewards="none",
                        beta=0.0, temperature=1.0, top_p=1.0, lr_scheduler_type="cosine")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(resolve_model_path(model), dtype=torch.float32),
                          reward_funcs=reward, args=config, train_dataset=dataset,
                          processing_class=load_tokenizer(model), callbacks=[Marks()],
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    real = trainer._generate

    def timed(prompts):
        start = time.perf_counter()
        result = real(prompts)
        sampled.append((start, time.perf_counter(), sum(len(ids) for ids in result[1])))  # completion_ids
        return result

    trainer._generate = timed
    trainer.train()
    # TRL samples inside the step (on its first micro-batch), so its steps' marks hold the sampling
    return figures(steps, sampled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per optimizer step")
    parser.add_argument("--group", type=int, default=4, help="completions sampled per prompt")
    parser.add_argument("--tokens", type=int, default=48, help="most completion tokens")
    parser.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        run = run_tunesmith if args.system == "tunesmith" else run_trl
        print(json.dumps(run(args.model, Path(args.data), args, Path(args.out))))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    data = demo_prompts()
    machine = machine_record()
    print(f"machine: {describe(machine)}", flush=True)
    results: dict[str, list[dict]] = {s: [] for s in SYSTEMS}
    for round_no in range(args.rounds):
        for system in SYSTEMS:
            cmd = [sys.executable, __file__, "--system", system, "--model", args.model, "--data", str(data),
                   "--steps", str(args.steps), "--prompts", str(args.prompts), "--group", str(args.group),
                   "--tokens", str(args.tokens), "--out", str(folder / f"{system}-{round_no}")]
            results[system].append(bracketed(lambda: json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])))
            print(f"round {round_no + 1} {system}: {results[system][-1]}", flush=True)
    median = {s: {k: statistics.median(r[k] for r in runs) for k in FIGURES} | peaks(runs)
              for s, runs in results.items()}
    print(f"\n{describe(machine)}\n{'system':<11}{'sampling tok/s':>16}{'training tok/s':>16}{'step tok/s':>12}"
          f"{'peak RSS GiB':>14}  bf16 peak GFLOP/s before / after each run")
    for s, m in median.items():
        print(f"{s:<11}{m['sampling_tokens_per_s']:>16.1f}{m['training_tokens_per_s']:>16.1f}"
              f"{m['step_tokens_per_s']:>12.1f}{m['peak_rss_gib']:>14.2f}  "
              + ", ".join(f"{b:.0f} / {a:.0f}" for b, a in zip(m["peak_gflops_before"], m["peak_gflops_after"])))
    ratios = {f"{k.removesuffix('_gib')}_ratio": median["tunesmith"][k] / median["trl"][k] for k in FIGURES}
    print(json.dumps({"machine": machine, "model": args.model, "steps": args.steps, "prompts_per_step": args.prompts,
                      "group_size": args.group, "max_completion_tokens": args.tokens, **median, **ratios}))


if __name__ == "__main__":
    main()
