"""The OpenAI wire format for `tunesmith serve`: request checks and response bodies (pure functions).

Every bad field becomes a `RequestError` with an HTTP status and OpenAI's error JSON, naming the
field (`param`) and the allowed range, so a client sees what to fix and the server never crashes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

from ..inference.streaming import Completion
from ..settings import Sampling, ServeLimits
from ..web.errors import RequestError

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# OpenAI finish reasons; a generation cut by a disconnect or shutdown reports a plain stop.
FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request: what to complete and how."""

    messages: tuple[dict[str, str], ...] | None
    """Chat messages (chat completions), or None."""
    prompt: str | None
    """Raw prompt text (completions), or None."""
    sampling: Sampling
    n: int
    stream: bool
    include_usage: bool
    model: str = ""
    """The model id the request asked for (one of those served)."""
    retrieval: bool = True
    """Chat: put the served model's retrieved passages into the prompt (a run's knowledge source);
    false (`"retrieval": false`, not an OpenAI field) answers the messages as sent, for a client that
    put its own passages in."""


def parse_chat_request(body: dict[str, Any], model_ids: str | Sequence[str], limits: ServeLimits) -> GenerationRequest:
    model = _check_model(body, model_ids)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
    messages = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(400, f"{where} must be an object with 'role' and 'content'", where)
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(400, f"{where}.role {role!r} is not supported: use one of "
                                    f"{', '.join(sorted(ROLES))} (tools are not supported)", f"{where}.role")
        messages.append({"role": ROLES[role], "content": _content(m.get("content"), f"{where}.content")})
    for key in ("tools", "functions"):
        if body.get(key):
            raise RequestError(400, f"'{key}' is not supported by this server", key)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    retrieval = body.get("retrieval", True)
    if not isinstance(retrieval, bool):
        raise RequestError(400, "'retrieval' must be true (the model's own passages) or false (none)", "retrieval")
    return replace(_request(body, limits, max_tokens, param, messages=tuple(messages)), model=model,
                   retrieval=retrieval)


def parse_completion_request(body: dict[str, Any], model_ids: str | Sequence[str],
                             limits: ServeLimits) -> GenerationRequest:
    model = _check_model(body, model_ids)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(400, "'prompt' must be a non-empty string (one prompt per request)", "prompt")
    if body.get("echo"):
        raise RequestError(400, "'echo' is not supported by this server", "echo")
    if body.get("suffix"):
        raise RequestError(400, "'suffix' is not supported by this server", "suffix")
    return replace(_request(body, limits, body.get("max_tokens"), "max_tokens", prompt=prompt), model=model)


def _request(body: dict[str, Any], limits: ServeLimits, max_tokens: Any, max_tokens_param: str,
             messages: tuple[dict[str, str], ...] | None = None, prompt: str | None = None) -> GenerationRequest:
    max_new = _integer(max_tokens, max_tokens_param, 1, limits.max_tokens, limits.default_max_tokens)
    temperature = _number(body.get("temperature"), "temperature", 0.0, 2.0, 0.0)
    top_p = _number(body.get("top_p"), "top_p", 0.0, 1.0, 1.0)
    if top_p == 0.0:
        raise RequestError(400, "'top_p' must be greater than 0", "top_p")
    n = _integer(body.get("n"), "n", 1, limits.max_n, 1)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(400, "'seed' must be an integer", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "'stream_options' must be an object", "stream_options")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body.get(key), key, -2.0, 2.0, 0.0) != 0.0:
            raise RequestError(400, f"'{key}' is not supported by this server; leave it at 0", key)
    if body.get("logprobs"):
        raise RequestError(400, "'logprobs' is not supported by this server", "logprobs")
    # Not OpenAI's fields, but transformers' (clients send them as extra body fields): the cure for
    # an answer that repeats one phrase to the token limit.
    repetition_penalty = _number(body.get("repetition_penalty"), "repetition_penalty", 0.5, 2.0, 1.0)
    no_repeat = _integer(body.get("no_repeat_ngram_size"), "no_repeat_ngram_size", 0, 32, 0)
    sampling = Sampling(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=seed,
                        stop=_stops(body.get("stop"), limits.max_stop), repetition_penalty=repetition_penalty,
                        no_repeat_ngram_size=no_repeat)
    return GenerationRequest(messages, prompt, sampling, n, stream, bool(options.get("include_usage", False)))


def _check_model(body: dict[str, Any], model_ids: str | Sequence[str]) -> str:
    """The model id asked for, one of `model_ids` (the tuned model first, then the base's name)."""
    ids = (model_ids,) if isinstance(model_ids, str) else tuple(model_ids)
    served = " or ".join(f"'{m}'" for m in ids)
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError(400, f"'model' is required: this server serves {served}", "model")
    if model not in ids:
        raise RequestError(404, f"The model '{model}' does not exist: this server serves {served}", "model",
                           "model_not_found")
    return model


def _content(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(400, f"{param} must be a string or a list of text parts", param)


def _integer(value: Any, param: str, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(400, f"'{param}' must be an integer from {low} to {high}, got {value!r}", param)
    return value


def _number(value: Any, param: str, low: float, high: float, default: float) -> float:
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(400, f"'{param}' must be a number from {low:g} to {high:g}, got {value!r}", param)
    return float(value)


def _stops(value: Any, max_stop: int) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > max_stop:
        raise RequestError(400, f"'stop' must be a non-empty string or a list of at most {max_stop} of them", "stop")
    return tuple(stops)


# --- responses ----------------------------------------------------------------------------------


def usage(completions: list[Completion]) -> dict[str, int]:
    prompt = completions[0].prompt_tokens if completions else 0
    generated = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def chat_response(rid: str, model_id: str, completions: list[Completion]) -> dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_id,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c.text.strip()},
                     "finish_reason": FINISH[c.finish_reason], "logprobs": None} for i, c in enumerate(completions)],
        "usage": usage(completions),
    }


def completion_response(rid: str, model_id: str, completions: list[Completion]) -> dict[str, Any]:
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id,
        "choices": [{"index": i, "text": c.text, "finish_reason": FINISH[c.finish_reason], "logprobs": None}
                    for i, c in enumerate(completions)],
        "usage": usage(completions),
    }


def chat_chunk(rid: str, model_id: str, index: int, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_id,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish and FINISH[finish], "logprobs": None}]}


def completion_chunk(rid: str, model_id: str, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id,
            "choices": [{"index": index, "text": text, "finish_reason": finish and FINISH[finish], "logprobs": None}]}


def usage_chunk(rid: str, model_id: str, kind: str, completions: list[Completion]) -> dict[str, Any]:
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model_id, "choices": [],
            "usage": usage(completions)}
