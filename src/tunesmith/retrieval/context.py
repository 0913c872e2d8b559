"""Put retrieved passages into a chat prompt, through the model's chat template, within a token budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.render import encode_prompt, encode_text
from ..settings import RetrievalSettings
from .chunking import Passage
from .embed import Embedder
from .index import VectorIndex, load_or_build_index, load_or_read_passages
from .lexical import LexicalIndex, fuse_rankings, rankings

CONTEXT_HEADER = "Answer the question. These passages may help:"
"""Opens the user turn of a retrieval prompt; the passages follow, numbered, then the question."""


def context_header(settings: RetrievalSettings) -> str:
    """The instruction before the passages: CONTEXT_HEADER for any model; for a run trained with
    `retrieval:` (RAFT), the one it was trained on: answer from the passages, name the passage used
    (`cite`), or give the hand-off when they do not hold the answer."""
    if settings.handoff is None and not settings.cite:
        return CONTEXT_HEADER
    text = "Answer the question from these numbered passages"
    text += ", and end your answer with the number of the passage you used, as [2]." if settings.cite else "."
    if settings.handoff is not None:
        text += f" If they do not hold the answer, reply: {settings.handoff}"
    return text


def with_passages(messages: list[dict[str, str]], passages: Sequence[str],
                  header: str = CONTEXT_HEADER) -> list[dict[str, str]]:
    """The conversation with the passages put before the question in its last user turn. A RAFT
    run's prompt (a `header` from `context_header`) has its instruction even without passages."""
    if not passages and header == CONTEXT_HEADER:
        return list(messages)
    numbered = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(passages, start=1))
    last = messages[-1]
    content = f"{header}\n\n{numbered}\n\nQuestion: {last['content']}" if passages \
        else f"{header}\n\nQuestion: {last['content']}"
    return list(messages[:-1]) + [{**last, "content": content}]


def fit_passages(messages: list[dict[str, str]], passages: Sequence[str], tokenizer: Any,
                 budget_tokens: int, min_passage_tokens: int = RetrievalSettings.min_passage_tokens,
                 header: str = CONTEXT_HEADER) -> list[dict[str, str]]:
    """`with_passages` with as many passages, best first, as fit in `budget_tokens` of the rendered
    prompt; the first that does not fit whole is cut to the tokens left (or dropped below
    `min_passage_tokens`), and the rest are dropped. Lengths are measured on the prompt exactly as
    it will be encoded, so the budget holds whatever the tokenizer does at the joins."""
    fits = lambda texts: len(encode_prompt(with_passages(messages, texts, header), tokenizer)) <= budget_tokens  # noqa: E731
    kept: list[str] = []
    for text in passages:
        if fits(kept + [text]):
            kept.append(text)
            continue
        ids = encode_text(tokenizer, text)
        lo, hi = 0, len(ids)  # the longest prefix that fits lies in [lo, hi)
        while lo < hi - 1:
            mid = (lo + hi) // 2
            if fits(kept + [tokenizer.decode(ids[:mid])]):
                lo = mid
            else:
                hi = mid
        if lo >= min_passage_tokens:
            kept.append(tokenizer.decode(ids[:lo]))
        break
    return with_passages(messages, kept, header)


EMBED_MEMO = 8192
"""Texts whose vectors a Retriever keeps (about 12 MiB at MiniLM's 384 dimensions): a RAFT data set's
questions and passages, or a service's recent questions."""


