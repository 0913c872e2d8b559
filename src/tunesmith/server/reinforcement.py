"""OpenAI's reinforcement method on `POST /v1/fine_tuning/jobs`: `{"type": "reinforcement", "reinforcement":
{"grader": ..., "hyperparameters": {...}}}` checked in full (the grader parses, python graders only
with --allow-python-graders, every hyperparameter's type) and mapped onto `objective: grpo` with the
grader inline (jobs.py `train_overrides`). A python grader of a job created with the flag is refused
again when its job is validated or started by a server without it (`python_grader_refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..graders import graders_in
from ..graders.spec import ScoreModel
from ..web.errors import RequestError
from .graders import check_grader

REASONING_EFFORTS = ("default", "low", "medium", "high")


@dataclass(frozen=True)
class ReinforcementHyperparameters:
    """OpenAI's reinforcement hyperparameters (openai-python's ReinforcementHyperparameters) and what each
    means for tunesmith's GRPO; None is "auto": tunesmith's default for the field."""

    n_epochs: int | None = None
    """Passes over the training prompts: `epochs` (and no `max_steps`), as for supervised jobs."""
    batch_size: int | None = None
    """Prompts per optimizer step (`batch_size`); each prompt is answered by a group of samples."""
    learning_rate_multiplier: float | None = None
    """`lr` = multiplier × the config's lr, or tunesmith's default for the method, as for supervised jobs."""
    eval_interval: int | None = None
    """Optimizer steps between evaluations on the validation prompts: `eval_every`."""
    eval_samples: int | None = None
    """Accepted and ignored: an evaluation scores each validation prompt's greedy answer (the kept
    checkpoint's measure) and one sampled answer, and `train` has no setting for more samples."""
    compute_multiplier: float | None = None
    """Accepted and ignored: OpenAI's scale of the exploration compute has no documented formula, so it
    is not mapped onto the group size (answers per prompt), which the config sets."""
    reasoning_effort: str | None = None
    """Accepted and ignored: OpenAI's reasoning models' effort; the open models trained here have no such setting."""

    IGNORED = ("eval_samples", "compute_multiplier", "reasoning_effort")

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's shape: every field, "auto" (reasoning_effort "default") for those not given."""
        return {f.name: getattr(self, f.name) if getattr(self, f.name) is not None else
                ("default" if f.name == "reasoning_effort" else "auto") for f in fields(self)}


_INTEGERS = ("n_epochs", "batch_size", "eval_interval", "eval_samples")
_REALS = ("learning_rate_multiplier", "compute_multiplier")


def reinforcement_hyperparameters(raw: Any, at: str = "method.reinforcement.hyperparameters"
                                  ) -> ReinforcementHyperparameters:
    """The hyperparameters checked: positive integers or reals, or "auto"; reasoning_effort one of OpenAI's."""
    if raw is None:
        return ReinforcementHyperparameters()
    if not isinstance(raw, dict):
        raise RequestError(400, f"'{at}' must be an object", at)
    known = [f.name for f in fields(ReinforcementHyperparameters)]
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise RequestError(400, f"hyperparameter {key!r} is not supported by method 'reinforcement': use "
                                    f"{', '.join(known)}", f"{at}.{key}")
        if key == "reasoning_effort":
            if value not in REASONING_EFFORTS:
                raise RequestError(400, f"'reasoning_effort' must be one of {', '.join(REASONING_EFFORTS)}, got "
                                        f"{value!r}", f"{at}.{key}")
            checked[key] = None if value == "default" else value
            continue
        if value == "auto":
            continue
        real = key in _REALS
        kind_ok = isinstance(value, (int, float)) if real else isinstance(value, int)
        if isinstance(value, bool) or not kind_ok or value <= 0:
            raise RequestError(400, f"'{key}' must be \"auto\" or a positive {'number' if real else 'integer'}, got "
                                    f"{value!r}", f"{at}.{key}")
        checked[key] = float(value) if real else value
    return ReinforcementHyperparameters(**checked)


def reinforcement_grader(method: dict[str, Any], allow_python: bool, judge: bool = False) -> dict[str, Any]:
    """The reinforcement section's grader, checked as graders/validate checks it (a 400 at its path,
    or naming the flag for a python grader the server does not allow; a score_model grader where the
    server has no judge, `judge` False); the spec as sent."""
    section = method.get("reinforcement")
    if not isinstance(section, dict):
        raise RequestError(400, "'method.reinforcement' must be an object with a 'grader' (and 'hyperparameters')",
                           "method.reinforcement")
    unknown = sorted(set(section) - {"grader", "hyperparameters"})
    if unknown:
        raise RequestError(400, f"'method.reinforcement.{unknown[0]}' is not a field of the reinforcement method: "
                                "use grader, hyperparameters", f"method.reinforcement.{unknown[0]}")
    grader = check_grader(section.get("grader"), allow_python, "method.reinforcement.grader")
    judged = [g.name for g in graders_in(grader) if isinstance(g, ScoreModel)]
    if judged and not judge:  # train refuses it too (training/rft.py): every sample would score 0
        raise RequestError(400, f"score_model grader {judged[0]!r} needs a judge, and this server was started "
                                "without one: start it with --judge-url (an OpenAI-compatible /v1, e.g. `tunesmith "
                                "serve RUN`'s), or train with string_check, text_similarity, python or json_schema "
                                "graders", "method.reinforcement.grader", "invalid_grader")
    return section["grader"]


def python_grader_refusal(config: dict[str, Any], allow_python: bool) -> dict[str, Any] | None:
    """OpenAI's error object when a job's run config (`TrainConfig.to_dict()`) grades with a python grader
    and this server does not allow them; None otherwise. A job created by a server started with the
    flag may be validated or started by one started without it."""
    if config.get("objective") != "grpo" or allow_python:
        return None
    try:
        check_grader(config.get("grader"), allow_python, "method.reinforcement.grader")
    except RequestError as exc:
        return {"code": exc.code, "message": exc.message, "param": exc.param}
    return None
