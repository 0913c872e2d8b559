"""`tunesmith serve`: an OpenAI-compatible HTTP server for a run's tuned model (starlette + uvicorn).

Safe by default: binds 127.0.0.1, behind the web layer's guard (web/guard.py: the Host header
against DNS rebinding, no state change from another site's page, an optional API key compared in
constant time), caps bodies while they arrive, caps max_tokens and n, decodes up to
`max_batch` requests together (inference/batching.py) with a bounded queue behind them (429 past
it), and shuts down cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..data.render import encode_prompt, encode_text, with_system_prompt
from ..evaluation.handoff import SourcedStream, with_sources
from ..inference.batching import BatchDecoder, EngineDecoder
from ..inference.engines import DEFAULT_ENGINE
from ..inference.streaming import Completion
from ..settings import RetrievalSettings, Sampling, ServeLimits
from ..web.bodies import read_json
from ..web.errors import EXCEPTION_HANDLERS, RequestError
from ..web.guard import LOOPBACK_HOSTS, Guard
from ..web.ids import new_id
from .protocol import (
    GenerationRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    parse_chat_request,
    parse_completion_request,
    usage_chunk,
)

log = logging.getLogger("tunesmith.serve")


class GenerationGate:
    """At most `max_batch` generations at once; at most `max_queued` requests wait for a place; the next
    is turned away."""

    def __init__(self, max_queued: int, max_batch: int = ServeLimits.max_batch) -> None:
        self._places = asyncio.Semaphore(max_batch)
        self._admitted = 0  # running + waiting
        self._running = 0
        self._capacity = max_queued + max_batch
        self.max_queued = max_queued

    @property
    def busy(self) -> bool:
        """A generation is running."""
        return self._running > 0

    @property
    def waiting(self) -> int:
        return self._admitted - self._running

    async def enter(self) -> None:
        """Take a place in the queue and wait for a place in the batch; RequestError 429 when the queue is full."""
        if self._admitted >= self._capacity:
            raise RequestError(429, f"the server is busy: {self.max_queued} requests are already queued; "
                                    "retry later", code="queue_full")
        self._admitted += 1
        try:
            await self._places.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        self._running += 1

    def leave(self) -> None:
        self._places.release()
        self._running -= 1
        self._admitted -= 1


@dataclass
class Served:
    """What the endpoints share: the model, its name, and the server's limits."""

    model: Any
    tokenizer: Any
    model_id: str
    limits: ServeLimits
    gate: GenerationGate
    context_tokens: int
    retriever: Any = None
    """A `retrieval.Retriever` whose passages go into chat prompts (`--knowledge`), or None."""
    base_id: str | None = None
    """The base model's own name, served beside the tuned one (adapters disabled), or None."""
    base: Any = None
    """Enters the base model (model.base.base_view): a zero-argument context manager factory."""
    system_prompt: str | None = None
    """The run's system prompt, for chat requests that bring none (as in training)."""
    engine: Any = None
    """An engine of inference/engines.py that decodes instead of `model` (`--engine`), or None."""
    decoder: BatchDecoder | EngineDecoder = field(init=False)
    """Decodes the admitted requests: together, one batch per answering model at a time; or one by one in `engine`."""

    def __post_init__(self) -> None:
        self.decoder = (EngineDecoder(self.tokenizer, self.engine) if self.engine is not None
                        else BatchDecoder(self.tokenizer, self.answering, self.limits.max_batch))

    @property
    def model_ids(self) -> tuple[str, ...]:
        return (self.model_id,) + ((self.base_id,) if self.base_id else ())

    def retriever_for(self, model_id: str) -> Any:
        """The retriever whose passages go into chat prompts to `model_id`, or None: `serve`'s one
        (`--knowledge`, or the run's own), for its tuned and base model alike."""
        return self.retriever

    def answering(self, model_id: str) -> Any:
        """A context manager giving the model that answers as `model_id`. Only the decode thread enters
        it, for one batch of requests to the same model id, so switching the adapters off for one never
        reaches another."""
        return self.base() if model_id == self.base_id and self.base is not None else contextlib.nullcontext(self.model)


