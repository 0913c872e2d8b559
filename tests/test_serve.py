"""`tunesmith serve` against a real uvicorn on a free port: the official openai client for the happy
paths, raw HTTP for every refusal, and the queue driven deterministically through the server's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tunesmith.commands.generate import generate
from tunesmith.config import ConfigError
from tunesmith.data.render import encode_prompt
from tunesmith.run import load_run
from tunesmith.serve.app import build_app
from tunesmith.serve.protocol import parse_chat_request, parse_completion_request
from tunesmith.settings import Sampling, ServeLimits
from tunesmith.web.errors import RequestError
from tunesmith.web.guard import host_name

KEY = "sk-test-key"
MODEL_ID = "tiny-lora"
LIMITS = ServeLimits(max_body_bytes=20_000, max_tokens=48, default_max_tokens=12, max_n=2, max_queued=2)
MESSAGES = [{"role": "user", "content": "What is a building permit?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """uvicorn in a thread on its own loop; yields (base url, loop)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", loop
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_run):
    return load_run(tiny_run)


@pytest.fixture(scope="module")
def server(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    app = build_app(model, tokenizer, MODEL_ID, LIMITS, api_key=KEY)
    with running(app) as (url, loop):
        yield url, loop, app.app.state.served


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def chat_body(**extra) -> dict:
    return {"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 12, **extra}


# --- the openai client ---------------------------------------------------------------------------


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    health = httpx.get(server[0] + "/health")  # no key needed for liveness
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_chat_matches_generate(client, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    reply = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=12)
    # Same rendering, stop set and greedy decoding as `tunesmith generate`.
    assert reply.choices[0].message.content == generate(model, tokenizer, MESSAGES, max_new_tokens=12)
    assert reply.usage.prompt_tokens == len(encode_prompt(MESSAGES, tokenizer))
    assert 1 <= reply.usage.completion_tokens <= 12
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.model == MODEL_ID and reply.id.startswith("chatcmpl-")


def test_chat_streaming_equals_non_streaming(client):
    whole = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=12)
    chunks = list(client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=12, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_completions_plain_and_streamed(client):
    whole = client.completions.create(model=MODEL_ID, prompt="The quick brown fox", max_tokens=10)
    assert whole.object == "text_completion" and whole.usage.completion_tokens >= 1
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL_ID, prompt="The quick brown fox", max_tokens=10, stream=True))
    assert streamed == whole.choices[0].text


def test_n_choices_and_length_finish(client):
    reply = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=1, n=2,
                                           temperature=1.0, seed=3)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.completion_tokens == 2
    assert all(c.finish_reason in ("length", "stop") for c in reply.choices)


