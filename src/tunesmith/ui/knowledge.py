"""Knowledge sources for the Compare page and the playground's retrieval: an uploaded file, or the
training data of a job, named by its id; and the playground's retrieval itself, through the
`Retriever` that `chat --knowledge` and `compare` use (the same passages, the same prompt); a RAFT
job's own is the one the server's chat answers it with (`ServedJobs.retriever_for`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..server.files import FILE_ID, file_path
from ..server.jobs import JOB_ID
from ..server.store import Store
from ..settings import RetrievalSettings
from ..web.errors import RequestError


def knowledge_path(home: Path, store: Store, source: Any) -> Path:
    """The file behind a knowledge choice: a file id (an upload) or a job id (that job's training file)."""
    if isinstance(source, str) and FILE_ID.fullmatch(source) and (row := store.file(source)) is not None:
        return file_path(home, row["id"], row["stored"])
    if isinstance(source, str) and JOB_ID.fullmatch(source) and (job := store.job(source)) is not None:
        return Path(job["config"]["train"]["data"])
    raise RequestError(400, f"'knowledge' must be an uploaded file's id or a job's id, got {source!r}", "knowledge",
                       "invalid_knowledge")


class Retrievers:
    """One embedder for the page, loaded at the first question, and one Retriever per knowledge file and
    settings (an upload never changes: its id names its content)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.embedder: Any = None
        self.loaded: dict[tuple[Path, RetrievalSettings], Any] = {}
        self.lock = threading.Lock()

    def get(self, path: Path, settings: RetrievalSettings = RetrievalSettings()) -> Any:
        from ..retrieval import Embedder, Retriever

        with self.lock:
            if (path, settings) not in self.loaded:
                if settings.uses_embedder:
                    self.embedder = self.embedder or Embedder.load()
                self.loaded[path, settings] = Retriever.load(path, settings, embedder=self.embedder)
            return self.loaded[path, settings]

    def augment(self, retriever: Any, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        """The passages `retriever` finds for the last user turn, their sources, and the conversation with
        them in it, as `chat` builds it (within the model's context less the answer); `cite`: whether
        the answer is asked to cite them, as `[2]`."""
        if not messages or messages[-1].get("role") != "user" or not isinstance(messages[-1].get("content"), str):
            raise RequestError(400, "'messages' must end with a user turn with text content", "messages")
        if retriever is None:  # a model that answers without passages
            return {"passages": [], "sources": [], "cite": False, "budget_tokens": None, "messages": messages}
        passages = retriever.find(messages[-1]["content"])
        budget = retriever.prompt_budget(self.model, max_tokens)
        return {"passages": [{"text": p.text, "source": p.source} for p in passages],
                "sources": [p.source for p in passages], "cite": retriever.settings.cite, "budget_tokens": budget,
                "messages": retriever.augment_with(messages, passages, self.tokenizer, budget)}
