"""Stream JSON objects out of .jsonl, .json (an array) and .csv files in bounded memory.

Lines are read in fixed-size chunks, so a line over the cap is reported and skipped without ever
being held whole. Every bad row becomes a DataIssue (file, line, field, what, how to fix).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from pathlib import Path
from typing import IO, Any, Iterator

from .columns import ColumnMap, apply_columns, mapping_hint, renamed
from .formats import FORMAT_FIELDS, GRADED_FORMATS, detect_format
from .issues import DataIssue
from .limits import CheckLimits

CHUNK_BYTES = 1 << 16
"""Read size: 64 KiB keeps memory small and the Python per-chunk overhead negligible."""
BOM = b"\xef\xbb\xbf"
_SPACE = re.compile(r"\s*")
JSON_SUFFIXES = (".json",)
CSV_SUFFIXES = (".csv",)
# CSV cells holding a list of turns are JSON text inside the cell.
_CSV_JSON_COLUMNS = ("messages", "conversations")
_CSV_OPTIONAL_COLUMNS = ("system",)
Row = tuple[int, dict[str, Any], int]
"""(line number, the parsed JSON object, the CSV data row or 0; see DataIssue.row)."""


def iter_lines(handle: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line without its line break or None when over the cap, length in bytes).

    A BOM on the first line and a CR before the LF are removed. At most one chunk plus
    `max_line_bytes` are held at any time.
    """
    line_no = 0
    parts: list[bytes] = []
    held = 0  # bytes in `parts`
    skipping = 0  # > 0: inside a line already over the cap, this many bytes seen so far
    first = True
    while True:
        chunk = handle.read(CHUNK_BYTES)
        if first and chunk.startswith(BOM):
            chunk = chunk[len(BOM):]
        first = False
        if not chunk:
            break
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if skipping:
                skipping += len(piece)
            else:
                parts.append(piece)
                held += len(piece)
                if held > max_line_bytes + 1:  # +1: the CR of a CRLF line does not count
                    skipping, parts, held = held, [], 0
            if end < 0:
                break
            line_no += 1
            yield _finish(line_no, parts, held, skipping, max_line_bytes)
            parts, held, skipping = [], 0, 0
            start = end + 1
    if parts and held or skipping:
        yield _finish(line_no + 1, parts, held, skipping, max_line_bytes)


def _finish(line_no: int, parts: list[bytes], held: int, skipping: int, cap: int) -> tuple[int, bytes | None, int]:
    if skipping:
        return line_no, None, skipping
    line = b"".join(parts)
    if line.endswith(b"\r"):
        line = line[:-1]
    return (line_no, line, len(line)) if len(line) <= cap else (line_no, None, len(line))


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests lists/objects deeper than `limit` levels (the row itself is level 1)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json_line(text: str, file: str, line_no: int, limits: CheckLimits,
                    issues: list[DataIssue]) -> dict[str, Any] | None:
    """One JSON object from one line of text, or None with the problem appended to `issues`."""
    try:
        row = json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        issues.append(DataIssue(file, line_no, "(line)", f"invalid JSON at column {exc.colno}: {exc.msg} "
                             "— write one complete JSON object per line"))
        return None
    except RecursionError:
        issues.append(_too_deep_issue(file, line_no, limits))
        return None
    except ValueError as exc:  # NaN / Infinity from reject_constant
        issues.append(DataIssue(file, line_no, "(line)", f"{exc} — use a number or null"))
        return None
    return check_row_shape(row, file, line_no, limits, issues)


def check_row_shape(row: Any, file: str, line_no: int, limits: CheckLimits,
                    issues: list[DataIssue]) -> dict[str, Any] | None:
    """The row when it is an object of sane depth; otherwise None with the problem in `issues`."""
    if not isinstance(row, dict):
        issues.append(DataIssue(file, line_no, "(line)", f"is a JSON {type(row).__name__}, not an object "
                             "— write one {...} object per line"))
        return None
    if too_deep(row, limits.max_nesting_depth):
        issues.append(_too_deep_issue(file, line_no, limits))
        return None
    return row


