"""DPO speed and memory: tunesmith (objective dpo) against TRL's DPOTrainer + peft, on the same pairs.

Same model, same pairs (`--data`: a preference JSONL, default examples/voice-dpo/pairs.jsonl when
built, else the bundled FAQ's answers each preferred over another question's answer), LoRA r 16,
alpha 32, dropout 0 on all linear layers on both sides, beta 0.1, the same learning rate, batches of
`--pairs` pairs, the same number of optimizer steps, bf16 autocast where the CPU has it (both
sides' default precision otherwise). Each system runs in its own process, alternating round by
round; tokens/s counts real (non-padding) tokens of chosen and rejected sequences and leaves out
the first step; peak RSS is the process's. Medians over rounds, then tunesmith / TRL ratios. The
bf16 matmul peak is measured right before and right after each run, and the JSON names the host's
CPU and instruction set class (bench/machine.py). The last line printed is one JSON object for scripts.

    python bench/bench_dpo.py [--model smollm2-135m-instruct] [--steps 20] [--rounds 2] [--pairs 4]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import bracketed, describe, machine_record, peaks

ROOT = Path(__file__).resolve().parents[1]
FAQ = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"
SYSTEMS = ("tunesmith", "trl")
LR = 1e-4


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def default_pairs(folder: Path) -> Path:
    """The voice demo's pairs when built, else FAQ answers each preferred over another row's answer."""
    built = ROOT / "examples" / "voice-dpo" / "pairs.jsonl"
    if built.exists():
        return built
    from tunesmith.data import read_records

    records = read_records(FAQ)
    others = list(range(len(records)))
    random.Random(0).shuffle(others)
    rows = [{"prompt": r.messages[-2].content, "chosen": r.messages[-1].content,
             "rejected": records[j].messages[-1].content} for r, j in zip(records, others) if r is not records[j]]
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_tunesmith(model: str, data: Path, steps: int, pairs: int, out: Path) -> dict:
    from tunesmith import load_config, train
    from tunesmith.training.events import StepEvent

    marks: list[tuple[float, int]] = []
    config = load_config(None, {"data": str(data), "model": model, "output": str(out), "objective": "dpo",
                                "max_steps": steps, "batch_size": pairs, "lr": LR, "eval_every": steps,
                                "val_fraction": 0.05, "forgetting": {"measure_during_training": False,
                                                                     "kl_weight": 0}})
    train(config, show_progress=False, subscribers=[
        lambda e: marks.append((time.perf_counter(), e.tokens)) if isinstance(e, StepEvent) else None])
    return {"tokens_per_s": (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]), "peak_rss_gib": peak_rss_gib()}


def run_trl(model: str, data: Path, steps: int, pairs: int, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tunesmith.model.precision import compute_dtype
    from tunesmith.model.tokenizer import load_tokenizer, resolve_model_path

    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    tokenizer = load_tokenizer(model)
    path = resolve_model_path(model)
    bf16 = compute_dtype("auto") == torch.bfloat16
    tokens: list[int] = []
    marks: list[tuple[float, int]] = []

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), sum(tokens)))

    args = DPOConfig(output_dir=str(out), beta=0.1, per_device_train_batch_size=pairs, learning_rate=LR,
                     max_steps=steps, report_to=[], use_cpu=not torch.cuda.is_available(), bf16=bf16,
                     save_strategy="no", logging_steps=steps, lr_scheduler_type="cosine")
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[Marks()],
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    trainer.data_collator = counting
    trainer.train()
    return {"tokens_per_s": (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0]), "peak_rss_gib": peak_rss_gib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", help="a preference JSONL (prompt, chosen, rejected strings)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        run = run_tunesmith if args.system == "tunesmith" else run_trl
        print(json.dumps(run(args.model, Path(args.data), args.steps, args.pairs, Path(args.out))))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    data = Path(args.data) if args.data else default_pairs(folder)
    machine = machine_record()
    print(f"machine: {describe(machine)}", flush=True)
    results: dict[str, list[dict]] = {s: [] for s in SYSTEMS}
    for round_no in range(args.rounds):
        for system in SYSTEMS:
            out = folder / f"{system}-{round_no}"
            cmd = [sys.executable, __file__, "--system", system, "--model", args.model, "--data", str(data),
                   "--steps", str(args.steps), "--pairs", str(args.pairs), "--out", str(out)]
            results[system].append(bracketed(lambda: json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])))
            print(f"round {round_no + 1} {system}: {results[system][-1]}", flush=True)
    median = {s: {k: statistics.median(r[k] for r in runs) for k in ("tokens_per_s", "peak_rss_gib")} | peaks(runs)
              for s, runs in results.items()}
    print(f"\n{describe(machine)}\n{'system':<11}{'tok/s':>8}{'peak RSS GiB':>14}  "
          "bf16 peak GFLOP/s before / after each run")
    for s, m in median.items():
        print(f"{s:<11}{m['tokens_per_s']:>8.0f}{m['peak_rss_gib']:>14.2f}  "
              + ", ".join(f"{b:.0f} / {a:.0f}" for b, a in zip(m["peak_gflops_before"], m["peak_gflops_after"])))
    print(json.dumps({"machine": machine, "model": args.model, "steps": args.steps, "pairs_per_step": args.pairs,
                      **median,
                      "tokens_per_s_ratio": median["tunesmith"]["tokens_per_s"] / median["trl"]["tokens_per_s"],
                      "peak_rss_ratio": median["tunesmith"]["peak_rss_gib"] / median["trl"]["peak_rss_gib"]}))


if __name__ == "__main__":
    main()
