"""Text out of the documents people have — PDF (pypdf), DOCX (python-docx), HTML (Beautiful Soup) —
kept in the pages or sections it came from, so a passage can say `manual.pdf:p12`.

A file is read whole or not at all: a corrupt, truncated or password-protected file, or a PDF with
no text layer (a scan), raises a DataError that names the file and says what to do; nothing of it is
returned. Whether a caller skips such a file instead of refusing is its `unreadable_documents` setting.
"""

from __future__ import annotations

import contextlib
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .issues import DataError, DataIssue

PDF_SUFFIXES = (".pdf",)
DOCX_SUFFIXES = (".docx",)
HTML_SUFFIXES = (".html", ".htm")
DOCUMENT_SUFFIXES = (*PDF_SUFFIXES, *DOCX_SUFFIXES, *HTML_SUFFIXES)
"""Files whose text is extracted (besides .txt/.md, which are text already)."""
UNREADABLE_KIND = "unreadable document"
"""The data check's name for a document that could not be read whole."""
MAX_LABEL_CHARS = 60
"""A section's heading is cut to this many characters in its label: enough to recognise it."""
PART_SEPARATOR = "\n\n"
"""Between the pages or sections of a document's whole text."""
# pypdf's notes when it had to leave part of a file out: an object it could not find or parse, a
# stream it could not inflate. ("Ignoring wrong pointing object" and "... invalid but object found"
# alone are offsets it repaired: the text is all there.)
_PDF_LOSS = re.compile(r"not defined|PdfReadError|decompress|Invalid|Cannot find")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_HTML_SKIPPED = ("script", "style", "noscript", "template", "head", "svg")
# Elements that end a line of text; inline ones (<b>, <a>, <span>) run on within it.
_HTML_BLOCKS = ("p", "div", "li", "tr", "br", "td", "th", "section", "article", "table", "pre", "blockquote", "dt",
                "dd", "ul", "ol", "header", "footer", "main", "nav", "aside", "figcaption", "caption", "hr")
# A label goes into sources as file:label and passages add '#k': neither ':' nor '#' may appear in it.
_LABEL_UNSAFE = re.compile(r"[:#\s]+")


@dataclass(frozen=True)
class DocumentPart:
    """One page (PDF) or section (DOCX, HTML: the text under one heading) that has text."""

    label: str
    """Where it is in the document: `p12` for a PDF's 12th page, `§Permits` for the section under
    the heading "Permits" (`§start` before the first heading)."""
    text: str


@dataclass(frozen=True)
class ExtractedDocument:
    """The text of a PDF, DOCX or HTML file, by page or section."""

    kind: str
    """pdf, docx or html."""
    parts: tuple[DocumentPart, ...]
    """The pages or sections with text, in order (never empty)."""
    pages: int
    """A PDF's pages, or a DOCX's or HTML page's sections."""
    empty_pages: tuple[int, ...] = ()
    """PDF pages (from 1) without text: figures, blank pages, or scanned pages that need OCR."""

    @property
    def text(self) -> str:
        return PART_SEPARATOR.join(part.text for part in self.parts)

    @property
    def characters(self) -> int:
        return sum(len(part.text) for part in self.parts)

    def empty_pages_message(self) -> str:
        """The data check's warning about the pages without text."""
        shown = ", ".join(f"p{i}" for i in self.empty_pages[:10]) + (" ..." if len(self.empty_pages) > 10 else "")
        return (f"{len(self.empty_pages)} of {self.pages} pages have no text ({shown}): figures or blank pages "
                "are fine, but a scanned page needs OCR (e.g. `ocrmypdf`) before its text can be trained on")

    def summary(self) -> dict[str, object]:
        """What the data check reports about the file."""
        return {"kind": self.kind, "pages": self.pages, "characters": self.characters,
                "empty_pages": list(self.empty_pages)}


def is_document(path: Path) -> bool:
    return path.suffix.lower() in DOCUMENT_SUFFIXES


