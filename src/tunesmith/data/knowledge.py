"""Read a knowledge source for retrieval: a folder of .txt/.md/.pdf/.docx/.html/.jsonl files or one such file.

Raw text (.txt/.md files, `{"text": ...}` rows) is taken whole; a PDF page or a DOCX/HTML section
is one text, named by it (`manual.pdf:p12`); conversations in any training format give their
assistant answers, so a training file serves as its own knowledge source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..settings import UnreadablePolicy
from .documents import DOCUMENT_SUFFIXES, UNREADABLE_KIND, is_document
from .records import Conversation, DataError, DataIssue, Document, read_document_file, read_records, resolve_data_path

KNOWLEDGE_SUFFIXES = (".txt", ".md", *DOCUMENT_SUFFIXES, ".jsonl")


@dataclass(frozen=True)
class KnowledgeText:
    """One document or answer of the knowledge source, before chunking."""

    text: str
    source: str
    """file:line it came from, or file:page (`manual.pdf:p12`) / file:section (`guide.docx:§Permits`)."""


def knowledge_files(path: str | Path) -> list[Path]:
    """The files of a knowledge source, sorted; a DataError when there are none."""
    root = resolve_data_path(path)
    if not root.exists():
        raise DataError([DataIssue(str(path), 0, "knowledge", "does not exist — pass a folder or a "
                                   f"{'/'.join(KNOWLEDGE_SUFFIXES)} file")])
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in KNOWLEDGE_SUFFIXES)
    if not files:
        raise DataError([DataIssue(str(path), 0, "knowledge", f"holds no {'/'.join(KNOWLEDGE_SUFFIXES)} files")])
    return files


def read_knowledge(path: str | Path, unreadable_documents: UnreadablePolicy = "refuse",
                   log: Callable[[str], None] = lambda m: None) -> list[KnowledgeText]:
    """Every document (by page or section) and assistant answer of the knowledge source, in file
    order. A document that cannot be read whole refuses the source, or with
    `unreadable_documents="skip"` is left out and named through `log`."""
    texts: list[KnowledgeText] = []
    issues: list[DataIssue] = []
    for file in knowledge_files(path):
        try:
            records = read_document_file(file) if is_document(file) else read_records(file)
        except DataError as exc:  # every file's problems, not only the first file's
            if unreadable_documents == "skip" and all(i.kind == UNREADABLE_KIND for i in exc.issues):
                log(f"knowledge: skipped {exc}")
            else:
                issues.extend(exc.issues)
            continue
        for record in records:
            if isinstance(record, Document) and record.extracted is not None:
                file_name = record.source.rpartition(":")[0]
                texts.extend(KnowledgeText(p.text, f"{file_name}:{p.label}") for p in record.extracted.parts)
            elif isinstance(record, Document):
                texts.append(KnowledgeText(record.text, record.source))
            elif isinstance(record, Conversation):
                texts.extend(KnowledgeText(m.content, record.source) for m in record.messages
                             if m.role == "assistant" and m.content.strip())
    if issues:
        raise DataError(issues)
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
