"""Retrieval-augmented answers: a knowledge source cut into passages, embedded with MiniLM,
searched by dot product, and put into the prompt within a token budget."""

from .chunking import Passage, chunk_texts, chunk_words
from .context import RetrievalSettings, Retriever, fit_passages, with_passages
from .embed import Embedder
from .index import VectorIndex, load_or_build_index

__all__ = ["Embedder", "Passage", "RetrievalSettings", "Retriever", "VectorIndex", "chunk_texts", "chunk_words",
           "fit_passages", "load_or_build_index", "with_passages"]
