"""The /ui/api routes of the page's long tasks on a succeeded job (tasks.py): fine-tuning vs RAG
(`compare`, its figures read from RUN/compare.json) and the merged and GGUF exports (their files
as downloads, the parity figures the export reports); and the playground's retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..run import RunDir
from ..server.store import Store
from ..settings import GGUF_TYPES, CompareSettings, RetrievalSettings
from ..web.bodies import read_json
from ..web.errors import RequestError
from .knowledge import Retrievers, knowledge_path
from .tasks import TaskRunner

EXPORTS = ("merged", "gguf")
COMPARE_FIELDS = {"limit": (CompareSettings.limit, 1), "seen": (CompareSettings.seen, 0),
                  "max_new_tokens": (CompareSettings.max_new_tokens, 1), "top_k": (RetrievalSettings.top_k, 1)}
"""The Compare form's numbers: name -> (default, smallest allowed); the defaults are `tunesmith compare`'s."""


OWN_KNOWLEDGE = "own"
"""The Compare form's choice of a run trained with `retrieval:`: its own knowledge source (compare's default)."""


def own_knowledge(run: Path) -> str | None:
    """The knowledge source of a run trained with `retrieval:`, or None."""
    section = RunDir(run).config().retrieval
    return None if section is None else section.knowledge


def compare_args(body: dict[str, Any], knowledge: Path | None) -> dict[str, Any]:
    """A compare request's settings, checked; a missing one is `tunesmith compare`'s default; no
    knowledge: the run's own (a run trained with `retrieval:`)."""
    args: dict[str, Any] = {"knowledge": None if knowledge is None else str(knowledge)}
    for name, (default, least) in COMPARE_FIELDS.items():
        value = body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise RequestError(400, f"'{name}' must be an integer of at least {least}, got {value!r}", name)
        args[name] = value
    return args


def export_files(folder: Path) -> list[dict[str, Any]]:
    return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(folder.iterdir()) if p.is_file()] \
        if folder.is_dir() else []


def task_routes(home: Path, store: Store, tasks: TaskRunner, retrievers: Retrievers,
                succeeded_run: Callable[[Request], Path]) -> list[Route]:
    """Routes over `succeeded_run(request)`, the run directory of the path's job (404 or 400 otherwise)."""
    def start(run: Path, kind: str, args: dict[str, Any]) -> Response:
        if tasks.running(run, kind):
            raise RequestError(409, f"this job's {kind} is already running", "job_id", "task_running")
        if tasks.busy():
            raise RequestError(409, "another compare or export is running: start this one when it has finished",
                               "job_id", "task_running")
        return JSONResponse({"task": tasks.start(run, kind, args)})

    async def compare_start(request: Request) -> Response:
        run, body = succeeded_run(request), await read_json(request, 16_384)
        own = body.get("knowledge") == OWN_KNOWLEDGE and own_knowledge(run) is not None
        return start(run, "compare", compare_args(body, None if own else
                                                  knowledge_path(home, store, body.get("knowledge"))))

    async def compare_state(request: Request) -> Response:
        run = succeeded_run(request)
        result = RunDir(run).comparison()
        defaults = {name: default for name, (default, _) in COMPARE_FIELDS.items()}
        return JSONResponse({"task": tasks.state(run, "compare"), "result": result, "defaults": defaults,
                             "own_knowledge": own_knowledge(run)})

    async def export_start(request: Request) -> Response:
        run, fmt, body = succeeded_run(request), request.path_params["fmt"], await read_json(request, 1024)
        if fmt not in EXPORTS:
            raise RequestError(404, f"no export format {fmt!r}: {' or '.join(EXPORTS)}", "fmt", "not_found")
        gguf_type = body.get("gguf_type")
        if gguf_type is not None and gguf_type not in GGUF_TYPES:
            raise RequestError(400, f"'gguf_type' must be one of {', '.join(GGUF_TYPES)}", "gguf_type")
        return start(run, f"export-{fmt}", {"gguf_type": gguf_type})

    async def export_state(request: Request) -> Response:
        run = succeeded_run(request)
        return JSONResponse({fmt: {"task": tasks.state(run, f"export-{fmt}"),
                                   "files": export_files(run / f"export-{fmt}")} for fmt in EXPORTS}
                            | {"gguf_types": list(GGUF_TYPES)})

    async def export_file(request: Request) -> Response:
        run, fmt, name = succeeded_run(request), request.path_params["fmt"], request.path_params["name"]
        if fmt not in EXPORTS or name not in {f["name"] for f in export_files(run / f"export-{fmt}")}:
            raise RequestError(404, f"no file {name!r} in this job's {fmt} export", "name", "not_found")
        return FileResponse(run / f"export-{fmt}" / name, media_type="application/octet-stream", filename=name)

    async def retrieve(request: Request) -> Response:
        body = await read_json(request, 65_536)
        max_tokens = body.get("max_tokens", 64)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, "'max_tokens' must be a positive integer", "max_tokens")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise RequestError(400, "'messages' must be a list of chat turns", "messages")
        retriever = await run_in_threadpool(chosen_retriever, request.app.state.served, body)
        return JSONResponse(await run_in_threadpool(retrievers.augment, retriever, messages, max_tokens))

    def chosen_retriever(served: Any, body: dict[str, Any]) -> Any:
        """`knowledge` (a file or job id) searched as `model` answers (a RAFT job: its retriever, passage
        count, hand-off and citations); without `knowledge`, the retriever the server's chat answers
        `model` with (a RAFT job's own, else none); without `model`, plain retrieval."""
        model = body.get("model")
        if model is not None and model not in served.model_ids:
            raise RequestError(404, f"The model '{model}' does not exist", "model", "model_not_found")
        own = served.retriever_for(model) if model is not None else None
        if body.get("knowledge") is None and model is not None:
            return own
        path = knowledge_path(home, store, body.get("knowledge"))
        return retrievers.get(path, own.settings if own is not None else RetrievalSettings())

    jobs = "/ui/api/jobs/{job_id}"
    return [
        Route(jobs + "/compare", compare_start, methods=["POST"]),
        Route(jobs + "/compare", compare_state, methods=["GET"]),
        Route(jobs + "/exports", export_state, methods=["GET"]),
        Route(jobs + "/exports/{fmt}", export_start, methods=["POST"]),
        Route(jobs + "/exports/{fmt}/{name}", export_file, methods=["GET"]),
        Route("/ui/api/retrieve", retrieve, methods=["POST"]),
    ]
