"""The web page's JSON routes under /ui/api/, where OpenAI's API has none: the data check of an uploaded
file and its first rows (the grader editor's sample rows), the Train form's defaults and help (from
TrainConfig, per objective), each job's run (summary, metrics, eval.json,
figures, its settings), two runs side by side, and its adapter as a download; the long tasks (compare,
exports) and retrieval are in api_tasks.py. Every figure the page shows comes from these or from /v1."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..config import PreferenceConfig, TrainConfig, default_lr, dotted, load_config
from ..field_docs import field_docs
from ..grpo_config import GrpoConfig
from ..run import RunDir
from ..server.files import file_path
from ..server.lookups import find_file, find_job
from ..server.store import Store
from ..server.worker import runs_dir
from ..web.errors import RequestError
from .api_tasks import task_routes
from .knowledge import Retrievers
from .tasks import TaskRunner

PREVIEWS = 3
"""Rendered examples the Data page shows (what `data check --show 3` prints)."""
FIGURES = ("report-loss.png", "report-probes.png", "report-tradeoff.png")
"""The plots `tunesmith eval` writes beside report.html; the only run files served besides it."""
FORM = (("n_epochs", "epochs"), ("batch_size", "batch_size"), ("learning_rate_multiplier", "lr"), ("seed", "seed"))
"""The job request's hyperparameters (OpenAI's names) and the TrainConfig field each one sets."""
SETTINGS = ("model", "method", "objective", "max_seq_tokens", "val_fraction", "max_steps", "eval_every",
            "system_prompt", "precision")
"""Base-config fields the Train page shows read-only: the server's --config sets them for every job."""
OBJECTIVES = (("sft", "supervised"), ("dpo", "dpo"), ("grpo", "reinforcement"))
"""The objectives the Train page offers and the OpenAI `method.type` that trains each (orpo has none)."""
GRPO_SETTINGS = ("group_size", "max_completion_tokens", "temperature", "beta")
"""The `grpo:` settings of the server's --config that the Train page shows for grpo (read-only)."""
SAMPLE_ROWS = 20
"""Rows of a file the grader editor offers as samples: the first ones, enough to pick a telling one."""
STARTING_GRADER = {"type": "text_similarity", "name": "similar", "evaluation_metric": "fuzzy_match",
                   "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}"}
"""The grader editor's start: the answer's fuzzy match against a field of the row (the page puts the
sample row's first field besides `messages` in place of reference_answer, OpenAI's usual name)."""


def train_form(config: TrainConfig) -> dict[str, Any]:
    """The Train page: the job's fields with the server config's values and TrainConfig's help, the
    objectives with each one's own fields (dpo's beta, grpo's eval_interval) and peak learning rate, and
    the settings every job shares. The learning rate is a multiplier (OpenAI's), so its default is 1."""
    docs = field_docs(TrainConfig)
    fields = []
    for name, key in FORM:
        value, help_text = getattr(config, key), docs.get(key, "")
        if key == "lr":
            value, help_text = 1, f"Multiplies the peak learning rate (the objective's, shown with it). {help_text}"
        fields.append({"name": name, "key": key, "value": value, "help": help_text})
    extra = {"dpo": [{"name": "beta", "key": "preference.beta", "value": config.preference.beta,
                      "help": field_docs(PreferenceConfig)["beta"]}],
             "grpo": [{"name": "eval_interval", "key": "eval_every", "value": config.eval_every,
                       "help": docs["eval_every"]}]}
    grpo_docs = field_docs(GrpoConfig)
    objectives = [{"name": name, "method": method, "lr": config.lr or default_lr(config.method, name),
                   "fields": extra.get(name, [])} for name, method in OBJECTIVES]
    settings = [{"key": k, "value": getattr(config, k), "help": docs.get(k, "")} for k in SETTINGS]
    grpo = [{"key": f"grpo.{k}", "value": getattr(config.grpo, k), "help": grpo_docs[k]} for k in GRPO_SETTINGS]
    return {"fields": fields, "objectives": objectives, "settings": settings, "grpo_settings": grpo,
            "grader": STARTING_GRADER}