def _too_deep_issue(file: str, line_no: int, limits: CheckLimits) -> DataIssue:
    return DataIssue(file, line_no, "(line)", f"nests deeper than {limits.max_nesting_depth} levels "
                  "— flatten the record; a training row needs at most 3")


def _oversize_issue(file: str, line_no: int, n_bytes: int, limits: CheckLimits, what: str = "line") -> DataIssue:
    return DataIssue(file, line_no, f"({what})", f"is {n_bytes:,}+ bytes, over the {limits.max_line_bytes:,}-byte cap "
                  "— split the text into several rows (or raise the cap with --max-line-bytes)")


def iter_rows(path: Path, limits: CheckLimits, issues: list[DataIssue], *, columns: ColumnMap | None = None,
              notes: list[DataIssue] | None = None) -> Iterator[Row]:
    """(line number, row, CSV data row) for every readable object of a .jsonl, .json or .csv file, its
    keys renamed by `columns`; problems go to `issues`, the columns no format reads to `notes` (once)."""
    suffix = path.suffix.lower()
    notes = [] if notes is None else notes
    with path.open("rb") as handle:
        if suffix in CSV_SUFFIXES:
            yield from _csv_rows(handle, str(path), limits, issues, columns or {}, notes)
            return
        rows = _json_array_rows if suffix in JSON_SUFFIXES else _jsonl_rows
        yield from _mapped(rows(handle, str(path), limits, issues), str(path), issues, columns or {}, notes)


def _mapped(rows: Iterator[tuple[int, dict[str, Any]]], file: str, issues: list[DataIssue], columns: ColumnMap,
            notes: list[DataIssue]) -> Iterator[Row]:
    """JSON rows renamed by the mapping; the keys that no row's format reads are noted once, at the end."""
    ignored: dict[str, None] = {}  # ordered set: first seen first
    for line_no, row in rows:
        missing = [column for column in columns.values() if column not in row]
        if missing:
            issues.append(DataIssue(file, line_no, missing[0], f"is not a key of this row, but columns maps "
                                    f"{_target(columns, missing[0])} to it — the row's keys: {', '.join(row)}"))
            continue
        mapped = apply_columns(row, columns)
        fmt = detect_format(mapped)
        if fmt is not None and fmt not in GRADED_FORMATS:
            ignored.update((k, None) for k, new in zip(row, renamed(list(row), columns))
                           if new not in FORMAT_FIELDS[fmt])
        yield line_no, mapped, 0
    if ignored:
        notes.append(_ignored_note(file, list(ignored)))


def _target(columns: ColumnMap, column: str) -> str:
    return next(target for target, c in columns.items() if c == column)


def _ignored_note(file: str, names: list[str]) -> DataIssue:
    return DataIssue(file, 0, "(columns)", f"columns ignored: {', '.join(names)} — no format reads them; map one "
                     "with --columns FIELD=COLUMN if it holds the text to train on", "ignored columns")


def _jsonl_rows(handle: IO[bytes], file: str, limits: CheckLimits,
                issues: list[DataIssue]) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, raw, n_bytes in iter_lines(handle, limits.max_line_bytes):
        if raw is None:
            issues.append(_oversize_issue(file, line_no, n_bytes, limits))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(DataIssue(file, line_no, "(line)", f"is not valid UTF-8 (byte {exc.start + 1}) "
                                 "— re-save the file as UTF-8"))
            continue
        if not text.strip():
            continue
        row = parse_json_line(text, file, line_no, limits, issues)
        if row is not None:
            yield line_no, row


