"""Continuous batching for serve: one decode thread steps up to `max_batch` requests together,
admitting waiting ones at every step boundary, each with its own sampling, stop strings and stream.

Why not transformers' own continuous batching (`init_continuous_batching`, 5.24): its per-request
logits processors cover temperature, top-k and top-p only; repetition penalty, no-repeat n-grams
and per-request seeds, which serve accepts, are not among them (generation/continuous_batching/
cb_logits_processors.py). Here each row keeps generate()'s own processors (the same classes, in
generate()'s order), so a request alone decodes the tokens generate() would.

The batch shares one `DynamicCache`, left-padded: a new request is prefilled alone (exactly as
one at a time) and its keys and values are padded on the left to the batch's length (or the
batch's to its); finished rows are dropped and all-padding columns trimmed. Padded positions are
masked out of attention and each row's positions count only its own tokens, so a row's tokens do
not depend on its neighbours (tests/test_serve_batching.py: 4 concurrent = one at a time).
"""

from __future__ import annotations

import collections
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Sequence

import torch

from ..data.render import end_of_turn_ids
from ..settings import Sampling
from .streaming import Completion, StopCutter

Emit = Callable[[Any], None]
"""Receives a job's events from the decode thread: text pieces (str), then its `Completion`, or
the exception that ended it."""
Enter = Callable[[str], ContextManager[Any]]
"""Enters the model that answers as a model id (serve's `Served.answering`)."""


@dataclass(eq=False)
class DecodeJob:
    """One request's generation: its prompt, how it picks tokens, and where its events go."""

    model_id: str
    prompt_ids: list[int]
    sampling: Sampling
    emit: Emit
    tokens: list[int] = field(default_factory=list)
    """Generated so far (an end-of-turn token included, as generate() returns it)."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    cutter: StopCutter = field(init=False)
    processors: Any = None
    """generate()'s logits processors for this request's sampling (set when it is admitted)."""
    generator: torch.Generator | None = None
    """Draws this request's samples (seeded with its seed), apart from every other request's."""

    def __post_init__(self) -> None:
        self.cutter = StopCutter(self.sampling.stop)

    def cancel(self) -> None:
        """The client left: the decode thread drops this row at the next step."""
        self.cancelled.set()

    def add(self, token: int, tokenizer: Any, eos: frozenset[int]) -> None:
        """Append a decoded token and emit the text it makes showable."""
        self.tokens.append(token)
        if token in eos:
            return
        text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # a character split across tokens waits for its last byte
            piece = self.cutter.feed(text)
            if piece:
                self.emit(piece)

    def finish_if_done(self, tokenizer: Any, eos: frozenset[int]) -> bool:
        """Whether the answer has ended; if so its last piece and `Completion` are emitted."""
        if self.cutter.stopped or (self.tokens and self.tokens[-1] in eos):
            reason = "stop"
        elif self.cancelled.is_set():
            reason = "cancelled"
        elif len(self.tokens) >= self.sampling.max_new_tokens:
            reason = "length"
        else:
            return False
        rest = ""
        if not self.cutter.stopped:  # the whole text, a character held back for its last byte included
            rest = self.cutter.feed(tokenizer.decode(self.tokens, skip_special_tokens=True))
        rest += self.cutter.flush()
        if rest:
            self.emit(rest)
        self.emit(Completion(self.cutter.text, len(self.prompt_ids), len(self.tokens), reason))
        return True


class BatchDecoder:
    """Runs `DecodeJob`s in one daemon thread; jobs for one model id share a batch, others wait for it."""

    def __init__(self, tokenizer: Any, enter: Enter, max_batch: int) -> None:
        self.tokenizer, self.enter, self.max_batch = tokenizer, enter, max_batch
        self.eos = frozenset(end_of_turn_ids(tokenizer))
        self.running = 0
        """Rows in the batch now (what a test of a freed slot reads)."""
        self._waiting: collections.deque[DecodeJob] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, model_id: str, prompt_ids: Sequence[int], sampling: Sampling, emit: Emit) -> DecodeJob:
        job = DecodeJob(model_id, list(prompt_ids), sampling, emit)
        with self._wake:
            self._waiting.append(job)
            if self._thread is None:  # started on first use: an app built and never asked costs no thread
                self._thread = threading.Thread(target=self._serve_forever, name="tunesmith-decode", daemon=True)
                self._thread.start()
            self._wake.notify()
        return job

    def _serve_forever(self) -> None:
        while True:
            with self._wake:
                while not self._waiting:
                    self._wake.wait()
                model_id = self._waiting[0].model_id  # the oldest request's model goes next
            try:
                with self.enter(model_id) as model, torch.no_grad():
                    self._run_batch(model, model_id)
            except BaseException as exc:  # the model could not be entered: its waiting requests fail
                for job in self._take(model_id, len(self._waiting)):
                    job.emit(exc)

    def _take(self, model_id: str, room: int) -> list[DecodeJob]:
        """Up to `room` waiting jobs for `model_id`, oldest first; cancelled ones are dropped."""
        taken: list[DecodeJob] = []
        with self._wake:
            for job in list(self._waiting):
                if job.model_id == model_id and len(taken) < room:
                    self._waiting.remove(job)
                    if not job.cancelled.is_set():
                        taken.append(job)
        return taken

    def _run_batch(self, model: Any, model_id: str) -> None:
        """Step the batch until no job for `model_id` is running or waiting."""
        batch = _Batch(model)
        try:
            while True:
                for job in self._take(model_id, self.max_batch - len(batch.jobs)):
                    self._admit(batch, job)
                self.running = len(batch.jobs)
                if not batch.jobs:
                    return
                logits = batch.step()  # (B, V)
                for row, job in enumerate(batch.jobs):
                    if not job.cancelled.is_set():
                        self._advance(job, logits[row : row + 1])
                batch.keep([job for job in batch.jobs if not self._finished(job)])
        except BaseException as exc:  # a failed step fails every request in it
            for job in batch.jobs:
                job.emit(exc)
            raise
        finally:
            self.running = 0

    def _admit(self, batch: _Batch, job: DecodeJob) -> None:
        job.processors, job.generator = _picking(job.sampling, batch.model)
        try:
            logits = batch.prefill(job)  # (1, V)
        except Exception as exc:  # this prompt alone failed: the batch goes on
            job.emit(exc)
            return
        self._advance(job, logits)
        if self._finished(job):
            batch.drop_last()

    def _advance(self, job: DecodeJob, logits: torch.Tensor) -> None:
        """Pick the job's next token from its (1, V) logits and stream what it adds to the text."""
        history = torch.tensor([job.prompt_ids + job.tokens], device=logits.device)
        scores = job.processors(history, logits.float())
        if job.sampling.temperature > 0:
            token = int(torch.multinomial(scores.softmax(-1), 1, generator=job.generator))
        else:
            token = int(scores.argmax(-1))
        job.add(token, self.tokenizer, self.eos)

    def _finished(self, job: DecodeJob) -> bool:
        return job.finish_if_done(self.tokenizer, self.eos)