def build_app(model: Any, tokenizer: Any, model_id: str, limits: ServeLimits = ServeLimits(),
              api_key: str | None = None, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS, retriever: Any = None,
              base: tuple[str, Any] | None = None, system_prompt: str | None = None, engine: Any = None) -> Any:
    """The ASGI app: routes behind the web layer's guard (Host, Origin, API key); chat answers use
    `retriever` when given; `base` is (its model id, a base view) to serve the base model beside the
    tuned one; `engine` decodes instead of `model`, which then gives only its tokenizer's context length."""
    served = Served(model, tokenizer, model_id, limits, GenerationGate(limits.max_queued, limits.max_batch),
                    int(getattr(model.config, "max_position_embeddings", 0) or limits.max_prompt_tokens), retriever,
                    *(base or (None, None)), system_prompt, engine)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": served.model_id, "busy": served.gate.busy,
                             "queued": served.gate.waiting})

    app = Starlette(routes=[Route("/health", health, methods=["GET"]), *inference_routes(served)],
                    exception_handlers=EXCEPTION_HANDLERS)
    app.state.served = served
    return Guard(app, api_key, allowed_hosts)


def inference_routes(served: Served) -> list[Route]:
    """The OpenAI model and completion routes over `served` (`tunesmith server` serves them over its
    own `Served`, whose model ids and `answering` cover every finished job)."""
    limits = served.limits

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model_card(m) for m in served.model_ids]})

    async def model_detail(request: Request) -> Response:
        if request.path_params["model"] not in served.model_ids:
            raise RequestError(404, f"The model '{request.path_params['model']}' does not exist", "model",
                               "model_not_found")
        return JSONResponse(_model_card(request.path_params["model"]))

    async def chat_completions(request: Request) -> Response:
        parsed = parse_chat_request(await read_json(request, limits.max_body_bytes), served.model_ids, limits)
        messages = with_system_prompt([dict(m) for m in parsed.messages or ()], served.system_prompt)
        sources: list[str] = []  # of the passages in the prompt, when the run was trained to cite them
        retriever = await run_in_threadpool(served.retriever_for, parsed.model) if parsed.retrieval else None
        if retriever is not None:
            room = min(served.limits.max_prompt_tokens, served.context_tokens - parsed.sampling.max_new_tokens)
            messages, sources = await run_in_threadpool(retriever.augment_sourced, messages, served.tokenizer, room)
            sources = sources if retriever.settings.cite else []
        prompt_ids = encode_prompt(messages, served.tokenizer)
        return await _respond(served, parsed, prompt_ids, chat=True, sources=sources)

    async def completions(request: Request) -> Response:
        parsed = parse_completion_request(await read_json(request, limits.max_body_bytes), served.model_ids, limits)
        return await _respond(served, parsed, encode_text(served.tokenizer, parsed.prompt or ""), chat=False)

    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model_detail, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]


def _model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "tunesmith"}


async def _respond(served: Served, parsed: GenerationRequest, prompt_ids: list[int], chat: bool,
                   sources: list[str] | None = None) -> Response:
    """The answer (streamed or whole), its citations `[n]` written as their passages' `sources` (a run
    trained with `retrieval.cite`): a streamed answer's pieces joined are the whole answer's text."""
    room = min(served.limits.max_prompt_tokens, served.context_tokens - parsed.sampling.max_new_tokens)
    if len(prompt_ids) > room:
        raise RequestError(400, f"the prompt is {len(prompt_ids)} tokens; at most {room} fit with max_tokens "
                                f"{parsed.sampling.max_new_tokens}", "messages" if chat else "prompt",
                           "context_length_exceeded")
    rid = new_id("chatcmpl" if chat else "cmpl")
    await served.gate.enter()
    if parsed.stream:
        events = _choice_events(served, parsed, prompt_ids, rid, chat, sources or [])
        return LeaveAfter(StreamingResponse(events, media_type="text/event-stream",
                                            headers={"Cache-Control": "no-cache"}), served.gate)
    try:
        done = [await _drained(_decoded(served, parsed, prompt_ids, i)) for i in range(parsed.n)]
    finally:
        served.gate.leave()
    if sources:
        done = [replace(c, text=with_sources(c.text, sources)) for c in done]
    body = (chat_response if chat else completion_response)(rid, parsed.model, done)
    return JSONResponse(body)


def _choice_sampling(sampling: Sampling, index: int) -> Sampling:
    """Choice i of n samples with seed + i, so n seeded choices differ and still reproduce."""
    if sampling.seed is None or index == 0:
        return sampling
    return replace(sampling, seed=sampling.seed + index)


