"""The routes of `tunesmith server`: OpenAI's files and fine-tuning jobs over the store, and the chat
and completion routes of `tunesmith serve` over every tuned model, behind the web layer's guard (Host,
Origin, API key). A layer above (the page, ui/app.py) adds its routes as `AppExtras`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import ConfigError
from ..graders import Judge
from ..serve.app import GenerationGate, inference_routes
from ..settings import ServeLimits, ServerLimits
from ..web.bodies import MULTIPART_TYPE, counting_receive, read_json, require_media_type
from ..web.errors import EXCEPTION_HANDLERS, RequestError
from ..web.guard import LOOPBACK_HOSTS, OPEN_PATHS, Guard, new_key
from ..web.ids import new_id
from .files import FILE_ID, PURPOSES, file_object, file_path, save_upload
from .graders import grader_routes
from .jobs import checkpoint_object, event_object, fine_tuned_name, job_config, job_object, page, parse_job_request
from .locks import hold_lock
from .lookups import find_file, find_job
from .models import ServedJobs
from .scheduler import Scheduler
from .store import ACTIVE, DB_NAME, Store
from .worker import runs_dir

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
    """Required as 'Authorization: Bearer KEY' on every route but /health; None: `run_server` makes a
    random one for the start (the command line makes and prints it first)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host header names accepted besides loopback's and --host's (a reverse proxy's name)."""
    evaluate: bool = True
    """After training, run `tunesmith eval` on the job and list its report.html in `result_files`."""
    allow_python_graders: bool = False
    """Run python graders sent to graders/run, graders/validate and reinforcement jobs; off by default,
    since a python grader is code run on this machine as the server's user (not a security boundary)."""
    judge_url: str | None = None
    """The OpenAI-compatible base URL every score_model grader asks (a request cannot name another);
    None: score_model graders score 0 with an error saying no judge is set."""
    judge_api_key: str | None = None
    """Sent to the judge as `Authorization: Bearer KEY`."""
    judge_model: str | None = None
    """Model id sent to the judge instead of each grader's `model` (tunesmith serve names its model after the run)."""
    limits: ServerLimits = ServerLimits()
    serve_limits: ServeLimits = ServeLimits()
    """The chat routes' limits, as `tunesmith serve` has them (and the JSON body cap of every route)."""


@dataclass(frozen=True)
class AppExtras:
    """What a layer above the server adds to its app: the web page's routes (ui/app.py)."""

    routes: tuple[Route, ...] = ()
    open_paths: tuple[str, ...] = ()
    """Paths the guard serves without the key (the page's own files: they hold no data)."""
    on_stop: tuple[Callable[[], None], ...] = ()
    """Called when the app stops, after the scheduler (the page's task processes)."""


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
                     system_prompt: str | None = None, extras: AppExtras = AppExtras()) -> Any:
    """The ASGI app: the scheduler runs while the app does (started and stopped by its lifespan)."""
    limits, store, chat = settings.limits, home.store, settings.serve_limits
    served = ServedJobs(model, tokenizer, base_id, chat, GenerationGate(chat.max_queued, chat.max_batch),
                        int(getattr(model.config, "max_position_embeddings", 0) or chat.max_prompt_tokens),
                        system_prompt=system_prompt, store=store, home=home.path)
    scheduler = Scheduler(store, home.path, tokenizer, limits, settings.allow_python_graders, settings.judge_api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.stop)
            for stop in extras.on_stop:
                await run_in_threadpool(stop)
            home.lock.close()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": base_id, "running": scheduler.job_id,
                             "queued": store.count_jobs(("validating_files", "queued"))})

    routes = [Route("/health", health, methods=["GET"]), *file_routes(home, limits),
              *job_routes(home, settings, base_id), *server_grader_routes(settings), *inference_routes(served),
              *extras.routes]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.served, app.state.scheduler = served, scheduler
    hosts = (*LOOPBACK_HOSTS, settings.host, *settings.allowed_hosts)
    return Guard(app, settings.api_key, hosts, (*OPEN_PATHS, *extras.open_paths))


def server_grader_routes(settings: ServerSettings) -> list[Route]:
    """graders/run and graders/validate with the server's flag and judge (server/graders.py)."""
    return grader_routes(settings.allow_python_graders, server_judge(settings), settings.serve_limits.max_body_bytes)