class EngineDecoder:
    """Serve's decoder for an engine other than transformers (inference/engines.py): one request
    at a time in one daemon thread, with the same events, stop strings and finish reasons."""

    def __init__(self, tokenizer: Any, engine: Any) -> None:
        self.tokenizer, self.engine = tokenizer, engine
        self.eos = frozenset(end_of_turn_ids(tokenizer))
        self.running = 0
        self._waiting: queue.Queue[DecodeJob] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, model_id: str, prompt_ids: Sequence[int], sampling: Sampling, emit: Emit) -> DecodeJob:
        job = DecodeJob(model_id, list(prompt_ids), sampling, emit)
        self._waiting.put(job)
        if self._thread is None:  # started on first use, as BatchDecoder's
            self._thread = threading.Thread(target=self._serve_forever, name="tunesmith-engine", daemon=True)
            self._thread.start()
        return job

    def _serve_forever(self) -> None:
        while True:
            job = self._waiting.get()
            self.running = 1
            try:
                self.run(job)
            except Exception as exc:
                job.emit(exc)
            finally:
                self.running = 0

    def run(self, job: DecodeJob) -> None:
        """Decode `job` here and now (chat calls this directly)."""
        for token in self.engine.tokens(job.prompt_ids, job.sampling):
            job.add(token, self.tokenizer, self.eos)
            if job.finish_if_done(self.tokenizer, self.eos):
                return
        job.cancelled.set()  # the engine stopped early: report what it gave
        job.finish_if_done(self.tokenizer, self.eos)


