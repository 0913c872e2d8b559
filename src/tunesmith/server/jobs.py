"""OpenAI's fine-tuning job on tunesmith: the create request checked (pure), its `method` and
`hyperparameters` mapped onto a TrainConfig, and the job, event and checkpoint objects."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig, default_lr, load_config
from ..graders import Judge
from ..web.errors import RequestError
from ..web.ids import id_pattern
from .reinforcement import ReinforcementHyperparameters, reinforcement_grader, reinforcement_hyperparameters

JOB_ID = id_pattern("ftjob")
SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
METHODS = {"supervised": HYPERPARAMETERS, "dpo": (*HYPERPARAMETERS, "beta"),
           "reinforcement": tuple(f.name for f in dataclasses.fields(ReinforcementHyperparameters))}
"""`method.type` -> the hyperparameters it takes; dpo trains `objective: dpo` on preference rows
(OpenAI's DPO format: input.messages, preferred_output, non_preferred_output) with its `beta`;
reinforcement trains `objective: grpo` on RFT prompts with its grader (server/reinforcement.py says
which of its hyperparameters are honoured)."""


@dataclass(frozen=True)
class JobRequest:
    """A checked `POST /v1/fine_tuning/jobs` body."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    method: str = "supervised"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """The method's hyperparameters that are not "auto" (n_epochs, batch_size, learning_rate_multiplier, ...)."""
    grader: dict[str, Any] | None = None
    """Method reinforcement: the grader as sent (checked); None for the others."""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "training_file": self.training_file, "validation_file": self.validation_file,
                "suffix": self.suffix, "seed": self.seed, "method": self.method,
                "hyperparameters": self.hyperparameters, "grader": self.grader}


def parse_job_request(body: dict[str, Any], model_ids: tuple[str, ...], allow_python: bool = False,
                      judge: bool = False) -> JobRequest:
    """The body's fields checked; `model` must be one this server trains (its base model); a
    reinforcement method's grader as graders/validate checks it (python only with `allow_python`,
    score_model only where the server has a judge)."""
    model = body.get("model")
    if model not in model_ids:
        raise RequestError(400, f"model {model!r} cannot be fine-tuned here: this server trains "
                                f"{' or '.join(repr(m) for m in model_ids)}", "model", "model_not_available")
    for key in ("training_file", "validation_file"):
        value = body.get(key)
        if (key == "training_file" or value is not None) and not isinstance(value, str):
            raise RequestError(400, f"'{key}' must be a file id from POST /v1/files", key)
    suffix = body.get("suffix")
    if suffix is not None and not (isinstance(suffix, str) and SUFFIX.fullmatch(suffix)):
        raise RequestError(400, "'suffix' must be 1 to 64 letters, digits, '-' or '_'", "suffix")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise RequestError(400, "'seed' must be a non-negative integer", "seed")
    method, hyperparameters = method_hyperparameters(body)
    grader = reinforcement_grader(body["method"], allow_python, judge) if method == "reinforcement" else None
    return JobRequest(model, body["training_file"], body.get("validation_file"), suffix, seed, method,
                      hyperparameters, grader)


