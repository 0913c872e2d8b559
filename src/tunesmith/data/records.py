"""Read user data files and normalise every supported format to conversations or raw text.

The only module that opens user data. Every bad row is reported (file:line, field, what, how to
fix), not only the first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from .columns import ColumnMap, check_columns, mapping_hint
from .documents import DOCUMENT_SUFFIXES, ExtractedDocument, extract_document, is_document
from .formats import PREFERENCE_FORMATS, detect_format
from .issues import DataError, DataIssue
from .limits import CheckLimits
from .rows import CSV_SUFFIXES, JSON_SUFFIXES, iter_rows

TEXT_SUFFIXES = (".txt", ".md")
DATA_SUFFIXES = (*TEXT_SUFFIXES, *DOCUMENT_SUFFIXES, ".jsonl", *JSON_SUFFIXES, *CSV_SUFFIXES)
"""The files a folder's data is read from; others are skipped (and counted)."""
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
CHAT_ROLES = ("system", "user", "assistant")
# C0 controls (but tab, LF, CR), DEL and C1 controls: invisible, and NUL truncates text in C code.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Half of a UTF-16 pair, from a JSON escape like \ud800: no tokenizer can encode it.
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Message:
    role: str
    """system, user or assistant."""
    content: str
    trained: bool = True
    """Assistant turns only: whether the loss covers this turn (chat format's weight 0|1)."""


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    source: str
    """file:line, carried to every error and log about this row."""


@dataclass(frozen=True)
class Document:
    """Raw text for continued pre-training: every token is trained."""

    text: str
    source: str
    whole_file: bool = False
    """A whole file (not one row's text): each chunk names the line (or page, or section) it starts
    on, and a validation split over several such documents holds each one out whole."""
    extracted: ExtractedDocument | None = None
    """A PDF, DOCX or HTML file's pages or sections (`text` is their text joined); None for text files."""


@dataclass(frozen=True)
class PreferencePair:
    """A prompt and two answers to it, the chosen one preferred (the dpo and orpo objectives)."""

    prompt: tuple[Message, ...]
    """The turns before the answers (system, user, and earlier assistant turns, never trained)."""
    chosen: tuple[Message, ...]
    """The preferred answer's assistant turn(s)."""
    rejected: tuple[Message, ...]
    """The answer the chosen one is preferred over."""
    source: str
    """file:line of the row."""


Record = Conversation | Document | PreferencePair


def resolve_data_path(path: str | Path) -> Path:
    """A file path, or `pkg:PACKAGE/relative/path` for data shipped inside an installed package."""
    text = str(path)
    if not text.startswith("pkg:"):
        return Path(text).expanduser()
    package, _, relative = text[4:].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError([DataIssue(text, 0, "file", f"package '{package}' is not installed — run `make setup`")])
    return Path(list(spec.submodule_search_locations)[0]) / relative


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a data file, or of a folder: over each data file's relative path and content, so a
    renamed, added or edited document changes it (for the manifest and the token cache)."""
    path = resolve_data_path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in data_files(path).files:
            digest.update(f"{file.relative_to(path).as_posix()}\0{_content_sha256(file)}\n".encode())
        return digest.hexdigest()
    return _content_sha256(path)


def _content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FolderFiles:
    """The data files of a folder, and what was left out."""

    files: list[Path]
    """Every .txt/.md/.pdf/.docx/.html/.jsonl/.json/.csv file under the folder, sorted by relative path."""
    hidden: int
    """Files skipped because they or a folder above them start with a dot."""
    other: list[str]
    """Relative paths of files skipped for their suffix."""


def data_files(folder: Path) -> FolderFiles:
    """The folder's data files, recursively, in a stable order (sorted by relative path, so the
    seeded split does not depend on the file system's listing order)."""
    files, other, hidden = [], [], 0
    for file in sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix()):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            hidden += 1
        elif file.suffix.lower() in DATA_SUFFIXES:
            files.append(file)
        else:
            other.append(relative.as_posix())
    return FolderFiles(files, hidden, other)


@dataclass(frozen=True)
class ReadResult:
    records: list[Record]
    notes: list[DataIssue]
    """Warnings about the input as a whole (columns ignored, files skipped), one each."""


def read_records(path: str | Path, limits: CheckLimits | None = None, *, columns: ColumnMap | None = None,
                 system_prompt: str | None = None) -> list[Record]:
    """All records of a data file (.jsonl, .json array, .csv, .txt, .md, .pdf, .docx, .html) or a folder
    of them, or a DataError naming every bad row and every document that cannot be read whole;
    `columns` renames the file's columns to our fields, and `system_prompt` becomes the system turn
    of every conversation that has none."""
    return read_data(path, limits, columns=columns, system_prompt=system_prompt).records


