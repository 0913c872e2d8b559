"""Data: read user files, tokenize with the chat template, split train/validation.

The only package that opens user data files."""

from __future__ import annotations

from .issues import DataError, DataIssue
from .prepare import QA, PreparedData, answered_questions, data_options, held_out_questions, prepare_data
from .records import Conversation, Document, Message, file_sha256, read_records, resolve_data_path
from .render import (
                     IGNORE,
                     Example,
                     TemplateError,
                     encode_conversation,
                     encode_document,
                     encode_prompt,
                     tokenize_records,
)

__all__ = [
    "Conversation", "DataError", "DataIssue", "Document", "Example", "IGNORE", "Message", "PreparedData",
    "TemplateError", "encode_conversation", "encode_document", "encode_prompt", "file_sha256",
    "QA", "answered_questions", "data_options", "held_out_questions", "prepare_data", "read_records",
    "resolve_data_path", "tokenize_records",
]
