"""Retrieval-augmented answers: a knowledge source cut into passages, searched by MiniLM embeddings
(dense), by BM25 (words in common) or by both fused, and put into the prompt within a token budget."""

from .chunking import Passage, chunk_texts, chunk_words
from .context import RetrievalSettings, Retriever, fit_passages, with_passages
from .embed import Embedder
from .index import VectorIndex, load_or_build_index
from .lexical import LexicalIndex, fuse_rankings
from .recall import recall_at_k

__all__ = ["Embedder", "LexicalIndex", "Passage", "RetrievalSettings", "Retriever", "VectorIndex", "chunk_texts",
           "chunk_words", "fit_passages", "fuse_rankings", "load_or_build_index", "recall_at_k", "with_passages"]
