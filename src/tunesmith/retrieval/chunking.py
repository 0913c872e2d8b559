"""Cut knowledge texts into overlapping passages (pure functions over strings)."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.knowledge import KnowledgeText


@dataclass(frozen=True)
class Passage:
    """A retrievable piece of the knowledge source."""

    text: str
    source: str
    """file:line of the text it came from, with '#k' for its k-th chunk when it was cut."""


def chunk_words(text: str, size: int, overlap: int) -> list[str]:
    """Windows of `size` whitespace-separated words, each starting `size - overlap` words after the
    previous, so a fact cut at one window's edge is whole in the next; the last window ends the text."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    words = text.split()
    if len(words) <= size:
        return [" ".join(words)] if words else []
    step = size - overlap
    starts = list(range(0, len(words) - overlap, step))
    return [" ".join(words[s : s + size]) for s in starts]


def chunk_texts(texts: list[KnowledgeText], size: int, overlap: int) -> list[Passage]:
    """Every text cut into passages, in order."""
    passages = []
    for item in texts:
        chunks = chunk_words(item.text, size, overlap)
        if len(chunks) == 1:
            passages.append(Passage(chunks[0], item.source))
        else:
            passages.extend(Passage(c, f"{item.source}#{k}") for k, c in enumerate(chunks))
    return passages
