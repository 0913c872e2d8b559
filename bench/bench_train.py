"""Training speed and memory: tunesmith against TRL's SFTTrainer + peft, side by side.

Same model shape (SmolLM2-135M's config, random init, seeded), same data (`--data faq`: the
bundled FAQ as chat, 90% train; `--data varlen`: the same questions with answers of log-normal
length, median 180 tokens), the same micro-batches (TRL reads the rows in tunesmith's
first-epoch order), tunesmith's LoRA defaults (r 16, alpha 32, dropout 0, all linear layers) on
both sides, AdamW, the same peak learning rate with warmup + cosine, micro-batches of 8 examples,
bf16 autocast, the same number of optimizer steps; and full fine-tuning the same way (`*_full`).
Systems run in separate processes, alternating round by round, so a noisy machine hits them
alike; tokens/s leaves out every system's first step, and is given over steps 2..N and over
the last third of the steps (a lead that fades over a run shows there); medians over rounds are
reported, then ratios. MFU counts the model's FLOPs per real token as Megatron-LM does (blocks, adapters, the
output layer where a loss is taken, causal attention per example; see `model_flops`) against the
bf16 matmul peak measured right before and right after each of that system's runs (their median;
bench/machine.py). The JSON names the host's CPU and instruction set class (AMX, AVX-512 BF16, ...)
and every run's peaks: figures from two hosts, or two hours of one AMX host, are not alike.
`tunesmith_compiled` (LoRA with `compile: true`) runs when named in --systems. tunesmith's processes
start as the `tunesmith` command starts (jemalloc preloaded when installed, `tunesmith.runtime`),
TRL's as Python does; `tunesmith_glibc`, when named, is tunesmith on the system's malloc. The last
line printed is one JSON object for scripts.

    python bench/bench_train.py [--steps 30] [--rounds 3] [--data varlen] [--systems tunesmith,trl_padding,...]
    python bench/bench_train.py --data varlen --epoch [--rounds 1]   # one full epoch instead of --steps
    python bench/bench_train.py --scaling      # tunesmith tokens/s and peak RSS vs sequence length and model size
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import bracketed, describe, machine_record, median_peak, peaks

FAQ = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"
SYSTEMS = ("tunesmith", "trl_padding", "trl_padding_free", "tunesmith_full", "trl_full")
EPOCH_SYSTEMS = ("tunesmith", "trl_padding", "trl_padding_free")  # --epoch: LoRA against TRL's two settings
OPTIONAL = ("tunesmith_compiled", "tunesmith_glibc")  # only when named in --systems: LoRA with `compile: true`;
# LoRA on the system's malloc, not the jemalloc that `tunesmith` preloads when installed
SCALING_BATCH_TOKENS = 4096  # tokens per micro-batch in the scaling table
SHAPES = {  # SmolLM2 configurations: (hidden, intermediate, layers, heads, kv heads)
    "135M": (576, 1536, 30, 9, 3),
    "360M": (960, 2560, 32, 15, 5),
}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def build_model(folder: Path, shape: str = "135M", seed: int = 0) -> Path:
    """A random-init model of the default model's shape, with the default model's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.model.tokenizer import load_tokenizer, resolve_model_path

    source = resolve_model_path("smollm2-135m-instruct")
    config = AutoConfig.from_pretrained(source)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.num_attention_heads, \
        config.num_key_value_heads = SHAPES[shape]
    config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    load_tokenizer("smollm2-135m-instruct").save_pretrained(folder)
    return folder


def split_data(folder: Path, kind: str = "faq") -> tuple[Path, Path]:
    """The bench data as chat rows, split 90/10 the same way for every system.

    `faq`: the bundled FAQ as it is (61-169 tokens, median 98: short and even, little to pad).
    `varlen`: the same questions with answers of support-ticket spread: each answer runs on with
    the following FAQ answers up to a length drawn from a log-normal distribution (median 180
    tokens, sigma 0.6, at most 1,000), the variable-length data the speed targets were set on,
    where padding micro-batches of 8 wastes about half of every batch.
    """
    import random

    from tunesmith.data import read_records

    records = read_records(FAQ)
    rows = [[{"role": m.role, "content": m.content} for m in r.messages] for r in records]
    if kind == "varlen":
        rng = random.Random(0)
        answers = [r[-1]["content"] for r in rows]
        for i, row in enumerate(rows):
            tokens = min(1000, rng.lognormvariate(math.log(180), 0.6))  # of the whole example
            target_chars = 3.6 * max(10, tokens - 30)  # the question and template take ~30; ~3.6 characters per token
            text, j = answers[i], i + 1
            while len(text) < target_chars:
                text, j = f"{text} {answers[j % len(answers)]}", j + 1
            row[-1] = {"role": "assistant", "content": text[: int(target_chars)].rsplit(" ", 1)[0]}
    cut = int(len(rows) * 0.9)
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    train.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows[:cut]))
    val.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows[cut:]))
    return train, val


