"""A NumPy vector index over passages: unit vectors, dot-product search, cached on disk.

Exact search over a (n, d) matrix costs n * d multiply-adds per query: 1 ms for 10,000 passages of
MiniLM's 384 dimensions, so an approximate index (faiss) would only pay off far beyond that.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import cache_dir
from ..data.knowledge import knowledge_sha256, read_knowledge
from ..files import write_atomic, write_atomic_bytes
from ..settings import UnreadablePolicy
from .chunking import Passage, chunk_texts
from .embed import Embedder

INDEX_VERSION = 1
"""Bump when chunking or embedding changes, so older cached indexes are rebuilt."""


@dataclass(frozen=True)
class VectorIndex:
    passages: list[Passage]
    vectors: np.ndarray
    """(n, d) float32, one unit vector per passage."""

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(q, n) cosine similarities of the (q, d) unit query vectors with every passage."""
        return queries @ self.vectors.T  # unit vectors: the dot product is the cosine

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each (d,) unit query vector of `queries` (q, d): the k best (passage index, cosine), best first."""
        scores = self.scores(queries)  # (q, n)
        k = min(k, scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (q, k)
        return [[(int(j), float(scores[i, j])) for j in row] for i, row in enumerate(top)]

    def save(self, folder: Path) -> None:
        buffer = io.BytesIO()
        np.save(buffer, self.vectors, allow_pickle=False)
        write_atomic_bytes(folder / "vectors.npy", buffer.getvalue())
        # Written last: its presence marks a complete index.
        write_atomic(folder / "passages.json", json.dumps([asdict(p) for p in self.passages], ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> VectorIndex:
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        passages = [Passage(**p) for p in json.loads((folder / "passages.json").read_text(encoding="utf-8"))]
        if len(passages) != vectors.shape[0]:
            raise ValueError(f"{folder}: {len(passages)} passages but {vectors.shape[0]} vectors")
        return cls(passages, vectors)


def index_key(source_sha256: str, embedder_name: str, chunk_words: int, overlap_words: int,
              unreadable_documents: str = "refuse") -> str:
    """Cache key of an index: what it was built from and how (an index built skipping unreadable
    documents must not answer for a source that refuses them)."""
    skipping = "" if unreadable_documents == "refuse" else f"|{unreadable_documents}"  # refuse: the keys of before
    text = f"v{INDEX_VERSION}|{source_sha256}|{embedder_name}|{chunk_words}|{overlap_words}{skipping}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_or_build_index(knowledge: str | Path, embedder: Embedder, chunk_words: int, overlap_words: int,
                        log: Callable[[str], None] = lambda m: None, *,
                        unreadable_documents: UnreadablePolicy = "refuse") -> VectorIndex:
    """The index of a knowledge source, read from the cache when the same files were indexed the
    same way before, else built (read, chunked, embedded) and cached."""
    key = index_key(knowledge_sha256(knowledge), embedder.name, chunk_words, overlap_words, unreadable_documents)
    folder = cache_dir() / "indexes" / key
    if (folder / "passages.json").exists():
        try:
            index = VectorIndex.load(folder)
            log(f"retrieval: {len(index.passages)} passages from the cached index {folder}")
            return index
        except (OSError, ValueError) as exc:
            log(f"retrieval: rebuilding the cached index ({exc})")
    passages = chunk_texts(read_knowledge(knowledge, unreadable_documents, log), chunk_words, overlap_words)
    log(f"retrieval: embedding {len(passages)} passages of {knowledge}")
    index = VectorIndex(passages, embedder.encode([p.text for p in passages]))
    index.save(folder)
    return index


def load_or_read_passages(knowledge: str | Path, chunk_words: int, overlap_words: int,
                          log: Callable[[str], None] = lambda m: None, *,
                          unreadable_documents: UnreadablePolicy = "refuse") -> list[Passage]:
    """The passages of a knowledge source without embeddings (bm25), cached like an index so that
    PDFs are not read again at every start."""
    key = index_key(knowledge_sha256(knowledge), "no embedder", chunk_words, overlap_words, unreadable_documents)
    path = cache_dir() / "indexes" / key / "passages.json"
    if path.exists():
        try:
            passages = [Passage(**p) for p in json.loads(path.read_text(encoding="utf-8"))]
            log(f"retrieval: {len(passages)} passages from the cache {path.parent}")
            return passages
        except (OSError, ValueError, TypeError) as exc:
            log(f"retrieval: reading the source again ({exc})")
    passages = chunk_texts(read_knowledge(knowledge, unreadable_documents, log), chunk_words, overlap_words)
    write_atomic(path, json.dumps([asdict(p) for p in passages], ensure_ascii=False))
    return passages