@dataclass
class Retriever:
    """A knowledge source's passages and what searches them: the MiniLM vector index and its
    embedder (dense, hybrid), the BM25 index (bm25, hybrid), as `settings.retriever` says."""

    passages: list[Passage]
    settings: RetrievalSettings
    index: VectorIndex | None = None
    embedder: Embedder | None = None
    lexical: LexicalIndex | None = None
    vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    """Unit vectors of the texts `embed` has met, the newest EMBED_MEMO kept: the relevance floor of a
    prompt and of its passages' choice embed each question and passage once."""

    @classmethod
    def load(cls, knowledge: str | Path, settings: RetrievalSettings = RetrievalSettings(),
             log: Callable[[str], None] = lambda m: None, embedder: Embedder | None = None) -> Retriever:
        """The retriever of a knowledge source; its passages (and vectors) from the cache where the
        same files were read before, the embedding model loaded only when the retriever uses it."""
        index = None
        if settings.uses_embedder:
            embedder = embedder or Embedder.load()
        if settings.retriever == "bm25":
            passages = load_or_read_passages(knowledge, settings.chunk_words, settings.overlap_words, log,
                                             unreadable_documents=settings.unreadable_documents)
        else:
            index = load_or_build_index(knowledge, embedder, settings.chunk_words, settings.overlap_words, log,
                                        unreadable_documents=settings.unreadable_documents)
            passages = index.passages
        lexical = LexicalIndex.build([p.text for p in passages]) if settings.retriever != "dense" else None
        return cls(passages, settings, index, embedder, lexical)

    def retrieve(self, queries: Sequence[str], k: int | None = None) -> list[list[Passage]]:
        """The best k (default top_k) passages for each query, best first. bm25 returns only
        passages that share a word with the query, so possibly fewer."""
        k = k or self.settings.top_k
        ranked: list[list[list[int]]] = []  # per retriever used: per query, passage indices best first
        if self.index is not None and self.embedder is not None:
            ranked.append(rankings(self.index.scores(self.embedder.encode(queries))))
        if self.lexical is not None:
            ranked.append(rankings(self.lexical.scores(queries), positive_only=True))
        per_query = [fuse_rankings([r[i] for r in ranked], self.settings.rrf_k) if len(ranked) > 1 else ranked[0][i]
                     for i in range(len(queries))]
        return [[self.passages[j] for j in row[:k]] for row in per_query]

    def find(self, question: str) -> list[Passage]:
        """The passages a prompt for `question` gets: the top_k, or none when the best of them is under
        the relevance floor (`relevant`)."""
        return self.relevant(question, self.retrieve([question])[0])

    def prompt_budget(self, model: Any, max_new_tokens: int) -> int:
        """Tokens a prompt may take: the model's context less the answer, at most max_prompt_tokens."""
        context = int(getattr(model.config, "max_position_embeddings", 0) or self.settings.max_prompt_tokens)
        return min(self.settings.max_prompt_tokens, context - max_new_tokens)

    def augment(self, messages: list[dict[str, str]], tokenizer: Any, budget_tokens: int) -> list[dict[str, str]]:
        """The conversation with passages for its last user turn, within min(budget, max_prompt_tokens)."""
        if not messages or messages[-1].get("role") != "user":
            return list(messages)
        passages = self.find(messages[-1]["content"])
        return self.augment_with(messages, passages, tokenizer, budget_tokens)

    def augment_sourced(self, messages: list[dict[str, str]], tokenizer: Any,
                        budget_tokens: int) -> tuple[list[dict[str, str]], list[str]]:
        """`augment`, and the sources of the passages numbered [1], [2], ... in the prompt (for a cited
        answer's sources; a passage the budget dropped has a number no prompt shows)."""
        if not messages or messages[-1].get("role") != "user":
            return list(messages), []
        passages = self.find(messages[-1]["content"])
        return self.augment_with(messages, passages, tokenizer, budget_tokens), [p.source for p in passages]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) unit vectors of the texts in all-MiniLM-L6-v2's embeddings (loaded here for a bm25
        retriever whose floor is still to be measured): those not met before are encoded together."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            if self.embedder is None:
                self.embedder = Embedder.load()
            self.vectors.update(zip(missing, self.embedder.encode(missing)))
        out = np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)
        for oldest in list(self.vectors)[: max(0, len(self.vectors) - EMBED_MEMO)]:
            del self.vectors[oldest]
        return out

    def relevance(self, question: str, passages: Sequence[Passage]) -> list[float]:
        """Each passage's cosine similarity with the question (`embed`)."""
        vectors = self.embed([question, *(p.text for p in passages)])
        return [float(v) for v in vectors[1:] @ vectors[0]]

    def relevant(self, question: str, passages: Sequence[Passage]) -> list[Passage]:
        """The passages, or none when the best of them is under the relevance floor (`min_relevance`)."""
        floor = self.settings.min_relevance
        if not floor or not passages or max(self.relevance(question, passages)) >= floor:
            return list(passages)
        return []

    def augment_with(self, messages: list[dict[str, str]], passages: Sequence[Passage], tokenizer: Any,
                     budget_tokens: int) -> list[dict[str, str]]:
        """The conversation with these passages, best first, in its last user turn, within the budget
        (none when the best is under the relevance floor): the one prompt builder of training (RAFT),
        compare, chat, serve, the server and the UI."""
        passages = self.relevant(messages[-1]["content"], passages)
        budget = min(budget_tokens, self.settings.max_prompt_tokens)
        return fit_passages(messages, [p.text for p in passages], tokenizer, budget, self.settings.min_passage_tokens,
                            context_header(self.settings))

