"""Continuous batching in serve (inference/batching.py): requests decoded together get exactly the
tokens, texts, finish reasons and usage they get alone, each with its own stop strings, sampling
and stream; a client that leaves frees its row."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import httpx
import pytest
import torch

from test_serve import running
from tunesmith.data.render import encode_prompt, end_of_turn_ids
from tunesmith.inference.batching import BatchDecoder
from tunesmith.inference.streaming import Completion, complete
from tunesmith.run import load_run
from tunesmith.serve.app import build_app
from tunesmith.settings import Sampling, ServeLimits

MODEL_ID = "tiny-lora"
LIMITS = ServeLimits(max_tokens=48, default_max_tokens=16, max_queued=4, max_batch=4)
# Prompts of different lengths, so the batch's rows are left-padded by different amounts.
QUESTIONS = ["What is a building permit?", "How long?", "Who decides on permits in the municipality of Zaragoza, "
             "and how long does it take them?", "Can I build a shed?"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_run):
    return load_run(tiny_run)


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    app = build_app(model, tokenizer, MODEL_ID, LIMITS)
    with running(app) as (base_url, _):
        yield base_url, app.app.state.served


@pytest.fixture(scope="module")
def url(server):
    return server[0]


def prompts(tokenizer) -> list[list[int]]:
    return [encode_prompt([{"role": "user", "content": q}], tokenizer) for q in QUESTIONS]


def reference_tokens(model, tokenizer, prompt: list[int], max_new: int) -> list[int]:
    """transformers' own greedy generate on the prompt alone, cut after its end-of-turn token."""
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt]),
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long), do_sample=False,
                             max_new_tokens=max_new, eos_token_id=sorted(end_of_turn_ids(tokenizer)),
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, len(prompt):].tolist()


def decode_together(model, tokenizer, jobs: list[tuple[list[int], Sampling]], stagger: bool) -> list:
    """Run `jobs` through one decoder; with `stagger`, the second half joins once the first half has
    streamed a piece (admitted mid-flight, into a batch whose rows are longer than theirs)."""
    decoder = BatchDecoder(tokenizer, lambda _: contextlib.nullcontext(model), max_batch=4)
    done = [threading.Event() for _ in jobs]
    started = threading.Event()
    results: list = [None] * len(jobs)

    def emit_for(i: int):
        def emit(item):
            if isinstance(item, Completion):
                results[i] = item
                done[i].set()
            else:
                started.set()
        return emit

    half = len(jobs) // 2 if stagger else len(jobs)
    submitted = [decoder.submit("m", p, s, emit_for(i)) for i, (p, s) in enumerate(jobs[:half])]
    if stagger:
        assert started.wait(30)
        submitted += [decoder.submit("m", p, s, emit_for(half + i)) for i, (p, s) in enumerate(jobs[half:])]
    assert all(d.wait(60) for d in done)
    return [(job.tokens, result) for job, result in zip(submitted, results)]


@pytest.mark.parametrize("stagger", [False, True], ids=["together", "joining-mid-flight"])
def test_batched_tokens_equal_generate_alone(model_and_tokenizer, stagger):
    model, tokenizer = model_and_tokenizer
    limits = [24, 9, 17, 24]  # rows leave the batch at different steps
    jobs = [(p, Sampling(max_new_tokens=n)) for p, n in zip(prompts(tokenizer), limits)]
    batched = decode_together(model, tokenizer, jobs, stagger)
    for (prompt, sampling), (tokens, completion) in zip(jobs, batched):
        assert tokens == reference_tokens(model, tokenizer, prompt, sampling.max_new_tokens)
        assert completion.completion_tokens == len(tokens) and completion.prompt_tokens == len(prompt)
        assert completion.text == tokenizer.decode(tokens, skip_special_tokens=True)
        assert completion.finish_reason == ("stop" if tokens[-1] in end_of_turn_ids(tokenizer) else "length")