async def _decoded(served: Served, parsed: GenerationRequest, prompt_ids: list[int],
                   index: int) -> AsyncIterator[str | Completion]:
    """Choice `index` from the decode thread: its text pieces, then its `Completion`. Leaving early
    (client gone, shutdown) cancels it, which frees its row in the batch at the next step."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Any] = asyncio.Queue()

    def emit(item: Any) -> None:  # called by the decode thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(events.put_nowait, item)

    job = served.decoder.submit(parsed.model, prompt_ids, _choice_sampling(parsed.sampling, index), emit)
    try:
        while True:
            item = await events.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Completion):
                return
    finally:
        job.cancel()


async def _drained(events: AsyncIterator[str | Completion]) -> Completion:
    async for item in events:
        if isinstance(item, Completion):
            return item
    raise AssertionError("the decode thread ended a job without its completion")


async def _choice_events(served: Served, parsed: GenerationRequest, prompt_ids: list[int], rid: str,
                         chat: bool, sources: Sequence[str] = ()) -> AsyncIterator[str]:
    """Server-sent events: one chunk per text piece (citations written as `sources`, `SourcedStream`),
    a finishing chunk per choice, then [DONE]."""
    finished: list[Completion] = []
    model_id = parsed.model

    def piece(index: int, text: str) -> str:
        return _sse(chat_chunk(rid, model_id, index, {"content": text}) if chat
                    else completion_chunk(rid, model_id, index, text))

    for index in range(parsed.n):
        if chat:
            yield _sse(chat_chunk(rid, model_id, index, {"role": "assistant", "content": ""}))
        sourced = SourcedStream(sources)
        try:
            async for item in _decoded(served, parsed, prompt_ids, index):
                if isinstance(item, Completion):
                    finished.append(item)
                elif text := (sourced.feed(item) if sources else item):
                    yield piece(index, text)
        except Exception as exc:  # the status line is sent already: report in-band and stop
            log.exception("generation failed")
            yield _sse(RequestError(500, f"generation failed: {type(exc).__name__}").body())
            return
        if rest := sourced.flush():
            yield piece(index, rest)
        reason = finished[-1].finish_reason
        yield _sse(chat_chunk(rid, model_id, index, {}, reason) if chat
                   else completion_chunk(rid, model_id, index, "", reason))
    if parsed.include_usage:
        yield _sse(usage_chunk(rid, model_id, "chat.completion.chunk" if chat else "text_completion", finished))
    yield "data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class LeaveAfter:
    """An ASGI response that frees the generation slot when it ends, however it ends."""

    def __init__(self, response: Response, gate: GenerationGate) -> None:
        self.response, self.gate = response, gate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.gate.leave()


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: ServeLimits = ServeLimits(), allowed_hosts: Iterable[str] = (), model_id: str | None = None,
          knowledge: str | Path | None = None, engine: str = DEFAULT_ENGINE,
          retrieval: RetrievalSettings = RetrievalSettings()) -> None:
    """Load RUN and serve it until SIGTERM/SIGINT (uvicorn lets running requests finish, up to a grace);
    with `knowledge`, chat completions answer with passages retrieved from it as `retrieval` says.
    Another `engine` than transformers decodes the tuned model alone (the base is served by
    transformers only)."""
    import uvicorn

    from ..retrieval.raft import run_retriever
    from ..run import RunDir, base_model_id, base_of, load_run, run_system_prompt

    model, tokenizer = load_run(run)
    config = RunDir.open(run).config()
    retriever = run_retriever(config, knowledge, retrieval, log.info)  # a RAFT run answers as it was trained
    name = model_id or Path(run).resolve().name
    hosts = [*LOOPBACK_HOSTS, host, *allowed_hosts]
    decoding = None
    base: tuple[str, Any] | None = (base_model_id(config, name), base_of(model, config))
    if engine != DEFAULT_ENGINE:
        from ..data.render import end_of_turn_ids
        from ..inference.engines import open_engine

        decoding, base = open_engine(engine, run, sorted(end_of_turn_ids(tokenizer)), log=log.info), None
    app = build_app(model, tokenizer, name, limits, api_key, hosts, retriever, base, run_system_prompt(run), decoding)
    log.info("serving %s%s with %s on http://%s:%d/v1 (%s)", name, f" (and its base as {base[0]})" if base else "",
             engine, host, port, "API key required" if api_key else "no API key")
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=limits.shutdown_grace_s)
    # uvicorn stops accepting on SIGTERM/SIGINT, lets running requests finish within the grace
    # period, then re-raises the signal so the exit status says how the process ended.
    uvicorn.Server(config).run()