def read_data(path: str | Path, limits: CheckLimits | None = None, *, columns: ColumnMap | None = None,
              system_prompt: str | None = None) -> ReadResult:
    """`read_records`, with the notes about the input as a whole."""
    path = resolve_data_path(path)
    check_readable(path)
    issues: list[DataIssue] = []
    notes: list[DataIssue] = []
    records = [record for _, record in iter_source(path, limits or CheckLimits(), issues, notes,
                                                   columns=check_columns(columns or {}))]
    if not records and not issues:
        issues.append(DataIssue(str(path), 1, "(file)", "has no rows — add one JSON object per line"))
    if issues:
        raise DataError(issues)
    return ReadResult([with_system_prompt(r, system_prompt) for r in records], notes)


def with_system_prompt(record: Record, system_prompt: str | None) -> Record:
    """The record with `system_prompt` as its first turn, when it is a conversation without a system turn."""
    if isinstance(record, PreferencePair) and system_prompt and not any(m.role == "system" for m in record.prompt):
        return replace(record, prompt=(Message("system", system_prompt), *record.prompt))
    if not system_prompt or not isinstance(record, Conversation) or any(m.role == "system" for m in record.messages):
        return record
    return replace(record, messages=(Message("system", system_prompt), *record.messages))


def read_system_prompt(value: str | Path | None) -> str | None:
    """The system prompt a config or flag gives: the text of the file `value` names when it is one,
    else `value` itself as the text; None or blank: no system prompt."""
    if value is None or not str(value).strip():
        return None
    text = str(value)
    path = Path(text).expanduser()
    if "\n" not in text and path.is_file():
        return read_text_file(path)[0].text.strip()
    if "\n" not in text and " " not in text.strip() and path.suffix.lower() in TEXT_SUFFIXES:
        # A bare "style.md" that is not there is a typo, not the text to train with.
        raise DataError([DataIssue(text, 0, "system_prompt", "does not exist — check the path, or write the "
                                   "prompt's text itself")])
    return text


def check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError([DataIssue(str(path), 0, "file", "does not exist — check the path")])
    if path.is_dir() and not data_files(path).files:
        raise DataError([DataIssue(str(path), 0, "file", "is a folder with no .txt, .md, .pdf, .docx, .html, "
                                   ".jsonl, .json or .csv file in it — add the documents or rows to train on")])