def validation_loss(model, val: Path, tokenizer) -> float:
    """Mean loss per trained token with tunesmith's own evaluation, for every system alike."""
    import torch

    from tunesmith.data import read_records, tokenize_records
    from tunesmith.training.batching import eval_batches
    from tunesmith.training.loss import validation_loss

    examples, _ = tokenize_records(read_records(val), tokenizer, 1024)
    return validation_loss(model, eval_batches(examples, 8), torch.device("cpu"), torch.bfloat16)


def steady_rate(tokens: list[int], seconds: list[float]) -> float:
    """Tokens per second over steps 2..N (cumulative counts and times at each step's end): the first
    step (warm-up, and compilation where there is one) is left out, for every system alike."""
    return (tokens[-1] - tokens[0]) / (seconds[-1] - seconds[0])


def last_third_rate(tokens: list[int], seconds: list[float]) -> float:
    """Tokens per second over the last third of the steps: a lead that fades as a run goes on (a
    growing heap, longer batches later in the order) shows here and not in steps 2..N."""
    start = len(tokens) - max(1, len(tokens) // 3) - 1  # the end of the step before the last third
    return (tokens[-1] - tokens[start]) / (seconds[-1] - seconds[start])


def rates(tokens: list[int], seconds: list[float]) -> dict[str, float]:
    return {"tokens_per_s": steady_rate(tokens, seconds), "tokens_per_s_last_third": last_third_rate(tokens, seconds)}


def run_tunesmith(args) -> dict:
    from tunesmith import load_config, train
    from tunesmith.training.events import StepEvent

    out = Path(tempfile.mkdtemp()) / "run"
    method = "full" if args.worker == "tunesmith_full" else "lora"  # tunesmith_glibc differs in its process only
    config = load_config(None, {"data": str(args.train), "eval": str(args.val), "model": str(args.model),
                                "method": method, "lr": args.lr if method == "lora" else args.full_lr,
                                "output": str(out), "max_steps": args.steps, "batch_size": 8,
                                "eval_every": args.steps, "save_every": args.steps, "precision": "bf16",
                                "max_seq_tokens": args.max_seq_tokens, "batch_tokens": args.batch_tokens,
                                "compile": args.worker == "tunesmith_compiled",
                                # The training loop against TRL, like for like: no probes at evaluations, no
                                # KL-to-base term (TRL has none).
                                "forgetting": {"measure_during_training": False, "kl_weight": 0.0}})
    tokens, seconds = [], []

    def on_step(event) -> None:  # times come from the event: evaluations and checkpoints fall between steps
        if isinstance(event, StepEvent):
            tokens.append(event.tokens)
            seconds.append(event.tokens / event.tokens_per_s)  # training seconds since the first step began

    result = train(config, show_progress=False, subscribers=[on_step])
    return {**rates(tokens, seconds), "real_tokens": result.train_tokens,
            "first_step_s": seconds[0], "padding_fraction": 0.0,  # with compilation, when on
            "val_loss": result.final_val_loss, "peak_rss_gib": peak_rss_gib()}


def run_trl(args, padding_free: bool, full: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.config import LoraConfig as TunesmithLora
    from tunesmith.training.batching import epoch_order

    def pairs(path: Path) -> Dataset:
        """Rows in tunesmith's first-epoch order (seed 0), read in sequence: the same micro-batches."""
        rows = [json.loads(line)["messages"] for line in path.read_text().splitlines()]
        rows = [rows[i] for i in epoch_order(len(rows), 0, 0)]
        return Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    real, padded, durations = [], [], []  # per micro-batch in collation order; per step

    class Count(TrainerCallback):  # training time of each step only
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            durations.append(time.perf_counter() - self.t0)

    lora = TunesmithLora()  # tunesmith's defaults, so that both sides train the same adapters
    trainer = SFTTrainer(
        model=model, train_dataset=pairs(args.train), processing_class=tokenizer,
        peft_config=None if full else LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, task_type="CAUSAL_LM"),
        args=SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=args.steps, per_device_train_batch_size=8,
                       learning_rate=args.full_lr if full else args.lr, bf16=True,
                       # tunesmith's schedule: full lr from the first step (its one warmup step
                       # ends at full lr; HF's would start at 0), cosine down to 10% of the peak.
                       lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
                       warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                       use_cpu=True, logging_steps=1, save_strategy="no", report_to=[], seed=0,
                       padding_free=padding_free,
                       # TRL enforces max_length only by padding/packing; padding-free rows are all shorter anyway.
                       max_length=None if padding_free else args.max_seq_tokens, dataloader_num_workers=0),
        callbacks=[Count()],
    )
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        # With padding_free there is no padding; otherwise pad positions are those past each row's length.
        padded.append(batch["input_ids"].numel())
        real.append(sum(len(f["input_ids"]) for f in features))
        return batch

    trainer.data_collator = counting_collator
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    val = validation_loss(trainer.model, args.val, tokenizer)
    steps = len(durations)  # the trainer may collate a batch ahead: count only the batches trained
    measured = rates(list(itertools.accumulate(real[:steps])), list(itertools.accumulate(durations)))
    return {**measured, "real_tokens": sum(real[:steps]),
            "padding_fraction": 1 - sum(real[:steps]) / sum(padded[:steps]), "val_loss": val,
            "peak_rss_gib": peak_rss_gib()}


