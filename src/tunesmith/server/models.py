"""The models the server answers as: its base, and every succeeded job by its `fine_tuned_model`
name, all on one loaded base. A job's adapter is loaded beside the others on its first request and
switched on per request; requests generate one at a time (the serve gate), so a switch never
reaches a request in flight."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..model.base import base_view
from ..serve.app import Served
from ..web.errors import RequestError
from .jobs import JOB_ID
from .store import Store
from .worker import runs_dir


@dataclass
class ServedJobs(Served):
    """`Served` whose model ids are read from the jobs table, and whose answering model is the base
    with the right adapter active (or none, for the base's own name)."""

    store: Store | None = None
    home: Path = Path(".")
    loaded: set[str] = field(default_factory=set)
    """Adapter names (job ids) loaded into the base so far."""
    retrievers: dict[str, Any] = field(default_factory=dict)
    """Each asked job's retriever (None for a job trained without `retrieval:`), by job id."""
    embedder: Any = None
    """The embedding model the jobs' dense retrievers share, loaded at the first that needs it."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while a retriever is loaded: two requests to a new job load it once."""

    @property
    def model_ids(self) -> tuple[str, ...]:
        assert self.store is not None
        return (self.model_id, *self.store.fine_tuned_models())

    def retriever_for(self, model_id: str) -> Any:
        """A job trained with `retrieval:` (RAFT) answers with its own knowledge source and settings
        (`run_retriever`, as `serve` of its run); the base and other jobs without passages."""
        from ..retrieval import Embedder
        from ..retrieval.raft import run_retriever
        from ..run import RunDir

        job_id = model_id.rsplit(":", 1)[-1]
        if model_id == self.model_id or not JOB_ID.fullmatch(job_id):
            return None
        with self.lock:
            if job_id not in self.retrievers:
                config = RunDir(runs_dir(self.home) / job_id).config()
                if config.retrieval is not None and config.retrieval.answer_settings().uses_embedder:
                    self.embedder = self.embedder or Embedder.load()
                self.retrievers[job_id] = run_retriever(config, embedder=self.embedder)
            return self.retrievers[job_id]

    @contextlib.contextmanager
    def answering(self, model_id: str) -> Iterator[Any]:
        from ..model.loading import attach_adapter, use_adapter

        if model_id == self.model_id:
            if self.loaded:
                with base_view(self.model)() as model:
                    yield model
            else:
                yield self.model
            return
        job_id = model_id.rsplit(":", 1)[-1]
        if not JOB_ID.fullmatch(job_id):
            raise RequestError(404, f"The model '{model_id}' does not exist", "model", "model_not_found")
        if job_id not in self.loaded:
            self.model = attach_adapter(self.model, runs_dir(self.home) / job_id / "adapter", job_id)
            self.loaded.add(job_id)
        use_adapter(self.model, job_id)
        yield self.model