def method_hyperparameters(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The training method and its hyperparameters, from `method` ({"type": "supervised",
    "supervised": {"hyperparameters": {...}}}) or the older top-level `hyperparameters`. The one
    place a new method (dpo's `beta`) joins; reinforcement's have their own types (reinforcement.py)."""
    method = body.get("method") or {"type": "supervised"}
    kind = method.get("type") if isinstance(method, dict) else None
    if kind == "reinforcement":
        section = method.get("reinforcement")
        given = reinforcement_hyperparameters(section.get("hyperparameters") if isinstance(section, dict) else None)
        return kind, {k: v for k, v in dataclasses.asdict(given).items() if v is not None}
    if kind not in METHODS:
        raise RequestError(400, f"'method.type' must be 'supervised', 'dpo' or 'reinforcement', got {kind!r}",
                           "method.type", "unsupported_method")
    section = method.get(kind) or {}
    raw = (section.get("hyperparameters") if isinstance(section, dict) else None) or body.get("hyperparameters") or {}
    if not isinstance(raw, dict):
        raise RequestError(400, "'hyperparameters' must be an object", "hyperparameters")
    unknown = sorted(set(raw) - set(METHODS[kind]))
    if unknown:
        raise RequestError(400, f"hyperparameter {unknown[0]!r} is not supported by method {kind!r}: use "
                                f"{', '.join(METHODS[kind])}", f"hyperparameters.{unknown[0]}")
    checked = {}
    for key, value in raw.items():
        if value == "auto":
            continue
        real = key in ("learning_rate_multiplier", "beta")
        kind_ok = isinstance(value, (int, float)) if real else isinstance(value, int)
        if isinstance(value, bool) or not kind_ok or value <= 0:
            raise RequestError(400, f"'{key}' must be \"auto\" or a positive "
                                    f"{'number' if real else 'integer'}, got {value!r}", f"hyperparameters.{key}")
        checked[key] = value
    return kind, checked


def train_overrides(hyperparameters: dict[str, Any], base: TrainConfig, method: str = "supervised",
                    grader: dict[str, Any] | None = None) -> dict[str, Any]:
    """TrainConfig keys for OpenAI's method and hyperparameters: dpo -> objective dpo (beta ->
    preference.beta), reinforcement -> objective grpo with `grader` inline (eval_interval -> eval_every;
    its other settings are the base config's `grpo:` section), n_epochs -> epochs, batch_size, and the
    learning rate as a multiple of the base config's (tunesmith's default for its method and objective
    when it has none). Hyperparameters that have no meaning here are left out (ReinforcementHyperparameters.IGNORED)."""
    overrides: dict[str, Any] = {}
    if method == "dpo":
        overrides["objective"] = "dpo"
        if "beta" in hyperparameters:
            overrides["preference"] = dataclasses.replace(base.preference, beta=float(hyperparameters["beta"]))
    if method == "reinforcement":
        overrides.update(objective="grpo", grader=grader)
        if "eval_interval" in hyperparameters:
            overrides["eval_every"] = hyperparameters["eval_interval"]
    if "n_epochs" in hyperparameters:
        overrides["epochs"] = float(hyperparameters["n_epochs"])
        overrides["max_steps"] = None  # n_epochs is the run's length, as OpenAI means it
    if "batch_size" in hyperparameters:
        overrides["batch_size"] = hyperparameters["batch_size"]
    if "learning_rate_multiplier" in hyperparameters:
        objective = overrides.get("objective", base.objective)
        overrides["lr"] = hyperparameters["learning_rate_multiplier"] * (base.lr or default_lr(base.method, objective))
    return overrides


def job_config(request: dict[str, Any], base: Path | None, model: str | None, data: Path, eval_data: Path | None,
               output: Path, judge: Judge | None = None) -> TrainConfig:
    """The TrainConfig of a job: the server's base config (`--config`, `--model`), then the job's
    files, seed and hyperparameters, its run directory under --home; a reinforcement job grades its
    score_model graders with the server's judge (its URL and model; the worker inherits the key)."""
    config = load_config(base, {"data": str(data), "eval": str(eval_data) if eval_data else None, "model": model,
                                "output": str(output), "seed": request["seed"]})
    config = dataclasses.replace(config, **train_overrides(request["hyperparameters"], config,
                                                           request.get("method", "supervised"), request.get("grader")))
    if judge is None or config.objective != "grpo":
        return config
    return dataclasses.replace(config, grpo=dataclasses.replace(config.grpo, judge_url=judge.base_url,
                                                                judge_model=judge.model))


def fine_tuned_name(job: dict[str, Any]) -> str:
    """OpenAI's shape, ft:BASE:SUFFIX:JOB (the suffix part empty when none was given)."""
    request = job["request"]
    return f"ft:{request['model']}:{request['suffix'] or ''}:{job['id']}"


def job_object(job: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's fine_tuning.job object; `method` echoes the request's (a reinforcement job's grader too)."""
    request = job["request"]
    kind = request["method"]
    hyper = {key: request["hyperparameters"].get(key, "auto") for key in METHODS[kind]}
    method: dict[str, Any] = {"type": kind, kind: {"hyperparameters": hyper}}
    if kind == "reinforcement":
        hyper = ReinforcementHyperparameters(**request["hyperparameters"]).to_dict()
        method[kind] = {"grader": request["grader"], "hyperparameters": hyper}
        hyper = {key: hyper[key] for key in HYPERPARAMETERS}  # the top level's are OpenAI's three
    return {
        "object": "fine_tuning.job", "id": job["id"], "created_at": job["created_at"], "model": request["model"],
        "status": job["status"], "fine_tuned_model": job["fine_tuned_model"], "finished_at": job["finished_at"],
        "training_file": request["training_file"], "validation_file": request["validation_file"],
        "hyperparameters": hyper, "method": method,
        "trained_tokens": job["trained_tokens"], "estimated_finish": job["estimated_finish"], "error": job["error"],
        "result_files": job["result_files"], "seed": request["seed"] if request["seed"] is not None else 0,
        "suffix": request["suffix"], "organization_id": "tunesmith", "integrations": [], "metadata": None,
    }


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": row["id"], "created_at": row["created_at"],
            "level": row["level"], "message": row["message"], "type": row["type"], "data": row["data"]}


def checkpoint_object(row: dict[str, Any], fine_tuned_model: str) -> dict[str, Any]:
    return {"object": "fine_tuning.job.checkpoint", "id": row["id"], "created_at": row["created_at"],
            "fine_tuned_model_checkpoint": f"{fine_tuned_model}:ckpt-step-{row['step']}",
            "fine_tuning_job_id": row["job_id"], "step_number": row["step"], "metrics": row["metrics"]}


def page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A list response of at most `limit` items (the caller fetched limit + 1 to know has_more)."""
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}