def sample_rows(path: Path, limit: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """The file's first `limit` readable rows with their lines: the grader editor's sample rows."""
    from ..data.limits import CheckLimits
    from ..data.rows import iter_rows

    rows = []
    for line, row, _ in iter_rows(path, CheckLimits(), []):
        rows.append({"line": line, "row": row})
        if len(rows) == limit:
            break
    return rows


def check_report(path: Path, filename: str, config: TrainConfig, tokenizer: Any) -> dict[str, Any]:
    """`data check --json --show` of one uploaded file, its path shown as the uploaded name, the first
    examples as (text, trained, cut) runs, and the objective its rows call for (`objective`: grpo for RFT
    prompts, dpo for preference pairs, else None: the Train page's default)."""
    from ..data import data_options
    from ..data.check import check_files
    from ..data.formats import GRADED_FORMATS, PREFERENCE_FORMATS, detect_format
    from ..data.preview import preview_segments

    first = sample_rows(path, 1)
    kind = detect_format(first[0]["row"]) if first else None
    graded = kind in GRADED_FORMATS  # RFT prompts are checked as objective grpo takes them
    report = check_files(path, None, tokenizer, config.max_seq_tokens, show=PREVIEWS, val_fraction=config.val_fraction,
                         reinforcement=graded, **data_options(config))
    body = json.loads(json.dumps(report.to_json()).replace(json.dumps(str(path))[1:-1], filename))
    body["objective"] = "grpo" if graded else "dpo" if kind in PREFERENCE_FORMATS else None
    body["previews"] = [{"source": e.source.replace(str(path), filename),
                         "segments": preview_segments(e, tokenizer, config.max_seq_tokens)} for e in report.previews]
    return body


def run_view(run: Path) -> dict[str, Any]:
    """What the Runs, Report and Export pages read of a job's run directory (nulls while it has none)."""
    files = RunDir(run)
    return {"summary": files.summary(), "eval": files.evaluation(), "metrics": files.metrics(),
            "figures": [f for f in FIGURES if (run / f).is_file()], "adapter": (run / "adapter").is_dir()}


def settings_differ(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The TrainConfig settings two runs differ in (their run folders aside), as {key, a, b} rows."""
    fa, fb = dotted(a), dotted(b)
    keys = sorted(k for k in set(fa) | set(fb) if k != "output" and fa.get(k) != fb.get(k))
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in keys]


def zip_folder(folder: Path) -> bytes:
    """The folder's files in a zip, paths relative to it (an adapter is a few small files)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def ui_routes(home: Path, store: Store, base_config: Path | None, model_name: str | None, model: Any, tokenizer: Any,
              tasks: TaskRunner) -> list[Route]:
    """The /ui/api routes over the server's store and home; they sit behind the same Guard as /v1."""
    def config() -> TrainConfig:
        return load_config(base_config, {"data": "-", "model": model_name})

    def job_run(request: Request) -> Path:
        return runs_dir(home) / find_job(store, request.path_params["job_id"])["id"]

    def succeeded_run(request: Request) -> Path:
        job = find_job(store, request.path_params["job_id"])
        if job["status"] != "succeeded":
            raise RequestError(400, f"job {job['id']} is {job['status']}: only a succeeded job's run can be "
                                    "compared or exported", "job_id", "job_not_succeeded")
        return runs_dir(home) / job["id"]

    def view(job: dict[str, Any]) -> dict[str, Any]:
        return {**run_view(runs_dir(home) / job["id"]), "config": job["config"]["train"]}

    async def form(request: Request) -> Response:
        return JSONResponse(train_form(config()))

    async def check(request: Request) -> Response:
        row = find_file(store, request.path_params["file_id"])
        path = file_path(home, row["id"], row["stored"])
        return JSONResponse(await run_in_threadpool(check_report, path, row["filename"], config(), tokenizer))

    async def rows(request: Request) -> Response:
        row = find_file(store, request.path_params["file_id"])
        return JSONResponse({"rows": await run_in_threadpool(sample_rows, file_path(home, row["id"], row["stored"]))})

    async def runs(request: Request) -> Response:
        return JSONResponse({j["id"]: view(j) for j in store.jobs()})

    async def run(request: Request) -> Response:
        return JSONResponse(view(find_job(store, request.path_params["job_id"])))

    async def side_by_side(request: Request) -> Response:
        a, b = (find_job(store, request.query_params.get(k, "")) for k in ("a", "b"))
        return JSONResponse({"a": {"id": a["id"], **view(a)}, "b": {"id": b["id"], **view(b)},
                             "differ": settings_differ(a["config"]["train"], b["config"]["train"])})

    async def figure(request: Request) -> Response:
        name, path = request.path_params["name"], job_run(request)
        if name not in FIGURES or not (path / name).is_file():
            raise RequestError(404, f"No figure {name!r} in this job's run", "name", "not_found")
        return FileResponse(path / name, media_type="image/png")

    async def adapter(request: Request) -> Response:
        path = job_run(request) / "adapter"
        if not path.is_dir():
            raise RequestError(404, "This job has no adapter yet: it has not succeeded", "job_id", "not_found")
        body = await run_in_threadpool(zip_folder, path)
        name = f"{request.path_params['job_id']}-adapter.zip"
        return Response(body, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return [
        Route("/ui/api/train-form", form, methods=["GET"]),
        Route("/ui/api/files/{file_id}/check", check, methods=["GET"]),
        Route("/ui/api/files/{file_id}/rows", rows, methods=["GET"]),
        Route("/ui/api/runs", runs, methods=["GET"]),
        Route("/ui/api/runs/side-by-side", side_by_side, methods=["GET"]),
        Route("/ui/api/jobs/{job_id}/run", run, methods=["GET"]),
        Route("/ui/api/jobs/{job_id}/figures/{name}", figure, methods=["GET"]),
        Route("/ui/api/jobs/{job_id}/adapter.zip", adapter, methods=["GET"]),
        *task_routes(home, store, tasks, Retrievers(model, tokenizer), succeeded_run),
    ]