def test_batched_equals_the_old_stream_for_penalties_and_seeded_sampling(model_and_tokenizer):
    """The same processors as generate(): a seeded sampled answer and a penalised greedy one are the
    ones `complete` (transformers' generate behind a streamer) gives, while decoded beside others."""
    model, tokenizer = model_and_tokenizer
    samplings = [Sampling(max_new_tokens=20, temperature=0.9, top_p=0.8, seed=7),
                 Sampling(max_new_tokens=20, repetition_penalty=1.3, no_repeat_ngram_size=2),
                 Sampling(max_new_tokens=20), Sampling(max_new_tokens=20, temperature=1.5, seed=3)]
    jobs = list(zip(prompts(tokenizer), samplings))
    batched = decode_together(model, tokenizer, jobs, stagger=False)
    for (prompt, sampling), (_, completion) in zip(jobs, batched):
        assert completion == complete(model, tokenizer, prompt, sampling)


def chat(url: str, question: str, **extra) -> dict:
    return httpx.post(url + "/v1/chat/completions", json=body(question, **extra), timeout=60).json()


def concurrently(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(http.post(url + "/v1/chat/completions", json=b) for b in bodies))
    return asyncio.run(send())


def body(question: str, **extra) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": question}], "max_tokens": 24, **extra}


def test_four_concurrent_requests_answer_as_one_at_a_time(url):
    alone = [chat(url, q) for q in QUESTIONS]
    together = [r.json() for r in concurrently(url, [body(q) for q in QUESTIONS])]
    for a, t in zip(alone, together):
        assert t["choices"][0]["message"] == a["choices"][0]["message"]
        assert t["choices"][0]["finish_reason"] == a["choices"][0]["finish_reason"]
        assert t["usage"] == a["usage"]
    assert len({a["choices"][0]["message"]["content"] for a in alone}) > 1  # the prompts' answers differ


def test_concurrent_streams_reassemble_to_their_texts(url):
    alone = [chat(url, q)["choices"][0]["message"]["content"] for q in QUESTIONS]
    replies = concurrently(url, [body(q, stream=True) for q in QUESTIONS])
    for reply, text in zip(replies, alone):
        events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [httpx.Response(200, content=e).json() for e in events[:-1]]
        pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
        assert len([p for p in pieces if p]) > 1  # streamed in pieces, not at the end
        assert "".join(pieces).strip() == text


def test_a_stop_string_cuts_its_own_request_only(url):
    alone = [chat(url, q)["choices"][0]["message"]["content"] for q in QUESTIONS]
    # The stop string: the first two ASCII letters or digits of the tiny model's answer that first occur
    # past its start (what it says depends on the CPU's kernels; whitespace may not come at all).
    text = alone[0]
    starts = [i for i in range(2, len(text) - 1) if text[i:i + 2].isascii() and text[i:i + 2].isalnum()
              and text.index(text[i:i + 2]) == i]
    assert starts, text
    stop = text[starts[0]:starts[0] + 2]
    bodies = [body(q) for q in QUESTIONS]
    bodies[0]["stop"] = [stop]
    replies = [r.json() for r in concurrently(url, bodies)]
    cut = replies[0]["choices"][0]
    assert cut["message"]["content"] == alone[0][:alone[0].index(stop)].strip()
    assert cut["finish_reason"] == "stop"
    assert [r["choices"][0]["message"]["content"] for r in replies[1:]] == alone[1:]


def test_a_client_leaving_frees_its_row_and_spares_the_others(server):
    url, served = server
    others: list[dict] = []
    neighbour = threading.Thread(target=lambda: others.append(chat(url, QUESTIONS[1], max_tokens=40)))
    with httpx.stream("POST", url + "/v1/completions", json={"model": MODEL_ID, "prompt": "The quick brown fox",
                                                             "max_tokens": 48, "stream": True}) as r:
        neighbour.start()
        next(r.iter_lines())  # one event, then hang up mid-answer
    neighbour.join(60)
    deadline = time.time() + 20
    while served.gate.busy or served.gate.waiting or served.decoder.running:
        assert time.time() < deadline, "the cancelled request kept its place"
        time.sleep(0.05)
    alone = chat(url, QUESTIONS[1], max_tokens=40)
    assert others[0]["choices"][0]["message"] == alone["choices"][0]["message"]
    assert others[0]["usage"] == alone["usage"]
