"""Generation speed and memory: tunesmith's decode against transformers' `generate` and llama.cpp.

The default model (SmolLM2-135M-Instruct, its real weights), the same chat prompts (questions of
the bundled FAQ), greedy, the same number of new tokens for every system (no early stop), the same
threads. Systems:

- `tunesmith`: `inference.decode.generate_batch` one prompt at a time, as chat and serve decode a
  single stream (fp32 weights, as a run loads; one thread);
- `tunesmith_batched`: the same prompts decoded together (`--batch` of them), as eval and compare do;
- `transformers`: `model.generate` called as its documentation shows (fp32, torch's default threads);
- `tunesmith_bf16`: the single stream with bf16 weights (half the bytes read per token);
- `llama_cpp_f16`, `llama_cpp_q8_0`: llama-cpp-python on GGUF files written by tunesmith's exporter
  from the same weights (`pip install -e ".[llama-cpp]"`; skipped with a note when absent).

Each system runs in its own process, alternating round by round so a noisy machine hits them alike;
medians over rounds. Prompt processing (prefill) and decoding are timed apart: prefill tokens/s over
the prompts' tokens, decode tokens/s over the new tokens after the first. Peak RSS is the process's.
The bf16 matmul peak is measured right before and right after each run, and the JSON names the
host's CPU and instruction set class (bench/machine.py). The last line printed is one JSON object
with the ratios.

    python bench/bench_generate.py [--rounds 3] [--prompts 8] [--new-tokens 64] [--threads 1] [--systems ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import bracketed, describe, machine_record, peaks

SYSTEMS = ("tunesmith", "tunesmith_batched", "transformers", "tunesmith_bf16", "llama_cpp_f16", "llama_cpp_q8_0")
FAQ = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def prompts(n: int) -> list[list[int]]:
    """The first `n` FAQ questions as chat prompts of the default model."""
    from tunesmith.data import answered_questions, encode_prompt, read_records
    from tunesmith.model.tokenizer import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(resolve_model_path("smollm2-135m-instruct"))
    return [encode_prompt(q.messages, tokenizer) for q in answered_questions(read_records(FAQ))[:n]]


def hf_model(dtype: str):
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.model.tokenizer import resolve_model_path

    return AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m-instruct"),
                                                dtype=getattr(torch, dtype)).eval()


def run_torch(system: str, args) -> dict:
    """Prefill timed as a one-token generation; decode as the rest of a full one."""
    import torch

    from tunesmith.inference.decode import generate_batch

    model = hf_model("bfloat16" if system == "tunesmith_bf16" else "float32")
    ids = prompts(args.prompts)
    no_stop = [model.config.vocab_size]  # an id past the vocabulary: every system decodes exactly --new-tokens
    if system == "transformers":
        torch.set_num_threads(args.threads)

        def decode(batch: list[list[int]], new: int) -> list[list[int]]:
            with torch.no_grad():
                out = model.generate(input_ids=torch.tensor(batch), attention_mask=torch.ones(1, len(batch[0]),
                                     dtype=torch.long), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                     pad_token_id=0)
            return [out[0, len(batch[0]):].tolist()]
    else:
        width = args.batch if system == "tunesmith_batched" else 1

        def decode(batch: list[list[int]], new: int) -> list[list[int]]:
            return generate_batch(model, batch, new, no_stop, 0, batch_size=width)
    groups = [ids[i:i + args.batch] for i in range(0, len(ids), args.batch)] if system == "tunesmith_batched" \
        else [[p] for p in ids]
    decode(groups[0], 2)  # warm-up: first-call allocations
    prefill = decode_time = 0.0
    outputs: list[list[int]] = []
    for group in groups:
        start = time.perf_counter()
        decode(group, 1)
        first = time.perf_counter() - start
        start = time.perf_counter()
        outputs += decode(group, args.new_tokens)
        prefill += first
        decode_time += max(1e-9, time.perf_counter() - start - first)
    return {"prefill_tps": sum(map(len, ids)) / prefill,
            "decode_tps": len(ids) * (args.new_tokens - 1) / decode_time, "tokens": outputs}


def gguf_file(gguf_type: str, folder: Path) -> Path:
    """The default model's weights written as GGUF by tunesmith's exporter (once per bench run)."""
    from tunesmith.export.gguf import write_gguf
    from tunesmith.model.tokenizer import load_tokenizer, resolve_model_path

    path = folder / f"smollm2-135m-{gguf_type}.gguf"
    if not path.exists():
        write_gguf(hf_model("float32"), load_tokenizer(resolve_model_path("smollm2-135m-instruct")), path, gguf_type,
                   "smollm2-135m-instruct")
    return path


def run_llama_cpp(system: str, args) -> dict:
    """llama.cpp's own loop (`Llama.generate`, greedy): prefill as the time to the first token."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_file(system.removeprefix("llama_cpp_"), Path(args.folder))), n_ctx=512,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    ids = prompts(args.prompts)
    prefill = decode_time = 0.0
    outputs = []
    for k, prompt in enumerate([ids[0]] + ids):  # the first pass warms up
        start = time.perf_counter()
        stream = llm.generate(prompt, temp=0.0, reset=True)
        out = [next(stream)]
        first = time.perf_counter() - start
        start = time.perf_counter()
        out += [next(stream) for _ in range(args.new_tokens - 1)]
        if k:
            prefill += first
            decode_time += time.perf_counter() - start
            outputs.append(out)
    return {"prefill_tps": sum(map(len, ids)) / prefill,
            "decode_tps": len(ids) * (args.new_tokens - 1) / decode_time, "tokens": outputs}