class _ArrayReader:
    """A top-level JSON array read in chunks: the text buffered so far, the position in it, and the
    line number there (`line` is the line at buf[pos])."""

    def __init__(self, handle: IO[bytes], file: str, issues: list[DataIssue]) -> None:
        self.handle, self.file, self.issues = handle, file, issues
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf, self.pos, self.line = "", 0, 1
        self.read_lines = 1  # line number at the end of what was read so far (for UTF-8 errors)
        self.eof = self.eof_error = False

    def more(self) -> bool:
        """Read the next chunk into the buffer; False at the end of the file or on bad UTF-8."""
        chunk = self.handle.read(CHUNK_BYTES)
        try:
            text = self.utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            self.issues.append(DataIssue(self.file, self.read_lines + chunk[: exc.start].count(b"\n"), "(line)",
                                         "is not valid UTF-8 — re-save the file as UTF-8"))
            self.eof = self.eof_error = True
            return False
        self.read_lines += chunk.count(b"\n")
        self.buf, self.pos = self.buf[self.pos:] + text, 0
        self.eof = not chunk
        return bool(chunk)

    def skip_space(self) -> bool:
        """Move past whitespace; False when the file ends first."""
        while True:
            end = _SPACE.match(self.buf, self.pos).end()
            self.line += self.buf.count("\n", self.pos, end)
            self.pos = end
            if self.pos < len(self.buf) or not self.more():
                return self.pos < len(self.buf)

    def problem(self, message: str, line: int | None = None, field: str = "(line)") -> None:
        self.issues.append(DataIssue(self.file, self.line if line is None else line, field, message))

    def decode(self, decoder: json.JSONDecoder, limits: CheckLimits) -> tuple[Any, int] | None:
        """The record at the position and where it ends, reading more as needed; None (with the
        issue recorded) when it is not valid JSON or too large."""
        while True:
            try:
                return decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                held = len(self.buf) - self.pos
                if not self.eof and held <= limits.max_line_bytes and self.more():
                    continue
                if held > limits.max_line_bytes:
                    self.issues.append(_oversize_issue(self.file, self.line, held, limits, what="record"))
                else:
                    self.problem(f"invalid JSON: {exc.msg} — fix the record; the rest of the array is not read",
                                 line=self.line + self.buf.count("\n", self.pos, exc.pos))
                return None
            except RecursionError:
                self.issues.append(_too_deep_issue(self.file, self.line, limits))
                return None
            except ValueError as exc:
                self.problem(f"{exc} — use a number or null")
                return None