def worker(args) -> None:
    if args.worker.startswith("tunesmith"):
        result = run_tunesmith(args)
    else:
        result = run_trl(args, padding_free=args.worker == "trl_padding_free", full=args.worker == "trl_full")
    print("RESULT " + json.dumps(result), flush=True)


def worker_env(system: str) -> dict[str, str]:
    """Each system's process as its users start it: tunesmith's as the `tunesmith` command starts
    itself, with jemalloc preloaded when it is installed (tunesmith.runtime); `tunesmith_glibc` on
    the system's malloc (TUNESMITH_ALLOCATOR=system); TRL's as Python starts, on the system's malloc."""
    from tunesmith.runtime import allocator_env, preferred_allocator

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    library = preferred_allocator(env) if system.startswith("tunesmith") and system != "tunesmith_glibc" else None
    return allocator_env(env, library, ["train"]) if library else env  # as `tunesmith train` re-executes


def spawn(system: str, args, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--model", str(args.model), "--train", str(args.train),
           "--val", str(args.val), "--steps", str(args.steps), "--lr", str(args.lr), "--full-lr", str(args.full_lr),
           "--max-seq-tokens", str(args.max_seq_tokens),
           *(["--batch-tokens", str(args.batch_tokens)] if args.batch_tokens else []), *(extra or [])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(system))
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{system} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def compare(args) -> None:
    systems = args.systems.split(",")
    machine = machine_record()
    print(f"machine: {describe(machine)}", flush=True)
    results: dict[str, list[dict]] = {s: [] for s in systems}
    for round_no in range(args.rounds):
        for system in systems if round_no % 2 == 0 else reversed(systems):
            results[system].append(bracketed(lambda: spawn(system, args)))
            print(f"round {round_no + 1} {system}: {results[system][-1]}", flush=True)
    flops = {full: model_flops(args.model, args.train, args.steps, full) for full in (False, True)}
    med = {s: {k: statistics.median(r[k] for r in results[s]) for k in results[s][0]} for s in systems}
    peak = {s: median_peak(results[s]) for s in systems}  # each system's MFU against the peaks around its own runs
    print(f"\n{describe(machine)}; bf16 matmul peak GFLOP/s before and after each run, medians")
    print(f"{'system':<18}{'real tok/s':>12}{'last third':>12}{'peak RSS GiB':>14}{'padding':>9}{'val loss':>10}"
          f"{'MFU':>7}{'peak before':>13}{'peak after':>12}")
    for s in systems:
        flops_per_token = sum(flops[s.endswith("full")].values())  # model FLOPs per real token
        med[s]["mfu"] = med[s]["tokens_per_s"] * flops_per_token / (peak[s] * 1e9)
        print(f"{s:<18}{med[s]['tokens_per_s']:>12.0f}{med[s]['tokens_per_s_last_third']:>12.0f}"
              f"{med[s]['peak_rss_gib']:>14.2f}{med[s]['padding_fraction']:>9.1%}{med[s]['val_loss']:>10.4f}"
              f"{med[s]['mfu']:>7.1%}{med[s]['peak_gflops_before']:>13.0f}{med[s]['peak_gflops_after']:>12.0f}")
    summary = {"machine": machine, "tokens_per_s": {s: med[s]["tokens_per_s"] for s in systems},
               "tokens_per_s_last_third": {s: med[s]["tokens_per_s_last_third"] for s in systems},
               "rounds_by_system": results,
               "allocator": {s: worker_env(s).get("LD_PRELOAD") or "system malloc" for s in systems},
               "peak_rss_gib": {s: med[s]["peak_rss_gib"] for s in systems},
               "val_loss": {s: med[s]["val_loss"] for s in systems},
               "padding_fraction": {s: med[s]["padding_fraction"] for s in systems},
               "mfu": med.get("tunesmith", {}).get("mfu"), "mfu_by_system": {s: med[s]["mfu"] for s in systems},
               # the bf16 matmul peak before and after each run, in run order, and the median each MFU used
               "peak_gflops_by_system": {s: {**peaks(results[s]), "median": peak[s]} for s in systems},
               "model_flops_per_token": {"lora": flops[False], "full": flops[True]},
               "mfu_blocks_only": med["tunesmith"]["tokens_per_s"] * flops[False]["blocks"] / (peak["tunesmith"] * 1e9)
               if "tunesmith" in med else None,
               "steps": args.steps, "rounds": args.rounds, "epoch": args.epoch}

    def ratio(ours: str, theirs: str, key: str) -> float | None:
        return med[ours][key] / med[theirs][key] if ours in med and theirs in med else None

    summary.update({
        "ratio_vs_trl_default": ratio("tunesmith", "trl_padding", "tokens_per_s"),
        "ratio_vs_trl_best": ratio("tunesmith", "trl_padding_free", "tokens_per_s"),
        "last_third_ratio_vs_trl_default": ratio("tunesmith", "trl_padding", "tokens_per_s_last_third"),
        "last_third_ratio_vs_trl_best": ratio("tunesmith", "trl_padding_free", "tokens_per_s_last_third"),
        "peak_rss_ratio": ratio("tunesmith", "trl_padding", "peak_rss_gib"),
        "peak_rss_ratio_vs_trl_best": ratio("tunesmith", "trl_padding_free", "peak_rss_gib"),
        "val_loss_ratio_vs_trl_default": ratio("tunesmith", "trl_padding", "val_loss"),
        "full_ratio_vs_trl_default": ratio("tunesmith_full", "trl_full", "tokens_per_s"),
        "compiled_ratio_vs_eager": ratio("tunesmith_compiled", "tunesmith", "tokens_per_s"),
    })
    print(json.dumps(summary))