def run_one(system: str, args) -> None:
    result = run_llama_cpp(system, args) if system.startswith("llama_cpp") else run_torch(system, args)
    print(json.dumps({"system": system, **result, "peak_rss_gib": peak_rss_gib()}))


def available(system: str) -> bool:
    if not system.startswith("llama_cpp"):
        return True
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def same_tokens(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of prompts whose greedy tokens agree in full."""
    return sum(x == y for x, y in zip(a, b)) / max(1, len(a))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="Prompts decoded together by tunesmith_batched.")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one system in this process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return run_one(args.one, args)
    systems = [s for s in args.systems.split(",") if s]
    missing = [s for s in systems if not available(s)]
    for system in missing:
        print(f"{system}: skipped, llama-cpp-python is not installed (pip install -e '.[llama-cpp]')", file=sys.stderr)
    systems = [s for s in systems if s not in missing]
    machine = machine_record()
    print(f"machine: {describe(machine)}", file=sys.stderr)
    results: dict[str, list[dict]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for system in systems:
                cmd = [sys.executable, __file__, "--one", system, "--folder", folder, "--prompts", str(args.prompts),
                       "--batch", str(args.batch), "--new-tokens", str(args.new_tokens), "--threads", str(args.threads)]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                results[system].append(bracketed(lambda: json.loads(subprocess.run(
                    cmd, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])))
                r = results[system][-1]
                print(f"round {round_ + 1} {system:18s} prefill {r['prefill_tps']:8.1f} tok/s  decode "
                      f"{r['decode_tps']:7.1f} tok/s  peak RSS {r['peak_rss_gib']:.2f} GiB  bf16 peak "
                      f"{r['peak_gflops_before']:.0f} / {r['peak_gflops_after']:.0f} GFLOP/s before / after "
                      f"({machine['isa']})", file=sys.stderr)
    summary = {s: {k: statistics.median(r[k] for r in rs) for k in ("prefill_tps", "decode_tps", "peak_rss_gib")}
               | peaks(rs) for s, rs in results.items()}
    reference = results[systems[0]][0]["tokens"]
    for s, rs in results.items():
        summary[s]["same_greedy_tokens_as_" + systems[0]] = same_tokens(rs[0]["tokens"], reference)
    ratios = {}
    for s in systems[1:]:
        ratios[f"{systems[0]}_vs_{s}_decode"] = summary[systems[0]]["decode_tps"] / summary[s]["decode_tps"]
    if "tunesmith_batched" in summary and "tunesmith" in summary:
        ratios["batched_vs_single_decode"] = (summary["tunesmith_batched"]["decode_tps"]
                                              / summary["tunesmith"]["decode_tps"])
    print(json.dumps({"bench": "generate", "machine": machine, "prompts": args.prompts, "new_tokens": args.new_tokens,
                      "threads": args.threads, "rounds": args.rounds, "systems": summary, "ratios": ratios}))


if __name__ == "__main__":
    main()