def _json_array_rows(handle: IO[bytes], file: str, limits: CheckLimits,
                     issues: list[DataIssue]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of a top-level JSON array, decoded one element at a time (never the whole file)."""
    decoder = json.JSONDecoder(parse_constant=reject_constant)
    reader = _ArrayReader(handle, file, issues)
    if not reader.skip_space() or reader.buf[reader.pos] != "[":
        if not reader.eof_error:
            reader.problem("a .json file must hold one array of records [{...}, {...}] — or write one object per "
                           "line in a .jsonl file", field="(file)")
        return
    reader.pos += 1
    expect_item, after_comma = True, False
    while True:
        if not reader.skip_space():
            if not reader.eof_error:
                reader.problem("the array is not closed — end the file with ]", field="(file)")
            return
        here = reader.buf[reader.pos]
        if here == "]":
            if after_comma:
                reader.problem("invalid JSON: a comma before ] — remove the trailing comma")
            return
        if not expect_item:
            if here != ",":
                reader.problem(f"expected , or ] between records, got {here!r} — separate records with commas")
                return
            reader.pos += 1
            expect_item = after_comma = True
            continue
        decoded = reader.decode(decoder, limits)
        if decoded is None:
            return
        row, end = decoded
        if end - reader.pos > limits.max_line_bytes:
            issues.append(_oversize_issue(file, reader.line, end - reader.pos, limits, what="record"))
        elif (checked := check_row_shape(row, file, reader.line, limits, issues)) is not None:
            yield reader.line, checked
        reader.line += reader.buf.count("\n", reader.pos, end)
        reader.pos = end
        expect_item = after_comma = False


def _csv_rows(handle: IO[bytes], file: str, limits: CheckLimits, issues: list[DataIssue], columns: ColumnMap,
              notes: list[DataIssue]) -> Iterator[Row]:
    """Rows of a CSV whose header (renamed by `columns`) names a known format's columns; turn lists
    are JSON in their cell."""
    # The csv module caps cells at 128 KiB process-wide; lines are already capped, so lift it to match.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_line_bytes))
    reader = csv.reader(_csv_lines(handle, file, limits, issues))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        issues.append(DataIssue(file, 1, "(header)", f"is not valid CSV: {exc}"))
        return
    names = _csv_fields(header, columns, file, issues, notes)
    if names is None:
        return
    last, data_row = reader.line_num, 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            data_row += 1
            issues.append(DataIssue(file, last + 1, "(row)", f"is not valid CSV: {exc} — quote cells that hold commas",
                                    row=data_row))
            last = reader.line_num
            continue
        line_no, last, data_row = last + 1, reader.line_num, data_row + 1
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            issues.append(DataIssue(file, line_no, "(row)", f"has {len(cells)} cells but the header has {len(header)} "
                                 "— quote cells that hold commas", row=data_row))
            continue
        row = _csv_row(names, cells, file, line_no, data_row, issues)
        if row:
            checked = check_row_shape(row, file, line_no, limits, issues)
            if checked is not None:
                yield line_no, checked, data_row


def _csv_lines(handle: IO[bytes], file: str, limits: CheckLimits, issues: list[DataIssue]) -> Iterator[str]:
    for line_no, raw, n_bytes in iter_lines(handle, limits.max_line_bytes):
        if raw is None:
            issues.append(_oversize_issue(file, line_no, n_bytes, limits))
            yield "\n"  # keeps the reader's line count equal to the file's
            continue
        try:
            yield raw.decode("utf-8") + "\n"
        except UnicodeDecodeError:
            issues.append(DataIssue(file, line_no, "(line)", "is not valid UTF-8 — re-save the file as UTF-8"))
            yield "\n"


def _csv_fields(header: list[str], columns: ColumnMap, file: str, issues: list[DataIssue],
                notes: list[DataIssue]) -> list[str | None] | None:
    """Each column's field under the mapping (None: not read), or None with the header's problem in `issues`."""
    missing = [column for column in columns.values() if column not in header]
    if missing:
        issues.append(DataIssue(file, 1, "(header)", f"has no column {missing[0]!r}, but columns maps "
                                f"{_target(columns, missing[0])} to it — the header is: {', '.join(header)}"))
        return None
    names = renamed(header, columns)
    fmt = detect_format(dict.fromkeys(n for n in names if n is not None))
    if fmt is None:
        issues.append(DataIssue(file, 1, "(header)", f"no known format among columns {', '.join(header)} — "
                                + mapping_hint(header)))
        return None
    used = [n if n in FORMAT_FIELDS[fmt] else None for n in names]
    ignored = [h for h, n in zip(header, used) if n is None]
    if ignored:
        notes.append(_ignored_note(file, ignored))
    return used


def _csv_row(names: list[str | None], cells: list[str], file: str, line_no: int, data_row: int,
             issues: list[DataIssue]) -> dict[str, Any]:
    """One CSV record as a row of our fields; empty (with the problem in `issues`) on a bad JSON cell."""
    row: dict[str, Any] = {}
    for name, cell in zip(names, cells):
        if name is None or (name in _CSV_OPTIONAL_COLUMNS and not cell):
            continue
        if name in _CSV_JSON_COLUMNS:
            try:
                row[name] = json.loads(cell, parse_constant=reject_constant)
            except ValueError as exc:
                issues.append(DataIssue(file, line_no, name, f"must be a JSON list of turns in the cell: {exc}",
                                        row=data_row))
                return {}
        else:
            row[name] = cell
    return row