def server_judge(settings: ServerSettings) -> Judge | None:
    """The judge the server was started with (--judge-url), which every score_model grader asks."""
    return Judge(settings.judge_url, settings.judge_api_key, settings.judge_model) if settings.judge_url else None


def file_routes(home: Home, limits: ServerLimits) -> list[Route]:
    store = home.store

    async def upload(request: Request) -> Response:
        require_media_type(request, MULTIPART_TYPE)
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
        return JSONResponse(file_object(find_file(store, request.path_params["file_id"])))

    async def content(request: Request) -> Response:
        row = find_file(store, request.path_params["file_id"])
        return FileResponse(file_path(home.path, row["id"], row["stored"]), media_type="application/octet-stream")

    async def delete(request: Request) -> Response:
        row = find_file(store, request.path_params["file_id"])
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


def job_routes(home: Home, settings: ServerSettings, base_id: str) -> list[Route]:
    store, limits = home.store, settings.limits

    async def create(request: Request) -> Response:
        body = await read_json(request, settings.serve_limits.max_body_bytes)
        parsed = parse_job_request(body, (base_id,), settings.allow_python_graders, settings.judge_url is not None)
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
                                paths["validation_file"], runs_dir(home.path) / job_id, server_judge(settings))
        except ConfigError as exc:
            raise RequestError(400, str(exc), "hyperparameters") from None
        store.add_job(job_id, parsed.to_dict(), {"train": config.to_dict(), "evaluate": settings.evaluate})
        store.add_event(job_id, new_id("ftevent"), "created", "info", f"Created fine-tuning job: {job_id}")
        return JSONResponse(job_object(find_job(store, job_id)))

    async def listing(request: Request) -> Response:
        limit = _limit(request, limits)
        return JSONResponse(page([job_object(j) for j in store.jobs(request.query_params.get("after"), limit + 1)],
                                 limit))

    async def detail(request: Request) -> Response:
        return JSONResponse(job_object(find_job(store, request.path_params["job_id"])))

    async def cancel(request: Request) -> Response:
        job = find_job(store, request.path_params["job_id"])
        if store.cancel(job["id"]) is None:
            raise RequestError(400, f"job {job['id']} is already {job['status']}", "job_id")
        return JSONResponse(job_object(find_job(store, job["id"])))

    async def events(request: Request) -> Response:
        job, limit = find_job(store, request.path_params["job_id"]), _limit(request, limits)
        rows = store.events(job["id"], request.query_params.get("after"), limit + 1)
        return JSONResponse(page([event_object(r) for r in rows], limit))

    async def checkpoints(request: Request) -> Response:
        job, limit = find_job(store, request.path_params["job_id"]), _limit(request, limits)
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
    from ..model.loading import load_model
    from ..model.tokenizer import load_tokenizer
    from ..run import base_model_id

    config = load_config(settings.config, {"data": "-", "model": settings.model})
    if config.method == "full":
        raise ConfigError("method: full is not served by tunesmith server (each job would be a whole model); "
                          "use lora or dora")
    tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    model = load_model(config.model, trust_remote_code=config.trust_remote_code).eval()
    return model, tokenizer, base_model_id(config, ""), data_options(config)["system_prompt"]


def run_server(settings: ServerSettings, build: Callable[..., Any] = build_server_app) -> None:
    """Lock --home, load the base model, and serve the app `build` makes (build_server_app's
    arguments; the page's is ui.app.build_ui_app) until SIGTERM/SIGINT (a running job saves a
    checkpoint and is queued again for the next start). Without an API key, one is made for this
    start and logged, as Jupyter makes its token."""
    import uvicorn

    if settings.api_key is None:
        settings = dataclasses.replace(settings, api_key=new_key())
        log.warning("no API key given: this start's is %s", settings.api_key)
    home = open_home(settings.home)  # before the model loads: a second server is refused in a second
    model, tokenizer, base_id, system_prompt = load_base(settings)
    app = build(home, settings, model, tokenizer, base_id, system_prompt)
    log.info("tunesmith server: training and serving %s on http://%s:%d/v1, home %s (API key required)", base_id,
             settings.host, settings.port, settings.home)
    uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                                  timeout_graceful_shutdown=settings.serve_limits.shutdown_grace_s)).run()