def _picking(sampling: Sampling, model: Any) -> tuple[Any, torch.Generator | None]:
    """generate()'s logits processors for `sampling`, in its order (penalties, then temperature,
    top-k from the model's generation config or generate()'s default, top-p), and a generator seeded
    as `torch.manual_seed`."""
    from transformers import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if sampling.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
    if sampling.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(sampling.no_repeat_ngram_size))
    if sampling.temperature <= 0:
        return processors, None
    processors.append(TemperatureLogitsWarper(sampling.temperature))
    top_k = getattr(getattr(model, "generation_config", None), "top_k", None)
    if top_k is None:  # what generate() fills in for a model that sets none (50)
        from transformers import GenerationConfig

        top_k = GenerationConfig._get_default_generation_params()["top_k"]
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(sampling.top_p))
    generator = torch.Generator(next(model.parameters()).device)
    if sampling.seed is not None:
        generator.manual_seed(sampling.seed)
    else:
        generator.seed()
    return processors, generator


class _Batch:
    """The running rows: their jobs, one shared left-padded KV cache and its attention mask."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.jobs: list[DecodeJob] = []
        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)  # (B, T): 1 = a real token

    def prefill(self, job: DecodeJob) -> torch.Tensor:
        """Run `job`'s prompt alone and join its cache to the batch as the last row; its (1, V) logits."""
        from transformers import DynamicCache

        ids = torch.tensor([job.prompt_ids], device=self.device)  # (1, L)
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), cache=DynamicCache(),
                         use_cache=True, logits_to_keep=1)
        width = max(self.mask.shape[1], ids.shape[1])
        own = torch.ones_like(ids)
        if self.cache is None:
            self.cache, self.mask = out.cache, own
        else:
            self.cache = _joined(self.cache, out.cache, width)
            self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(own, width)])
        self.jobs.append(job)
        return out.logits[:, -1]

    def step(self) -> torch.Tensor:
        """One token for every row: each row's last token in, its (B, V) next-token logits out."""
        last = torch.tensor([[job.tokens[-1]] for job in self.jobs], device=self.device)  # (B, 1)
        self.mask = torch.cat([self.mask, torch.ones_like(last)], dim=1)  # (B, T + 1)
        positions = self.mask.sum(dim=1, keepdim=True) - 1  # each row counts only its own tokens
        out = self.model(input_ids=last, attention_mask=self.mask, position_ids=positions,
                         cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[:, -1]

    def keep(self, jobs: list[DecodeJob]) -> None:
        """Drop the rows of jobs not in `jobs`, then the columns that are padding in every row left."""
        if len(jobs) == len(self.jobs):
            return
        rows = [i for i, job in enumerate(self.jobs) if job in jobs]
        self.jobs = jobs
        if not rows:
            self.cache, self.mask = None, self.mask[:0, :0]
            return
        index = torch.tensor(rows, device=self.device)
        self.mask = self.mask[index]
        start = int((self.mask.sum(dim=0) > 0).nonzero()[0])  # first column some row still uses
        self.mask = self.mask[:, start:]
        self.cache = _rebuilt(self.cache, lambda t: t[index, :, start:])

    def drop_last(self) -> None:
        self.keep(self.jobs[:-1])


def _left_pad(t: torch.Tensor, width: int, dim: int = 1) -> torch.Tensor:
    """`t` with zeros prepended along `dim` up to `width`."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _joined(cache: Any, new: Any, width: int) -> Any:
    """The batch's cache with `new`'s row appended, both left-padded to `width` positions."""
    from transformers import DynamicCache

    joined = DynamicCache()
    for i, (layer, extra) in enumerate(zip(cache.layers, new.layers)):
        keys = torch.cat([_left_pad(layer.keys, width, 2), _left_pad(extra.keys, width, 2)])  # (B+1, H, T, D)
        values = torch.cat([_left_pad(layer.values, width, 2), _left_pad(extra.values, width, 2)])
        joined.update(keys, values, i)
    return joined


def _rebuilt(cache: Any, change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    from transformers import DynamicCache

    rebuilt = DynamicCache()
    for i, layer in enumerate(cache.layers):
        rebuilt.update(change(layer.keys), change(layer.values), i)
    return rebuilt