def read_text_file(path: Path) -> list[Record]:
    """A .txt/.md file as one document (training chunks it by max_seq_tokens)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError([DataIssue(str(path), line, "text",
                                   "is not valid UTF-8 — re-save the file as UTF-8")]) from None
    if not text.strip():
        raise DataError([DataIssue(str(path), 1, "text", "the file is empty — add the document's text")])
    bad = _CONTROL_CHARS.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise DataError([DataIssue(str(path), line, "text", f"contains the control character U+{ord(bad.group()):04X} "
                                   "— remove it (tabs and line breaks are fine)")])
    return [Document(text=text, source=f"{path}:1", whole_file=True)]


def read_document_file(path: Path) -> list[Record]:
    """A PDF, DOCX or HTML file as one document, its pages or sections kept; a DataError (kind
    `unreadable document`) when it cannot be read whole."""
    extracted = extract_document(path)
    return [Document(extracted.text, f"{path}:{extracted.parts[0].label}", whole_file=True, extracted=extracted)]


def iter_source(path: Path, limits: CheckLimits, issues: list[DataIssue], notes: list[DataIssue], *,
                columns: ColumnMap | None = None) -> Iterator[tuple[str, Record]]:
    """(format, record) for every good record of a data file or of every file in a folder, streamed;
    bad rows and documents that cannot be read whole go to `issues`, remarks about the input as a
    whole to `notes`."""
    if not path.is_dir():
        yield from _iter_file(path, limits, issues, notes, columns)
        return
    found = data_files(path)
    skipped = found.other[:5] + ([f"+{len(found.other) - 5} more"] if len(found.other) > 5 else [])
    if found.hidden or found.other:
        what = ([f"{found.hidden} hidden"] if found.hidden else []) + \
               ([f"{len(found.other)} of other types ({', '.join(skipped)})"] if found.other else [])
        notes.append(DataIssue(str(path), 0, "(folder)", f"skipped {' and '.join(what)} file(s) — tunesmith reads "
                               ".txt, .md, .pdf, .docx, .html, .jsonl, .json and .csv", "skipped files"))
    for file in found.files:
        yield from _iter_file(file, limits, issues, notes, columns)


def _iter_file(path: Path, limits: CheckLimits, issues: list[DataIssue], notes: list[DataIssue],
               columns: ColumnMap | None) -> Iterator[tuple[str, Record]]:
    if is_document(path) or path.suffix.lower() in TEXT_SUFFIXES:
        try:
            yield from (("text", r) for r in (read_document_file if is_document(path) else read_text_file)(path))
        except DataError as exc:
            issues.extend(exc.issues)
        return
    yield from iter_records(path, limits, issues, columns=columns, notes=notes)


def iter_records(path: Path, limits: CheckLimits, issues: list[DataIssue], *, columns: ColumnMap | None = None,
                 notes: list[DataIssue] | None = None) -> Iterator[tuple[str, Record]]:
    """(format, record) for every good row of a .jsonl/.json/.csv file, streamed; bad rows go to `issues`."""
    file_format: str | None = None
    for line_no, row, data_row in iter_rows(path, limits, issues, columns=columns, notes=notes):
        fmt = detect_format(row)
        if fmt is None:
            issues.append(DataIssue(str(path), line_no, "(row)", f"no known format among keys {', '.join(row)} — "
                                    + mapping_hint(list(row)), row=data_row))
            continue
        if file_format is None:
            file_format, first_line = fmt, line_no
        elif fmt == "rft" and file_format == "chat":  # an answer missing from a chat file, most likely
            issues.append(DataIssue(str(path), line_no, "messages", "has no assistant turn — add the answer the "
                                    f"model should learn (line {first_line} and the rows before are chat rows with "
                                    "answers; a file of RFT prompts ends every row with a user turn)", row=data_row))
            continue
        elif fmt != file_format:
            issues.append(DataIssue(str(path), line_no, "(row)", _mixed(fmt, file_format, first_line), row=data_row))
            continue
        before = len(issues)
        record = _to_record(row, fmt, str(path), line_no, issues, data_row)
        if columns:  # name the user's column, not our field it was mapped to
            issues[before:] = [replace(i, field=columns.get(i.field, i.field)) for i in issues[before:]]
        if record is not None:
            yield fmt, record


def _mixed(fmt: str, file_format: str, first_line: int) -> str:
    """A row in another format than the file's."""
    if (fmt, file_format) == ("chat", "rft"):
        return (f"has an assistant answer, but line {first_line} is an RFT prompt (its messages end with a user "
                f"turn, no answer) — keep one format per file: if line {first_line} lacks its answer, add it")
    return f"is in {fmt} format but earlier rows are {file_format} — keep one format per file"


def _to_record(row: dict[str, Any], fmt: str, file: str, line: int, issues: list[DataIssue],
               data_row: int = 0) -> Record | None:
    source = f"{file}:{line}"
    before = len(issues)
    at = partial(DataIssue, file, line, row=data_row)  # at(field, message): a problem of this row

    def need_text(value: Any, name: str, allow_empty: bool = False) -> str:
        if value is None:
            issues.append(at(name, "is missing — add it as a string"))
            return ""
        if not isinstance(value, str):
            issues.append(at(name, f"must be a string, got {type(value).__name__}"))
            return ""
        if not allow_empty and not value.strip():
            issues.append(at(name, "is empty — write the text or remove the row"))
        bad = _CONTROL_CHARS.search(value)
        if bad is not None:
            issues.append(at(name, f"contains the control character U+{ord(bad.group()):04X} at "
                                    f"character {bad.start() + 1} — remove it (tabs and line breaks are fine)"))
        half = _SURROGATES.search(value)
        if half is not None:
            issues.append(at(name, f"contains an unpaired surrogate \\u{ord(half.group()):04x} at "
                                    f"character {half.start() + 1}, which is not valid Unicode — fix the escape"))
        return value

    if fmt == "text":
        text = need_text(row.get("text"), "text")
        return Document(text, source) if len(issues) == before else None

    if fmt == "instruction":
        instruction = need_text(row.get("instruction"), "instruction")
        extra = need_text(row.get("input", ""), "input", allow_empty=True)
        output = need_text(row.get("output"), "output")
        system = row.get("system")
        messages = []
        if system is not None:
            messages.append(Message("system", need_text(system, "system")))
        prompt = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
        messages += [Message("user", prompt), Message("assistant", output)]
        return Conversation(tuple(messages), source) if len(issues) == before else None

    if fmt in PREFERENCE_FORMATS:
        return _to_pair(row, fmt, source, at, need_text, issues)

    if fmt == "prompt_completion":
        prompt = need_text(row.get("prompt"), "prompt")
        completion = need_text(row.get("completion"), "completion")
        messages = (Message("user", prompt), Message("assistant", completion))
        return Conversation(messages, source) if len(issues) == before else None

    chat = fmt in ("chat", "rft")  # an rft row is chat turns ending with the user's: the prompt, no answer
    key, role_key, text_key = ("messages", "role", "content") if chat else ("conversations", "from", "value")
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        issues.append(at(key, "must be a non-empty list of turns"))
        return None
    messages = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            issues.append(at(where, f"must be an object with '{role_key}' and '{text_key}'"))
            continue
        raw_role = turn.get(role_key)
        roles = CHAT_ROLES if chat else tuple(SHAREGPT_ROLES)
        if raw_role not in roles:
            issues.append(at(f"{where}.{role_key}", f"{_unknown(raw_role, 'role')} — use one of {', '.join(roles)}"))
            continue
        role = raw_role if chat else SHAREGPT_ROLES[raw_role]
        content = need_text(turn.get(text_key), f"{where}.{text_key}", allow_empty=role != "assistant")
        weight = turn.get("weight", 1)
        if weight not in (0, 1) or isinstance(weight, bool):
            issues.append(at(f"{where}.weight", f"must be 0 or 1, got {json.dumps(weight)}"))
            continue
        if weight == 0 and role != "assistant":
            issues.append(at(f"{where}.weight", "only assistant turns take a weight"))
            continue
        messages.append(Message(role, content, trained=weight == 1))
    if len(issues) == before and fmt != "rft" and not any(m.role == "assistant" for m in messages):
        issues.append(at(key, "has no assistant turn — add the answer the model should learn"))
    return Conversation(tuple(messages), source) if len(issues) == before else None


