"""Read user data files and normalise every supported format to conversations or raw text.

The only module that opens user data. Every bad row is reported (file:line, field, what, how to
fix), not only the first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .formats import detect_format
from .issues import DataError, DataIssue
from .limits import CheckLimits
from .rows import iter_rows

TEXT_SUFFIXES = (".txt", ".md")
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


Record = Conversation | Document


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
    digest = hashlib.sha256()
    with open(resolve_data_path(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_records(path: str | Path, limits: CheckLimits | None = None) -> list[Record]:
    """All records of a data file (.jsonl, .json array, .csv, .txt, .md), or a DataError naming every bad row."""
    path = resolve_data_path(path)
    check_readable(path)
    if path.suffix.lower() in TEXT_SUFFIXES:
        return read_text_file(path)
    issues: list[DataIssue] = []
    records = [record for _, record in iter_records(path, limits or CheckLimits(), issues)]
    if not records and not issues:
        issues.append(DataIssue(str(path), 1, "(file)", "has no rows — add one JSON object per line"))
    if issues:
        raise DataError(issues)
    return records


def check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError([DataIssue(str(path), 0, "file", "does not exist — check the path")])
    if path.is_dir():
        raise DataError([DataIssue(str(path), 0, "file",
                                   "is a directory — pass a .jsonl, .json, .csv, .txt or .md file")])


def read_text_file(path: Path) -> list[Record]:
    """A .txt/.md file as one document (training chunks it by max_seq_tokens)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError([DataIssue(str(path), line, "text", "is not valid UTF-8 — re-save the file as UTF-8")]) from None
    if not text.strip():
        raise DataError([DataIssue(str(path), 1, "text", "the file is empty — add the document's text")])
    bad = _CONTROL_CHARS.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise DataError([DataIssue(str(path), line, "text", f"contains the control character U+{ord(bad.group()):04X} "
                                   "— remove it (tabs and line breaks are fine)")])
    return [Document(text=text, source=f"{path}:1")]


def iter_records(path: Path, limits: CheckLimits, issues: list[DataIssue]) -> Iterator[tuple[str, Record]]:
    """(format, record) for every good row of a .jsonl/.json/.csv file, streamed; bad rows go to `issues`."""
    file_format: str | None = None
    for line_no, row in iter_rows(path, limits, issues):
        fmt = detect_format(row)
        if fmt is None:
            issues.append(DataIssue(str(path), line_no, "(row)", f"no known format among keys {sorted(row)} — use "
                                    "messages, conversations, instruction/output, prompt/completion or text"))
            continue
        if file_format is None:
            file_format = fmt
        elif fmt != file_format:
            issues.append(DataIssue(str(path), line_no, "(row)", f"is in {fmt} format but earlier rows are {file_format} "
                                    "— keep one format per file"))
            continue
        record = _to_record(row, fmt, str(path), line_no, issues)
        if record is not None:
            yield fmt, record


def _to_record(row: dict[str, Any], fmt: str, file: str, line: int, issues: list[DataIssue]) -> Record | None:
    source = f"{file}:{line}"
    before = len(issues)

    def need_text(value: Any, name: str, allow_empty: bool = False) -> str:
        if value is None:
            issues.append(DataIssue(file, line, name, "is missing — add it as a string"))
            return ""
        if not isinstance(value, str):
            issues.append(DataIssue(file, line, name, f"must be a string, got {type(value).__name__}"))
            return ""
        if not allow_empty and not value.strip():
            issues.append(DataIssue(file, line, name, "is empty — write the text or remove the row"))
        bad = _CONTROL_CHARS.search(value)
        if bad is not None:
            issues.append(DataIssue(file, line, name, f"contains the control character U+{ord(bad.group()):04X} at "
                                    f"character {bad.start() + 1} — remove it (tabs and line breaks are fine)"))
        half = _SURROGATES.search(value)
        if half is not None:
            issues.append(DataIssue(file, line, name, f"contains an unpaired surrogate \\u{ord(half.group()):04x} at "
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

    if fmt == "prompt_completion":
        prompt = need_text(row.get("prompt"), "prompt")
        completion = need_text(row.get("completion"), "completion")
        messages = (Message("user", prompt), Message("assistant", completion))
        return Conversation(messages, source) if len(issues) == before else None

    key, role_key, text_key = ("messages", "role", "content") if fmt == "chat" else ("conversations", "from", "value")
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        issues.append(DataIssue(file, line, key, "must be a non-empty list of turns"))
        return None
    messages = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            issues.append(DataIssue(file, line, where, f"must be an object with '{role_key}' and '{text_key}'"))
            continue
        raw_role = turn.get(role_key)
        roles = CHAT_ROLES if fmt == "chat" else tuple(SHAREGPT_ROLES)
        if raw_role not in roles:
            issues.append(DataIssue(file, line, f"{where}.{role_key}", f"unknown role {raw_role!r} — use one of {', '.join(roles)}"))
            continue
        role = raw_role if fmt == "chat" else SHAREGPT_ROLES[raw_role]
        content = need_text(turn.get(text_key), f"{where}.{text_key}", allow_empty=role != "assistant")
        weight = turn.get("weight", 1)
        if weight not in (0, 1) or isinstance(weight, bool):
            issues.append(DataIssue(file, line, f"{where}.weight", f"must be 0 or 1, got {weight!r}"))
            continue
        if weight == 0 and role != "assistant":
            issues.append(DataIssue(file, line, f"{where}.weight", "only assistant turns take a weight"))
            continue
        messages.append(Message(role, content, trained=weight == 1))
    if len(issues) == before and not any(m.role == "assistant" for m in messages):
        issues.append(DataIssue(file, line, key, "has no assistant turn — add the answer the model should learn"))
    return Conversation(tuple(messages), source) if len(issues) == before else None
