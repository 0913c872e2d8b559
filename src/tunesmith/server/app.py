"""The routes of `tunesmith server`: OpenAI's files and fine-tuning jobs over the store, and the chat
and completion routes of `tunesmith serve` over every tuned model, behind serve's Host and API-key guard."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import ConfigError
from ..serve.app import EXCEPTION_HANDLERS, LOOPBACK_HOSTS, GenerationGate, Guard, inference_routes, read_json
from ..serve.protocol import RequestError
from ..settings import ServeLimits, ServerLimits
from ..ui.api import ui_routes
from ..ui.pages import WithPages
from ..ui.tasks import TaskRunner
from .files import FILE_ID, PURPOSES, counting_receive, file_object, file_path, new_id, save_upload
from .jobs import (
    JOB_ID,
    checkpoint_object,
    event_object,
    fine_tuned_name,
    job_config,
    job_object,
    page,
    parse_job_request,
)
from .locks import hold_lock
from .models import ServedJobs
from .scheduler import Scheduler
from .store import ACTIVE, Store
from .worker import DB_NAME, runs_dir

log = logging.getLogger("tunesmith.server")
MULTIPART_SLACK_BYTES = 64 * 1024
"""Room for the multipart envelope (boundaries, headers, the purpose field) around the file's own bytes."""


@dataclass(frozen=True)
class ServerSettings:
    """How `tunesmith server` runs (its limits' defaults are in settings.py)."""

    home: Path
    """Where the database, uploaded files, run directories and worker logs live."""
    host: str = "127.0.0.1"
    """Address to bind: loopback unless asked."""
    port: int = 8000
    model: str | None = None
    """The base model every job trains and the server answers as; None: the config's, else tunesmith's default."""
    config: Path | None = None
    """A YAML of TrainConfig keys (method, lora, forgetting, precision, ...) under every job."""
    api_key: str | None = None
    """Required as 'Authorization: Bearer KEY' on every route but /health."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header names accepted besides loopback's and --host's (a reverse proxy's name)."""
    evaluate: bool = True
    """After training, run `tunesmith eval` on the job and list its report.html in `result_files`."""
    limits: ServerLimits = ServerLimits()
    serve_limits: ServeLimits = ServeLimits()
    """The chat routes' limits, as `tunesmith serve` has them (and the JSON body cap of every route)."""


@dataclass
class Home:
    """An opened --home: its path, its store, and the lock that keeps a second server out."""

    path: Path
    store: Store
    lock: IO[str]


def open_home(path: Path) -> Home:
    """Lock --home (HomeInUse when another server holds it) and open its database."""
    path.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(path / "server.lock", wait=False)
    return Home(path, Store(path / DB_NAME), lock)


def build_server_app(home: Home, settings: ServerSettings, model: Any, tokenizer: Any, base_id: str,
                     system_prompt: str | None = None) -> Any:
    """The ASGI app: the scheduler runs while the app does (started and stopped by its lifespan)."""
    limits, store, chat = settings.limits, home.store, settings.serve_limits
    served = ServedJobs(model, tokenizer, base_id, chat, GenerationGate(chat.max_queued, chat.max_batch),
                        int(getattr(model.config, "max_position_embeddings", 0) or chat.max_prompt_tokens),
                        system_prompt=system_prompt, store=store, home=home.path)
    scheduler, tasks = Scheduler(store, home.path, tokenizer, limits), TaskRunner()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.stop)
            await run_in_threadpool(tasks.stop)
            home.lock.close()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": base_id, "running": scheduler.job_id,
                             "queued": store.count_jobs(("validating_files", "queued"))})

    routes = [Route("/health", health, methods=["GET"]), *file_routes(home, limits),
              *job_routes(home, settings, base_id), *inference_routes(served),
              *ui_routes(home.path, store, settings.config, settings.model, model, tokenizer, tasks)]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.served, app.state.scheduler = served, scheduler
    hosts = (*LOOPBACK_HOSTS, settings.host, *settings.allowed_hosts)
    return WithPages(Guard(app, settings.api_key, hosts), hosts)


