"""Serve's throughput: completion tokens/s with 4 concurrent clients against 1 (continuous batching,
inference/batching.py).

A real uvicorn on a free port serves the model (`--model`, default SmolLM2-135M-Instruct, as
loaded weights with no adapter) or a run (`--run`); each client sends `--requests` chat requests
one after another (FAQ questions, greedy, `--max-tokens`). Throughput counts the completion tokens
the server reports (usage) over the wall time of the whole load. The bf16 matmul peak is measured
right before and right after each load, and the JSON names the host's CPU and instruction set class
(bench/machine.py). The last line is one JSON object.

    python bench/bench_serve.py [--model PATH_OR_NAME | --run RUN] [--clients 4] [--requests 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time

from machine import bracketed, describe, machine_record

FAQ = "pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"


def load(args):
    import torch

    torch.set_num_threads(args.threads)
    if args.run:
        from tunesmith.run import load_run

        return load_run(args.run)
    from transformers import AutoModelForCausalLM

    from tunesmith.model.tokenizer import load_tokenizer, resolve_model_path

    path = resolve_model_path(args.model)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), load_tokenizer(path)


def questions(n: int) -> list[str]:
    from tunesmith.data import answered_questions, read_records

    return [q.messages[-1]["content"] for q in answered_questions(read_records(FAQ))[:n]]


def load_test(url: str, clients: int, asks: list[list[str]], max_tokens: int) -> dict:
    """`clients` concurrent clients, each sending its list of questions in turn."""
    import httpx

    async def client(http: httpx.AsyncClient, mine: list[str]) -> int:
        tokens = 0
        for q in mine:
            reply = await http.post(url + "/v1/chat/completions", json={
                "model": "bench", "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens})
            reply.raise_for_status()
            tokens += reply.json()["usage"]["completion_tokens"]
        return tokens

    async def everyone() -> list[int]:
        async with httpx.AsyncClient(timeout=3600) as http:
            return await asyncio.gather(*(client(http, asks[i]) for i in range(clients)))

    started = time.perf_counter()
    tokens = sum(asyncio.run(everyone()))
    seconds = time.perf_counter() - started
    return {"clients": clients, "completion_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2)}


def main() -> None:
    import uvicorn

    from tunesmith.serve.app import build_app
    from tunesmith.settings import ServeLimits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--run", help="Serve this run (its tuned model) instead of --model.")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=4, help="Requests per client.")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    model, tokenizer = load(args)
    limits = ServeLimits(max_batch=max(args.clients, 1), max_queued=args.clients)
    server = uvicorn.Server(uvicorn.Config(build_app(model, tokenizer, "bench", limits), host="127.0.0.1", port=0,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    pool = questions(args.clients * args.requests)
    asks = [pool[i::args.clients] for i in range(args.clients)]  # each client its own questions
    load_test(url, 1, [pool[:1]], 4)  # warm-up: first-call costs out of both figures
    one = bracketed(lambda: load_test(url, 1, [pool], args.max_tokens))  # the same questions, one client in turn
    many = bracketed(lambda: load_test(url, args.clients, asks, args.max_tokens))
    server.should_exit = True
    machine = machine_record()
    print(f"{describe(machine)}\n{'clients':>7}{'tok/s':>8}  bf16 peak GFLOP/s before / after")
    for measured in (one, many):
        print(f"{measured['clients']:>7}{measured['tokens_per_s']:>8.1f}  {measured['peak_gflops_before']:.0f} / "
              f"{measured['peak_gflops_after']:.0f}")
    result = {"bench": "serve", "machine": machine, "model": args.run or args.model, "max_tokens": args.max_tokens,
              "threads": args.threads, "one_client": one, "concurrent": many,
              "throughput_ratio": round(many["tokens_per_s"] / one["tokens_per_s"], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
