"""OpenAI's grader routes on `tunesmith server`: `POST /v1/fine_tuning/alpha/graders/run` and `.../validate`,
in its request and response shapes, over the graders package; and the check every grader a request
brings passes (graders/run, graders/validate, a reinforcement job's `method.reinforcement.grader`).

Two rules keep a request from reaching past the grader: a python grader runs code on this machine,
so it is refused unless the server was started with --allow-python-graders (ServerSettings'
`allow_python_graders`); a score_model grader asks only the judge the server was started with
(--judge-url), since a grader object has no field for a URL (an unknown field does not parse).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import GraderError
from ..graders import Grader, GradeResult, GraderLimits, Judge, grade, graders_in, make_sample, parse_grader
from ..graders.spec import MultiGrader, PythonGrader, ScoreModel
from ..web.bodies import read_json
from ..web.errors import RequestError

PYTHON_FLAG = "--allow-python-graders"
ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
               "model_grader_refusal_error", "model_grader_server_error", "other_error", "python_grader_runtime_error",
               "python_grader_server_error", "sample_parse_error", "truncated_observation_error",
               "unresponsive_reward_error")
"""The boolean error flags of OpenAI's graders/run `metadata.errors` (openai-python's MetadataErrors)."""


def check_grader(spec: Any, allow_python: bool, param: str = "grader") -> Grader:
    """The request's grader parsed; a 400 naming every problem at its JSON path, or naming the flag
    when it holds a python grader (alone or inside a multi grader) and python graders are off."""
    if spec is None:
        raise RequestError(400, f"'{param}' is required: a grader object, e.g. {{\"type\": \"string_check\", ...}}",
                           param)
    try:
        grader = parse_grader(spec, param)
    except GraderError as exc:
        raise RequestError(400, str(exc), param, "invalid_grader") from None
    python = [g.name for g in graders_in(grader) if isinstance(g, PythonGrader)]
    if python and not allow_python:
        raise RequestError(400, f"python grader {python[0]!r} refused: python graders run code on the server's "
                                f"machine and are off unless the server is started with {PYTHON_FLAG}",
                           param, "python_graders_disabled")
    return grader


def grader_routes(allow_python: bool, judge: Judge | None, max_body_bytes: int,
                  limits: GraderLimits = GraderLimits()) -> list[Route]:
    """The two routes; `judge` is the server's own (--judge-url), None when it was started without one."""

    async def run(request: Request) -> Response:
        body = await read_json(request, max_body_bytes)
        grader = check_grader(body.get("grader"), allow_python)
        sample, item = body.get("model_sample"), body.get("item")
        if not isinstance(sample, str):
            raise RequestError(400, "'model_sample' is required: the answer's text, as a string", "model_sample")
        if item is not None and not isinstance(item, dict):
            raise RequestError(400, "'item' must be an object: the data row the grader's {{item.…}} reads", "item")
        started = time.monotonic()
        try:
            result = await run_in_threadpool(grade, grader, make_sample(sample), item or {}, judge, limits)
        except GraderError as exc:  # a package the grader needs is not installed on the server
            raise RequestError(500, str(exc), "grader") from None
        return JSONResponse(run_response(grader, body["grader"]["type"], result, time.monotonic() - started))

    async def validate(request: Request) -> Response:
        body = await read_json(request, max_body_bytes)
        check_grader(body.get("grader"), allow_python)
        return JSONResponse({"grader": body["grader"]})

    base = "/v1/fine_tuning/alpha/graders"
    return [Route(base + "/run", run, methods=["POST"]), Route(base + "/validate", validate, methods=["POST"])]


def run_response(grader: Grader, kind: str, result: GradeResult, seconds: float) -> dict[str, Any]:
    """OpenAI's GraderRunResponse: the reward, a multi grader's sub-rewards, and `metadata` with its
    error flags set from the errors of the grade (every error's text in `details` too, a tunesmith key)."""
    errors = {flag: False for flag in ERROR_FLAGS}
    errors.update(model_grader_server_error_details=None, python_grader_runtime_error_details=None,
                  python_grader_server_error_type=None)
    for error in result.errors:
        _flag(errors, grader, error)
    sub_rewards = dict(result.sub_scores)
    return {
        "reward": result.reward, "sub_rewards": sub_rewards, "model_grader_token_usage_per_model": {},
        "metadata": {"name": grader.name, "type": kind,
                     "errors": errors, "execution_time": seconds, "scores": sub_rewards or {grader.name: result.reward},
                     "token_usage": None, "sampled_model_name": None,
                     "details": list(result.details), "error_messages": list(result.errors),
                     "passed": result.passed},
    }


def _flag(errors: dict[str, Any], grader: Grader, error: str) -> None:
    """Set the OpenAI error flag that says what kind of failure `error` is (GradingSession's texts:
    a missing field starts with its {{path}}, a multi grader's with its sub-grader's key)."""
    if isinstance(grader, MultiGrader):
        key, _, rest = error.partition(": ")
        sub = dict(grader.graders).get(key)
        if sub is None:  # calculate_output failed on this sample (a division by 0, sqrt of a negative)
            errors["other_error"] = True
            return
        grader, error = sub, rest
    if error.startswith("{{"):
        errors["invalid_variable_error"] = True
    elif isinstance(grader, PythonGrader):
        errors["python_grader_runtime_error"] = True
        errors["python_grader_runtime_error_details"] = error
    elif isinstance(grader, ScoreModel) and "holds no score" in error:
        errors["model_grader_parse_error"] = True
    elif isinstance(grader, ScoreModel):
        errors["model_grader_server_error"] = True
        errors["model_grader_server_error_details"] = error
    else:
        errors["other_error"] = True