def test_stop_string_cuts_the_answer(client):
    free = client.completions.create(model=MODEL_ID, prompt="The quick brown fox", max_tokens=16).choices[0].text
    if len(free) < 4:
        pytest.skip("the tiny model stopped too early to test stop strings")
    stop = free[2:4]
    cut = client.completions.create(model=MODEL_ID, prompt="The quick brown fox", max_tokens=16, stop=[stop])
    assert cut.choices[0].text == free[: free.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


# --- refusals over raw HTTP ----------------------------------------------------------------------


def test_wrong_or_missing_key_is_401(server):
    url = server[0] + "/v1/chat/completions"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(url, json=chat_body(), headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_foreign_host_is_403(server):
    r = httpx.get(server[0] + "/v1/models", headers={**auth(), "Host": "evil.example:8000"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert httpx.get(server[0] + "/v1/models", headers={**auth(), "Host": "localhost:1234"}).status_code == 200


def test_oversized_body_is_413_declared_and_chunked(server):
    url = server[0] + "/v1/chat/completions"
    big = chat_body(messages=[{"role": "user", "content": "x" * 30_000}])
    assert httpx.post(url, json=big, headers=auth()).status_code == 413

    def chunks():  # no Content-Length: the server must count while receiving
        yield b'{"model": "tiny-lora", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(url, content=chunks(), headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


@pytest.mark.parametrize("body, status, param", [
    (chat_body(messages=[]), 400, "messages"),
    (chat_body(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages[0].role"),
    (chat_body(messages=[{"role": "user"}]), 400, "messages[0].content"),
    (chat_body(max_tokens=49), 400, "max_tokens"),
    (chat_body(max_tokens=0), 400, "max_tokens"),
    (chat_body(n=3), 400, "n"),
    (chat_body(temperature=-1), 400, "temperature"),
    (chat_body(top_p=1.5), 400, "top_p"),
    (chat_body(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (chat_body(stream="yes"), 400, "stream"),
    (chat_body(model="gpt-4"), 404, "model"),
    ({"messages": MESSAGES}, 400, "model"),
])
def test_bad_fields_get_openai_errors(server, body, status, param):
    r = httpx.post(server[0] + "/v1/chat/completions", json=body, headers=auth())
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"]


def test_bad_json_and_routes(server):
    url = server[0]
    assert httpx.post(url + "/v1/chat/completions", content=b"{not json", headers=auth()).status_code == 400
    assert httpx.post(url + "/v1/chat/completions", json=[1, 2], headers=auth()).status_code == 400
    empty_prompt = {"model": MODEL_ID, "prompt": ""}
    assert httpx.post(url + "/v1/completions", json=empty_prompt, headers=auth()).status_code == 400
    missing = httpx.get(url + "/v1/nothing", headers=auth())
    assert missing.status_code == 404 and "error" in missing.json()
    assert httpx.get(url + "/v1/chat/completions", headers=auth()).status_code == 405


def test_queue_full_is_429_and_queued_requests_finish(server):
    url, loop, served = server
    # Occupy every place in the batch as running generations would, on the server's own loop.
    for _ in range(LIMITS.max_batch):
        asyncio.run_coroutine_threadsafe(served.gate.enter(), loop).result(timeout=10)
    results: list[int] = []

    def post() -> None:
        results.append(httpx.post(url + "/v1/chat/completions", json=chat_body(), headers=auth(),
                                  timeout=60).status_code)

    waiting = [threading.Thread(target=post) for _ in range(LIMITS.max_queued)]
    try:
        for t in waiting:
            t.start()
        deadline = time.time() + 10
        while served.gate.waiting < LIMITS.max_queued:
            assert time.time() < deadline, "requests did not queue"
            time.sleep(0.01)
        over = httpx.post(url + "/v1/chat/completions", json=chat_body(), headers=auth())
        assert over.status_code == 429 and over.json()["error"]["code"] == "queue_full"
    finally:
        for _ in range(LIMITS.max_batch):
            loop.call_soon_threadsafe(served.gate.leave)
    for t in waiting:
        t.join(timeout=60)
    assert results == [200] * LIMITS.max_queued


def test_concurrent_requests_all_answered_alike(server):
    url = server[0]

    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as http:
            calls = [http.post(url + "/v1/chat/completions", json=chat_body(stream=i % 2 == 1), headers=auth())
                     for i in range(LIMITS.max_queued + 1)]
            return await asyncio.gather(*calls)

    replies = asyncio.run(many())
    assert [r.status_code for r in replies] == [200] * len(replies)
    plain = {r.json()["choices"][0]["message"]["content"] for r in replies
             if r.headers["content-type"].startswith("application/json")}
    assert len(plain) == 1  # decoded together, and no request disturbed another
    assert all(r.text.rstrip().endswith("data: [DONE]") for r in replies
               if r.headers["content-type"].startswith("text/event-stream"))


def test_client_leaving_a_stream_frees_the_model(server):
    url, _, served = server
    with httpx.stream("POST", url + "/v1/completions", headers=auth(),
                      json={"model": MODEL_ID, "prompt": "The quick brown fox", "max_tokens": 48, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # read one event, then hang up
    deadline = time.time() + 20
    while served.gate.waiting or served.gate.busy or served.decoder.running:
        assert time.time() < deadline, "the generation slot was not freed"
        time.sleep(0.05)
    assert httpx.post(url + "/v1/chat/completions", json=chat_body(), headers=auth()).status_code == 200


# --- pure parts ----------------------------------------------------------------------------------


def test_host_name_parsing():
    assert host_name("LocalHost:8000") == "localhost"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("evil.example") == "evil.example"


def test_request_parsing_maps_roles_and_defaults():
    parsed = parse_chat_request({"model": "m", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
        {"role": "user", "content": "hi"}]}, "m", ServeLimits())
    assert parsed.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"})
    assert parsed.sampling.max_new_tokens == ServeLimits().default_max_tokens and parsed.n == 1
    completion = parse_completion_request({"model": "m", "prompt": ["one"], "stop": "\n"}, "m", ServeLimits())
    assert completion.prompt == "one" and completion.sampling.stop == ("\n",)
    with pytest.raises(RequestError) as info:
        parse_chat_request({"model": "m", "messages": MESSAGES, "presence_penalty": 1}, "m", ServeLimits())
    assert info.value.status == 400


def test_serve_limits_are_checked():
    with pytest.raises(ConfigError, match="default_max_tokens"):
        ServeLimits(max_tokens=8, default_max_tokens=16)


def test_cli_serve_stops_cleanly_on_sigterm(tiny_run):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", str(tiny_run), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "server did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                           json={"model": tiny_run.name, "messages": MESSAGES, "max_tokens": 4})
        assert reply.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        log = proc.stdout.read()
        assert b"Shutting down" in log and b"Finished server process" in log and b"Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_base_model_is_served_under_its_own_name(model_and_tokenizer):
    """`model` picks the tuned model or the base (the same model with its adapters disabled); the
    run's system prompt goes into chat requests that bring none; repetition settings are honoured."""
    from openai import OpenAI

    from tunesmith.model.base import base_view

    model, tokenizer = model_and_tokenizer
    system = "Answer in one sentence."
    app = build_app(model, tokenizer, MODEL_ID, LIMITS, api_key=KEY, base=("tiny-base", base_view(model)),
                    system_prompt=system)
    with_system = [{"role": "system", "content": system}] + MESSAGES
    with model.disable_adapter():
        base_answer = generate(model, tokenizer, with_system, max_new_tokens=8)
    tuned_answer = generate(model, tokenizer, with_system, max_new_tokens=8)
    assert base_answer != tuned_answer
    with running(app) as (url, _):
        client = OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == [MODEL_ID, "tiny-base"]
        for name, expected in ((MODEL_ID, tuned_answer), ("tiny-base", base_answer), (MODEL_ID, tuned_answer)):
            reply = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=8)
            assert reply.model == name and reply.choices[0].message.content == expected
        no_repeats = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=24,
                                                    extra_body={"no_repeat_ngram_size": 1})
        plain = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=24)
        expected = generate(model, tokenizer, with_system, sampling=Sampling(max_new_tokens=24, no_repeat_ngram_size=1))
        assert no_repeats.choices[0].message.content == expected != plain.choices[0].message.content
        bad = httpx.post(url + "/v1/chat/completions", headers=auth(),
                         json={"model": MODEL_ID, "messages": MESSAGES, "repetition_penalty": 0})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "repetition_penalty"


def test_no_repeat_ngram_size_reaches_generate(model_and_tokenizer):
    """The sampling settings are transformers' own: with n-gram size 1 no token comes twice."""
    import torch

    model, tokenizer = model_and_tokenizer
    prompt = torch.tensor([encode_prompt(MESSAGES, tokenizer)])
    kwargs = Sampling(no_repeat_ngram_size=1).generate_kwargs()
    with torch.no_grad():
        out = model.generate(input_ids=prompt, max_new_tokens=24, pad_token_id=tokenizer.pad_token_id, **kwargs)
    answer = out[0, prompt.shape[1]:].tolist()
    with torch.no_grad():
        loose = model.generate(input_ids=prompt, max_new_tokens=24, pad_token_id=tokenizer.pad_token_id,
                               do_sample=False)[0, prompt.shape[1]:].tolist()
    assert len(set(answer)) == len(answer) and len(set(loose)) < len(loose)  # the tiny model repeats itself
    assert not set(answer) & set(prompt[0].tolist())  # n-grams of the prompt count too