def body_params(model: Path) -> int:
    """Weights of the transformer blocks (embeddings and LM head excluded)."""
    config = json.loads((Path(model) / "config.json").read_text())
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * (config.get("head_dim") or h // config["num_attention_heads"])
    return layers * (2 * h * h + 2 * h * kv + 3 * h * inter)


def model_flops(model: Path, train: Path, steps: int, full: bool) -> dict[str, float]:
    """Model FLOPs per real token of the measured steps (2..N, tunesmith's micro-batches), by part.

    Counted as Megatron-LM counts (Narayanan et al., 2021), the matmuls the model's math needs,
    whatever an implementation adds or skips: the blocks' weights (forward 2, gradient to the
    activations 2, and 2 more for the weights' own gradients when they are trained), the LoRA
    adapters (trained: 6 per weight), the output layer on the positions that carry a loss (untrained
    prompt logits are not part of the loss), and causal attention over each example's own tokens
    (scores and weighted sum, forward 4 and backward 8 per query-key pair and width). Embedding
    lookups, norms and activations are left out. The same count serves every system: it is the
    work per real token, so MFU ratios are tokens/s ratios.
    """
    from tunesmith.config import LoraConfig
    from tunesmith.data import read_records, tokenize_records
    from tunesmith.model.tokenizer import load_tokenizer
    from tunesmith.training.batching import micro_batches

    config = json.loads((Path(model) / "config.json").read_text())
    h, inter, layers, vocab = (config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                   "vocab_size"))
    head_dim = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    r = LoraConfig().r  # tunesmith's default rank, used on both sides (run_trl reads it too)
    lora = layers * r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h))
    examples, _ = tokenize_records(read_records(train), load_tokenizer(str(model)), 1024)
    batches = [b for _, _, b in itertools.islice(micro_batches(examples, 8, 0), steps)][1:]
    tokens = sum(b.n_tokens for b in batches)
    trained = sum(b.n_trained for b in batches)
    pairs = sum(int(n) * (int(n) + 1) // 2 for b in batches for n in b.bounds.diff())  # causal query-key pairs
    weight = 6 if full else 4
    parts = {"blocks": weight * body_params(model) * tokens, "lora": 0 if full else 6 * lora * tokens,
             "head": weight * vocab * h * trained, "attention": 12 * layers * q * pairs}
    return {k: v / tokens for k, v in parts.items()}


def scaling(args) -> None:
    """tunesmith alone: real tokens/s and peak RSS vs sequence length (long raw-text rows) and model size."""
    from tunesmith.data import read_records

    text = " ".join(m.content for r in read_records(FAQ) for m in r.messages)
    machine = machine_record()
    print(f"machine: {describe(machine)}", flush=True)
    rows = []
    for shape in ("135M", "360M"):
        model = build_model(Path(tempfile.mkdtemp()), shape)
        for length in (256, 1024, 4096) if shape == "135M" else (1024,):
            folder = Path(tempfile.mkdtemp())
            train, val = folder / "train.jsonl", folder / "val.jsonl"
            chunk = length * 4  # ~4 characters per token: each row fills about one sequence
            docs = [{"text": text[i:i + chunk]} for i in range(0, min(len(text), chunk * 64), chunk)]
            train.write_text("".join(json.dumps(d) + "\n" for d in docs[:-4]))
            val.write_text("".join(json.dumps(d) + "\n" for d in docs[-4:]))
            sub = argparse.Namespace(**{**vars(args), "model": model, "train": train, "val": val,
                                        "max_seq_tokens": length, "steps": max(3, args.steps // 4),
                                        # The same tokens per micro-batch at every length, so only
                                        # the sequence length changes (8 rows of 4096 would not fit).
                                        "batch_tokens": max(length, SCALING_BATCH_TOKENS)})
            result = bracketed(lambda: spawn("tunesmith", sub))
            rows.append({"shape": shape, "max_seq_tokens": length, **result})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{describe(machine)}; bf16 matmul peak GFLOP/s before and after each run")
    print(f"{'shape':<7}{'seq':>6}{'tok/s':>8}{'peak RSS GiB':>14}{'peak before':>13}{'peak after':>12}")
    for r in rows:
        print(f"{r['shape']:<7}{r['max_seq_tokens']:>6}{r['tokens_per_s']:>8.0f}{r['peak_rss_gib']:>14.2f}"
              f"{r['peak_gflops_before']:>13.0f}{r['peak_gflops_after']:>12.0f}")
    print(json.dumps({"machine": machine, "scaling": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3, help="LoRA peak learning rate (tunesmith's default)")
    parser.add_argument("--full-lr", type=float, default=1e-4, help="full fine-tuning peak learning rate")
    parser.add_argument("--max-seq-tokens", type=int, default=1024)
    parser.add_argument("--batch-tokens", type=int, default=None, help="tunesmith: tokens per micro-batch")
    parser.add_argument("--systems")
    parser.add_argument("--data", choices=("faq", "varlen"), default="faq",
                        help="faq: the bundled FAQ as it is; varlen: answers of log-normal length, median 180 tokens")
    parser.add_argument("--epoch", action="store_true",
                        help="one full epoch of the training rows (micro-batches of 8) instead of --steps; "
                             f"systems {','.join(EPOCH_SYSTEMS)} unless --systems names others")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--train", type=Path)
    parser.add_argument("--val", type=Path)
    parser.add_argument("--worker", choices=SYSTEMS + OPTIONAL)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    folder = Path(tempfile.mkdtemp(prefix="tunesmith-bench-"))
    if args.scaling:
        return scaling(args)
    args.model = args.model or build_model(folder / "model")
    args.train, args.val = split_data(folder, args.data)
    if args.epoch:  # every training row once, in micro-batches of 8
        args.steps = math.ceil(len(args.train.read_text().splitlines()) / 8)
    args.systems = args.systems or ",".join(EPOCH_SYSTEMS if args.epoch else SYSTEMS)
    compare(args)


if __name__ == "__main__":
    main()
