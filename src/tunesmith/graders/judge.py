"""score_model's judge: one chat-completions call to any OpenAI-compatible server (`tunesmith serve RUN`,
vLLM, llama.cpp's server, OpenAI itself), and the score read from its reply.

OpenAI asks its judge for `{"result": float, "steps": [{"description", "conclusion"}]}` through a
JSON-schema response format (guides/graders#score-model-grader-outputs); we ask the same. Servers
that ignore response_format (tunesmith serve does) answer in text: a bare number, or `result: N`,
is read as well. Anything else is not a score: OpenAI then gives 0, and so do we, with the reply
quoted in the sample's error.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from ..settings import JUDGE_KEY_ENV
from .spec import ScoreModel

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "grade", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["result", "steps"],
        "properties": {
            "result": {"type": "number"},
            "steps": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["description", "conclusion"],
                "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}}}},
        }}},
}
# OpenAI's grader docs spell the token limit max_completions_tokens; chat completions call it
# max_completion_tokens.
_PARAM_NAMES = {"max_completions_tokens": "max_completion_tokens"}
BUSY = (429, 503)
"""Statuses that mean: ask again later."""
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RESULT = re.compile(rf"\"?result\"?\s*[:=]\s*({_NUMBER})", re.IGNORECASE)


class JudgeError(RuntimeError):
    """The judge could not be asked, or did not answer with a score; str() says which for the sample."""


@dataclass(frozen=True)
class Judge:
    """Where score_model graders send their prompts."""

    base_url: str
    """The server's OpenAI base URL, ending in /v1 (e.g. http://127.0.0.1:8000/v1 for `tunesmith serve`)."""
    api_key: str | None = None
    """Sent as `Authorization: Bearer KEY`."""
    model: str | None = None
    """Replaces every score_model grader's `model` (tunesmith serve names its model after the run)."""


def configured_judge(url: str | None, model: str | None = None) -> Judge | None:
    """The judge a training config names (`grpo.judge_url`, `grpo.judge_model`), its key from the
    environment (TUNESMITH_JUDGE_API_KEY: a config is written out with the run, a key must not be);
    None without a URL."""
    return None if url is None else Judge(url, os.environ.get(JUDGE_KEY_ENV) or None, model)


def judge_body(grader: ScoreModel, messages: list[dict[str, str]], model: str | None = None) -> dict[str, Any]:
    """The chat-completions request for one sample."""
    params = {_PARAM_NAMES.get(k, k): v for k, v in grader.sampling_params.items()}
    return {"model": model or grader.model, "messages": messages, "response_format": RESPONSE_FORMAT, **params}


def ask_judge(client: Any, judge: Judge, body: dict[str, Any], retries: int = 0) -> str:
    """The judge's reply text; JudgeError on a transport failure or an error status. A judge busy
    (429, 503) is asked again up to `retries` times, after its Retry-After or 1, 2, 4 ... s."""
    import httpx

    headers = {"Authorization": f"Bearer {judge.api_key}"} if judge.api_key else {}
    url = judge.base_url.rstrip("/") + "/chat/completions"
    for attempt in range(retries + 1):
        try:
            response = client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge at {url} unreachable: {exc}") from None
        if response.status_code not in BUSY or attempt == retries:
            break
        time.sleep(_retry_after(response.headers.get("Retry-After"), attempt))
    if response.status_code != 200:
        raise JudgeError(f"judge at {url} answered {response.status_code}: {response.text[:300]}")
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"judge at {url} sent no chat completion: {response.text[:300]}") from None
    if not isinstance(content, str):
        raise JudgeError(f"judge at {url} sent no text content (refusal or tool call): {response.text[:300]}")
    return content


def _retry_after(header: str | None, attempt: int) -> float:
    try:
        return min(max(float(header), 0.0), 60.0) if header else float(2 ** attempt)
    except ValueError:  # an HTTP date: not worth parsing for a wait this short
        return float(2 ** attempt)


def read_score(reply: str, bounds: tuple[float, float]) -> tuple[float, list[str]]:
    """(score clipped into bounds, the judge's step conclusions); JudgeError when the reply holds none."""
    steps: list[str] = []
    score: float | None = None
    try:
        parsed = json.loads(reply)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and _is_number(parsed.get("result")):
        score = float(parsed["result"])
        steps = [str(s.get("conclusion", "")) for s in parsed.get("steps") or [] if isinstance(s, dict)]
    elif _is_number(parsed):
        score = float(parsed)  # a bare number
    elif (match := _RESULT.search(reply)) is not None:
        score = float(match.group(1))
    if score is None or not math.isfinite(score):
        raise JudgeError(f"the judge's reply holds no score (scored 0, as OpenAI does): {reply[:300]!r}")
    return min(max(score, bounds[0]), bounds[1]), steps


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
