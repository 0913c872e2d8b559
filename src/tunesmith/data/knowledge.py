"""Read a knowledge source for retrieval: a folder of .txt/.md/.jsonl files or one such file.

Raw text (.txt/.md files, `{"text": ...}` rows) is taken whole; conversations in any training
format give their assistant answers, so a training file serves as its own knowledge source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .records import Conversation, DataError, DataIssue, Document, read_records, resolve_data_path

KNOWLEDGE_SUFFIXES = (".txt", ".md", ".jsonl")


@dataclass(frozen=True)
class KnowledgeText:
    """One document or answer of the knowledge source, before chunking."""

    text: str
    source: str
    """file:line it came from."""


def knowledge_files(path: str | Path) -> list[Path]:
    """The files of a knowledge source, sorted; a DataError when there are none."""
    root = resolve_data_path(path)
    if not root.exists():
        raise DataError([DataIssue(str(path), 0, "knowledge", "does not exist — pass a folder or a .txt/.md/.jsonl file")])
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in KNOWLEDGE_SUFFIXES)
    if not files:
        raise DataError([DataIssue(str(path), 0, "knowledge", f"holds no {'/'.join(KNOWLEDGE_SUFFIXES)} files")])
    return files


def read_knowledge(path: str | Path) -> list[KnowledgeText]:
    """Every document and assistant answer of the knowledge source, in file order."""
    texts: list[KnowledgeText] = []
    for file in knowledge_files(path):
        for record in read_records(file):
            if isinstance(record, Document):
                texts.append(KnowledgeText(record.text, record.source))
            elif isinstance(record, Conversation):
                texts.extend(KnowledgeText(m.content, record.source) for m in record.messages
                             if m.role == "assistant" and m.content.strip())
    if not texts:
        raise DataError([DataIssue(str(path), 0, "knowledge", "has no text: add documents or answers")])
    return texts


def knowledge_sha256(path: str | Path) -> str:
    """SHA-256 over the names (relative to the source) and bytes of every file of the source."""
    root = resolve_data_path(path)
    digest = hashlib.sha256()
    for file in knowledge_files(path):
        name = file.name if root.is_file() else str(file.relative_to(root))
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()