def _to_pair(row: dict[str, Any], fmt: str, source: str, at: Any, need_text: Any,
             issues: list[DataIssue]) -> PreferencePair | None:
    """A preference row ({prompt, chosen, rejected}, each a string or a list of chat turns, or OpenAI's
    {input: {messages}, preferred_output, non_preferred_output}) as a pair, or None with its problems."""
    before = len(issues)
    if fmt == "preference":
        names = ("prompt", "chosen", "rejected")
        prompt_value = row.get("prompt")
    else:
        names = ("input.messages", "preferred_output", "non_preferred_output")
        given = row.get("input")
        prompt_value = given.get("messages") if isinstance(given, dict) else given
    prompt = _turns(prompt_value, names[0], "user", at, need_text, issues)
    chosen, rejected = (_turns(row.get(key.split(".")[0]), key, "assistant", at, need_text, issues)
                        for key in names[1:])
    if len(issues) > before:
        return None
    if not all(m.role == "assistant" for m in chosen + rejected):
        issues.append(at(names[1], "the answers may hold assistant turns only — put other turns in the prompt"))
    elif [m.content.strip() for m in chosen] == [m.content.strip() for m in rejected]:
        issues.append(at(names[2], f"is the same as {names[1]} — a pair teaches nothing unless the answers differ"))
    if prompt and prompt[-1].role == "assistant":
        issues.append(at(names[0], "ends with an assistant turn — the answers follow the prompt's last user turn"))
    prompt = tuple(replace(m, trained=False) for m in prompt)  # only the answers are compared
    return PreferencePair(prompt, chosen, rejected, source) if len(issues) == before else None


def _turns(value: Any, name: str, role: str, at: Any, need_text: Any, issues: list[DataIssue]) -> tuple[Message, ...]:
    """A string as one turn of `role`, or a list of {role, content} chat turns; () with the problem in `issues`."""
    if value is None:
        issues.append(at(name, "is missing — a preference row needs prompt, chosen and rejected"))
        return ()
    if isinstance(value, str):
        return (Message(role, need_text(value, name)),)
    if not isinstance(value, list) or not value:
        issues.append(at(name, "must be a string or a non-empty list of {role, content} turns"))
        return ()
    turns = []
    for i, turn in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict) or turn.get("role") not in CHAT_ROLES:
            issues.append(at(f"{where}.role", f"must be an object with a role ({', '.join(CHAT_ROLES)}) and content"))
            continue
        turns.append(Message(turn["role"], need_text(turn.get("content"), f"{where}.content")))
    return tuple(turns)


def _unknown(value: Any, name: str) -> str:
    """'is missing' or 'unknown role "x"', in JSON's words (null, not Python's None)."""
    return f"{name} is missing" if value is None else f"unknown {name} {json.dumps(value)}"