def extract_document(path: Path) -> ExtractedDocument:
    """The text of a PDF, DOCX or HTML file by page or section, or a DataError saying why it cannot
    be read whole (kind `unreadable document`)."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return _extract_pdf(path)
    if suffix in DOCX_SUFFIXES:
        return _extract_docx(path)
    if suffix in HTML_SUFFIXES:
        return _extract_html(path)
    raise ValueError(f"{path}: not a PDF, DOCX or HTML file")


def unreadable(path: Path, message: str) -> DataError:
    return DataError([DataIssue(str(path), 0, "document", message, UNREADABLE_KIND)])


def _extract_pdf(path: Path) -> ExtractedDocument:
    import pypdf
    from pypdf.errors import DependencyError

    raw = path.read_bytes()
    # pypdf rebuilds a damaged file where it can; a missing end marker means the file was cut
    # short, and what it would rebuild is part of a document. (Readers accept a header within the
    # first 1,024 bytes; 8 KiB after the last end marker is more than any writer leaves.)
    if b"%PDF-" not in raw[:1024] or b"%%EOF" not in raw[-8192:]:
        raise unreadable(path, "is not a whole PDF (no PDF header or end marker: corrupt or cut short)")
    try:
        with _pypdf_notes() as notes:
            reader = pypdf.PdfReader(path, strict=False)
            locked = reader.is_encrypted and not reader.decrypt("")  # an owner password alone still lets anyone read
            texts = [] if locked else [(page.extract_text() or "").strip() for page in reader.pages]
    except DependencyError as exc:  # AES encryption without the `cryptography` package
        raise unreadable(path, f"could not be decrypted ({exc}) — pip install cryptography, or save a copy "
                         "without encryption and pass that") from None
    except Exception as exc:  # noqa: BLE001 — a damaged file fails in pypdf in many ways; each means "unreadable"
        raise unreadable(path, f"could not be read ({type(exc).__name__}: {exc}) — the file is corrupt or uses "
                         "a feature pypdf cannot read; re-save it as PDF and try again") from None
    lost = [note for note in notes if _PDF_LOSS.search(note)]
    if lost:
        raise unreadable(path, f"is damaged: pypdf could not read all of it ({lost[0][:80]}) — re-save it as PDF "
                         "(or print it to PDF) and pass that")
    if locked:
        raise unreadable(path, "is encrypted with a password — save a copy without the password (or print it to "
                         "PDF) and pass that")
    empty = tuple(i for i, text in enumerate(texts, start=1) if not text)
    if len(empty) == len(texts):
        raise unreadable(path, f"has no text layer ({len(texts)} page(s), none with text): it is probably scanned "
                         "— run OCR on it (e.g. `ocrmypdf in.pdf out.pdf`) and pass the result")
    parts = tuple(DocumentPart(f"p{i}", text) for i, text in enumerate(texts, start=1) if text)
    return ExtractedDocument("pdf", parts, len(texts), empty)


@contextlib.contextmanager
def _pypdf_notes() -> Iterator[list[str]]:
    """The warnings pypdf logs meanwhile (its repairs of a damaged file), kept from the console."""
    notes: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: notes.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("pypdf")
    propagate, level = logger.propagate, logger.level
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield notes
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level


def _extract_docx(path: Path) -> ExtractedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(str(path))
        blocks = list(document.iter_inner_content())
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        # A password-protected DOCX is not a zip file at all but an encrypted OLE container.
        raise unreadable(path, f"could not be read as DOCX ({type(exc).__name__}) — the file is corrupt or "
                         "protected with a password; save an unprotected copy as .docx and pass that") from None
    sections = _Sections()
    for block in blocks:
        if isinstance(block, Table):
            for row in block.rows:
                sections.add(" | ".join(cell.text.strip() for cell in row.cells if cell.text.strip()))
            continue
        style = (block.style.name if block.style is not None else "") or ""
        if style.startswith("Heading") or style == "Title":
            sections.start(block.text)
        else:
            sections.add(block.text)
    return sections.finish(path, "docx")


def _extract_html(path: Path) -> ExtractedDocument:
    from bs4 import BeautifulSoup

    # Bytes, so Beautiful Soup picks the encoding from the page's own <meta charset> (or guesses).
    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for element in soup.find_all(_HTML_SKIPPED):
        element.decompose()
    sections = _Sections()
    body = soup.body or soup
    for block in body.find_all(_HTML_BLOCKS):
        block.append(soup.new_string("\n"))
    for heading in body.find_all(_HEADINGS):
        heading.insert_before(soup.new_string("\n\x00"))  # NUL marks where a section starts (&#0; reads as U+FFFD)
        heading.insert_after(soup.new_string("\x00\n"))
    pieces = body.get_text().split("\x00")
    # pieces: text before the first heading, then (heading, text under it) pairs
    sections.add(pieces[0])
    for k in range(1, len(pieces) - 1, 2):
        sections.start(pieces[k])
        sections.add(pieces[k + 1])
    return sections.finish(path, "html")


class _Sections:
    """DOCX and HTML text gathered into sections, one per heading."""

    def __init__(self) -> None:
        self.done: list[DocumentPart] = []
        self.label = "§start"
        self.lines: list[str] = []
        self.count = 0

    def start(self, heading: str) -> None:
        self._close()
        title = _LABEL_UNSAFE.sub(" ", heading).strip()[:MAX_LABEL_CHARS].strip()
        self.label = f"§{title or 'untitled'}"
        self.lines = [" ".join(heading.split())]  # the heading belongs to its section's text

    def add(self, text: str) -> None:
        lines = [" ".join(line.split()) for line in text.splitlines()]
        self.lines.extend(line for line in lines if line)

    def _close(self) -> None:
        if self.lines or self.label != "§start":
            self.count += 1
        if any(self.lines):
            self.done.append(DocumentPart(self.label, "\n".join(self.lines)))

    def finish(self, path: Path, kind: str) -> ExtractedDocument:
        self._close()
        if not self.done:
            raise unreadable(path, f"has no text — is it the right file? (an image-only {kind.upper()} needs OCR)")
        return ExtractedDocument(kind, tuple(self.done), self.count)