def file_routes(home: Home, limits: ServerLimits) -> list[Route]:
    store = home.store

    async def upload(request: Request) -> Response:
        cap = limits.max_upload_bytes + MULTIPART_SLACK_BYTES
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise RequestError(413, f"the upload is over the limit of {limits.max_upload_bytes} bytes", "file",
                               "file_too_large")
        counted = Request(request.scope, counting_receive(request.receive, cap))
        async with counted.form(max_files=1, max_fields=8) as form:
            purpose, part = form.get("purpose"), form.get("file")
            if purpose not in PURPOSES:
                raise RequestError(400, f"'purpose' must be one of {', '.join(PURPOSES)}, got {purpose!r}", "purpose")
            if not isinstance(part, UploadFile):
                raise RequestError(400, "'file' is required: a multipart file part", "file")
            row = await save_upload(part, home.path, part.filename or "", purpose, limits.max_upload_bytes)
        store.add_file(row)
        return JSONResponse(file_object(row))

    async def listing(request: Request) -> Response:
        rows = store.files(request.query_params.get("purpose"))
        return JSONResponse({"object": "list", "data": [file_object(r) for r in rows], "has_more": False})

    async def detail(request: Request) -> Response:
        return JSONResponse(file_object(_file(store, request)))

    async def content(request: Request) -> Response:
        row = _file(store, request)
        return FileResponse(file_path(home.path, row["id"], row["stored"]), media_type="application/octet-stream")

    async def delete(request: Request) -> Response:
        row = _file(store, request)
        users = [j["id"] for j in store.jobs() if j["status"] in ACTIVE
                 and row["id"] in (j["request"]["training_file"], j["request"]["validation_file"])]
        if users:
            raise RequestError(409, f"file {row['id']} is in use by job {users[0]}: cancel it first", "file_id")
        file_path(home.path, row["id"], row["stored"]).unlink(missing_ok=True)
        store.delete_file(row["id"])
        return JSONResponse({"id": row["id"], "object": "file", "deleted": True})

    return [
        Route("/v1/files", upload, methods=["POST"]),
        Route("/v1/files", listing, methods=["GET"]),
        Route("/v1/files/{file_id}", detail, methods=["GET"]),
        Route("/v1/files/{file_id}", delete, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", content, methods=["GET"]),
    ]


def _file(store: Store, request: Request) -> dict[str, Any]:
    file_id = request.path_params["file_id"]
    row = store.file(file_id) if FILE_ID.fullmatch(file_id) else None
    if row is None:
        raise RequestError(404, f"No such File object: {file_id}", "file_id", "file_not_found")
    return row


def job_routes(home: Home, settings: ServerSettings, base_id: str) -> list[Route]:
    store, limits = home.store, settings.limits

    async def create(request: Request) -> Response:
        parsed = parse_job_request(await read_json(request, settings.serve_limits.max_body_bytes), (base_id,))
        if store.count_jobs(("validating_files", "queued")) >= limits.max_queued_jobs:
            raise RequestError(429, f"{limits.max_queued_jobs} jobs are already waiting; retry when one has started",
                               code="queue_full")
        paths = {}
        for key in ("training_file", "validation_file"):
            file_id = getattr(parsed, key)
            row = store.file(file_id) if file_id and FILE_ID.fullmatch(file_id) else None
            if file_id and (row is None or row["purpose"] != "fine-tune"):
                raise RequestError(400, f"invalid {key} {file_id!r}: upload it with purpose 'fine-tune' first", key,
                                   "invalid_file")
            paths[key] = file_path(home.path, row["id"], row["stored"]) if row else None
        job_id = new_id("ftjob")
        try:
            config = job_config(parsed.to_dict(), settings.config, settings.model, paths["training_file"],
                                paths["validation_file"], runs_dir(home.path) / job_id)
        except ConfigError as exc:
            raise RequestError(400, str(exc), "hyperparameters") from None
        store.add_job(job_id, parsed.to_dict(), {"train": config.to_dict(), "evaluate": settings.evaluate})
        store.add_event(job_id, new_id("ftevent"), "created", "info", f"Created fine-tuning job: {job_id}")
        return JSONResponse(job_object(_job(store, job_id)))

    async def listing(request: Request) -> Response:
        limit = _limit(request, limits)
        return JSONResponse(page([job_object(j) for j in store.jobs(request.query_params.get("after"), limit + 1)],
                                 limit))

    async def detail(request: Request) -> Response:
        return JSONResponse(job_object(_job(store, request.path_params["job_id"])))

    async def cancel(request: Request) -> Response:
        job = _job(store, request.path_params["job_id"])
        if store.cancel(job["id"]) is None:
            raise RequestError(400, f"job {job['id']} is already {job['status']}", "job_id")
        return JSONResponse(job_object(_job(store, job["id"])))

    async def events(request: Request) -> Response:
        job, limit = _job(store, request.path_params["job_id"]), _limit(request, limits)
        rows = store.events(job["id"], request.query_params.get("after"), limit + 1)
        return JSONResponse(page([event_object(r) for r in rows], limit))

    async def checkpoints(request: Request) -> Response:
        job, limit = _job(store, request.path_params["job_id"]), _limit(request, limits)
        rows = store.checkpoints(job["id"], request.query_params.get("after"), limit + 1)
        return JSONResponse(page([checkpoint_object(r, fine_tuned_name(job)) for r in rows], limit))

    base = "/v1/fine_tuning/jobs"
    return [
        Route(base, create, methods=["POST"]),
        Route(base, listing, methods=["GET"]),
        Route(base + "/{job_id}", detail, methods=["GET"]),
        Route(base + "/{job_id}/cancel", cancel, methods=["POST"]),
        Route(base + "/{job_id}/events", events, methods=["GET"]),
        Route(base + "/{job_id}/checkpoints", checkpoints, methods=["GET"]),
    ]


def _job(store: Store, job_id: str) -> dict[str, Any]:
    job = store.job(job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise RequestError(404, f"No fine-tuning job found with id {job_id!r}", "job_id", "job_not_found")
    return job


def _limit(request: Request, limits: ServerLimits) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return limits.page_limit
    if not raw.isdigit() or not 1 <= int(raw) <= limits.max_page_limit:
        raise RequestError(400, f"'limit' must be an integer from 1 to {limits.max_page_limit}, got {raw!r}", "limit")
    return int(raw)


def load_base(settings: ServerSettings) -> tuple[Any, Any, str, str | None]:
    """(model, tokenizer, its id, the system prompt) of the base every job trains, from --config/--model."""
    from ..config import load_config
    from ..data import data_options
    from ..generate import base_model_id
    from ..model.loading import load_model
    from ..model.tokenizer import load_tokenizer

    config = load_config(settings.config, {"data": "-", "model": settings.model})
    if config.method == "full":
        raise ConfigError("method: full is not served by tunesmith server (each job would be a whole model); "
                          "use lora or dora")
    tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    model = load_model(config.model, trust_remote_code=config.trust_remote_code).eval()
    return model, tokenizer, base_model_id(config, ""), data_options(config)["system_prompt"]


def run_server(settings: ServerSettings) -> None:
    """Lock --home, load the base model, and serve until SIGTERM/SIGINT (a running job saves a
    checkpoint and is queued again for the next start)."""
    import uvicorn

    home = open_home(settings.home)  # before the model loads: a second server is refused in a second
    model, tokenizer, base_id, system_prompt = load_base(settings)
    app = build_server_app(home, settings, model, tokenizer, base_id, system_prompt)
    log.info("tunesmith server: training and serving %s on http://%s:%d/v1, home %s (%s)", base_id, settings.host,
             settings.port, settings.home, "API key required" if settings.api_key else "no API key")
    uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                                  timeout_graceful_shutdown=settings.serve_limits.shutdown_grace_s)).run()
