"""Retrieval: knowledge reading, chunking, the cached index, MiniLM search and the prompt budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunesmith.data import DataError, encode_prompt
from tunesmith.data.knowledge import knowledge_sha256, read_knowledge
from tunesmith.retrieval import (
    RetrievalSettings,
    Retriever,
    VectorIndex,
    chunk_words,
    fit_passages,
    load_or_build_index,
    with_passages,
)

FACTS = [
    "The office of Zaragoza AB opens at eight in the morning and closes at five.",
    "A heat pump installation takes two days and costs about 120,000 SEK.",
    "Roof tiles should be replaced every thirty to forty years.",
    "The company warranty on bathroom renovations lasts ten years.",
    "Parking permits for skips are issued by the city's traffic office.",
    "Penguins live in the southern hemisphere and cannot fly.",
]
QUESTIONS = [  # (question, index of the fact that answers it)
    ("When does your office open?", 0),
    ("How much does installing a heat pump cost?", 1),
    ("How often do I need new roof tiles?", 2),
    ("How long is the guarantee on a bathroom renovation?", 3),
    ("Who gives permission to park a skip on the street?", 4),
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def knowledge(tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "office.md").write_text(FACTS[0] + "\n")
    (folder / "notes.txt").write_text(FACTS[1])
    rows = [{"text": FACTS[2]}, {"text": FACTS[3]}]
    (folder / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sub = folder / "faq"
    sub.mkdir()
    chat = [{"messages": [{"role": "user", "content": "skip?"}, {"role": "assistant", "content": FACTS[4]}]},
            {"messages": [{"role": "user", "content": "penguins?"}, {"role": "assistant", "content": FACTS[5]}]}]
    (sub / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    (folder / "ignored.csv").write_text("a,b\n")
    return folder


def test_chunks_overlap_and_cover_the_text():
    words = [f"w{i}" for i in range(10)]
    assert chunk_words(" ".join(words), 4, 1) == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert chunk_words("a b c", 4, 1) == ["a b c"]
    assert chunk_words("   ", 4, 1) == []
    with pytest.raises(ValueError):
        chunk_words("a b", 2, 2)


def test_knowledge_reads_documents_text_rows_and_answers(knowledge):
    texts = read_knowledge(knowledge)
    assert sorted(t.text.strip() for t in texts) == sorted(FACTS)  # answers only, not the questions
    assert all(":" in t.source for t in texts)
    before = knowledge_sha256(knowledge)
    (knowledge / "notes.txt").write_text("changed")
    assert knowledge_sha256(knowledge) != before
    with pytest.raises(DataError, match="does not exist"):
        read_knowledge(knowledge / "missing")


def test_retrieval_returns_the_passage_holding_the_answer(knowledge, embedder):
    retriever = Retriever.load(knowledge, RetrievalSettings(top_k=1), embedder=embedder)
    hits = retriever.retrieve([q for q, _ in QUESTIONS])
    assert [h[0].text for h in hits] == [FACTS[i] for _, i in QUESTIONS]


def test_index_is_cached_and_rebuilt_when_the_source_changes(knowledge, embedder, monkeypatch):
    first = load_or_build_index(knowledge, embedder, 120, 30)
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    calls = []
    real = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda texts: calls.append(len(texts)) or real(texts))
    again = load_or_build_index(knowledge, embedder, 120, 30)
    assert calls == [] and again.passages == first.passages and np.array_equal(again.vectors, first.vectors)
    (knowledge / "notes.txt").write_text("A new fact about windows.")
    rebuilt = load_or_build_index(knowledge, embedder, 120, 30)
    assert calls == [6] and "A new fact about windows." in [p.text for p in rebuilt.passages]


def test_search_ranks_by_dot_product():
    index = VectorIndex([], np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32))
    assert [j for j, _ in index.search(np.array([[0.0, 1.0]], np.float32), 2)[0]] == [2, 1]


def test_prompt_never_exceeds_the_budget(tiny_tokenizer):
    messages = [{"role": "user", "content": "How long does a permit take?"}]
    passages = [f"Passage {i}: " + "usually four to six weeks, sometimes twelve. " * (i + 2) for i in range(3)]
    bare = len(encode_prompt(messages, tiny_tokenizer))
    full = len(encode_prompt(with_passages(messages, passages), tiny_tokenizer))
    kept_counts = []
    for budget in range(bare, full + 5, 7):
        out = fit_passages(messages, passages, tiny_tokenizer, budget, min_passage_tokens=4)
        assert len(encode_prompt(out, tiny_tokenizer)) <= budget
        assert out[-1]["content"].endswith("How long does a permit take?")
        kept_counts.append(out[-1]["content"].count("Passage "))
    assert kept_counts == sorted(kept_counts) and kept_counts[0] == 0 and kept_counts[-1] == 3
    whole = fit_passages(messages, passages, tiny_tokenizer, full)
    assert whole == with_passages(messages, passages)  # everything fits: nothing cut
    cut = fit_passages(messages, passages, tiny_tokenizer, full - 10, min_passage_tokens=4)
    content = cut[-1]["content"]
    assert passages[0] in content and passages[1] in content and passages[2] not in content and "Passage 2" in content


def test_augment_uses_the_smaller_budget(knowledge, embedder, tiny_tokenizer):
    retriever = Retriever.load(knowledge, RetrievalSettings(top_k=3, max_prompt_tokens=60), embedder=embedder)
    messages = [{"role": "user", "content": "When does your office open?"}]
    out = retriever.augment(messages, tiny_tokenizer, 10_000)
    assert len(encode_prompt(out, tiny_tokenizer)) <= 60
    assert retriever.augment([{"role": "assistant", "content": "hi"}], tiny_tokenizer, 100)[-1]["content"] == "hi"
