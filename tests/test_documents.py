"""Documents as people have them: PDF, DOCX and HTML read by page or section into knowledge passages,
training chunks and the data check; unreadable files named and nothing of them used; BM25, rank
fusion and recall@k.

Fixtures are written here: python-docx writes the DOCX, fpdf2 (a test-only dependency) the PDFs
with a text layer and the image-only one, pypdf encrypts one, and the corrupt one is a PDF cut short.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.data import DataError, prepare_data, read_records
from tunesmith.data.check import check_files
from tunesmith.data.documents import UNREADABLE_KIND, extract_document
from tunesmith.data.knowledge import read_knowledge
from tunesmith.data.render import encode_document
from tunesmith.retrieval import RetrievalSettings, Retriever, chunk_texts, fuse_rankings, recall_at_k

PAGES = [
    "Building permits. A bygglov from the municipality is needed for new houses and extensions.",
    "",  # a page without text: a figure, say
    "Tax deductions. The ROT deduction covers 30 percent of the labour cost of a renovation.",
]
HTML = """<html><head><title>Rules</title><style>p { color: red }</style></head><body>
<p>Welcome to the rules page.</p>
<h1>Energy rules</h1><p>The <b>BBR</b> sets how much energy a new house may use.</p>
<script>var tracking = "not text";</script>
<h2>Fire safety: doors</h2><ul><li>Fire doors must close by themselves.</li></ul>
</body></html>"""


def write_pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
    pdf.output(str(path))
    return path


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_paragraph("Zaragoza AB guide for home owners.")
    document.add_heading("Permits: when", level=1)
    document.add_paragraph("An extension over 15 square metres needs a bygglov.")
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Attefall house"
    table.cell(0, 1).text = "notification only"
    document.add_heading("Warranty", level=2)
    document.add_paragraph("Bathroom renovations carry a ten year warranty.")
    document.save(str(path))
    return path


def write_scanned_pdf(path: Path, tmp_path: Path) -> Path:
    from fpdf import FPDF
    from PIL import Image

    image = tmp_path / "scan.png"
    Image.new("RGB", (60, 20), "white").save(image)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(str(image), x=10, y=10, w=120)  # an image and no text: what a scanner makes
    pdf.output(str(path))
    return path


def write_encrypted_pdf(path: Path, tmp_path: Path) -> Path:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=write_pdf(tmp_path / "plain.pdf", PAGES))
    writer.encrypt(user_password="secret", owner_password="owner")
    writer.write(str(path))
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def library(tmp_path) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    write_pdf(folder / "manual.pdf", PAGES)
    write_docx(folder / "guide.docx")
    (folder / "rules.html").write_text(HTML, encoding="utf-8")
    return folder


@pytest.fixture
def broken(tmp_path) -> dict[str, Path]:
    """A PDF cut short, one damaged inside, an encrypted and an image-only one, each in its own folder
    beside a good text file."""
    made = {}
    for name in ("corrupt", "damaged", "encrypted", "scanned"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "good.txt").write_text("Roof tiles last thirty to forty years.", encoding="utf-8")
        made[name] = folder / f"{name}.pdf"
    whole = write_pdf(tmp_path / "whole.pdf", PAGES).read_bytes()
    made["corrupt"].write_bytes(whole[:400])  # cut short
    damaged = bytearray(whole)
    at = whole.index(b"endstream") + len(b"endstream")  # after the first page's text: the second page's object
    damaged[at + 10 : at + 60] = b"x" * 50  # overwritten in place: header and end marker intact
    made["damaged"].write_bytes(bytes(damaged))
    write_encrypted_pdf(made["encrypted"], tmp_path)
    write_scanned_pdf(made["scanned"], tmp_path)
    return made


def test_pdf_docx_and_html_round_trip_into_passages_with_their_sources(library):
    texts = read_knowledge(library)
    by_source = {Path(t.source).name: t.text for t in texts}
    assert list(by_source) == ["guide.docx:§start", "guide.docx:§Permits when", "guide.docx:§Warranty",
                               "manual.pdf:p1", "manual.pdf:p3", "rules.html:§start", "rules.html:§Energy rules",
                               "rules.html:§Fire safety doors"]
    assert by_source["manual.pdf:p3"] == PAGES[2]  # the empty page 2 gives no passage
    assert "Attefall house | notification only" in by_source["guide.docx:§Permits when"]  # tables are read
    assert by_source["rules.html:§Energy rules"] == "Energy rules\nThe BBR sets how much energy a new house may use."
    assert "tracking" not in " ".join(by_source.values()) and "color" not in " ".join(by_source.values())
    passages = chunk_texts(texts, size=8, overlap=2)  # long sections are cut: each piece keeps its source
    assert {p.source.rpartition("#")[0] or p.source for p in passages} == {t.source for t in texts}
    assert any(p.source.endswith("manual.pdf:p3#1") for p in passages)
    retriever = Retriever.load(library, RetrievalSettings(retriever="bm25", top_k=1))
    (hit,), = retriever.retrieve(["How much of the labour does the ROT deduction cover?"])
    assert hit.source == f"{library / 'manual.pdf'}:p3" and "30 percent" in hit.text


@pytest.mark.parametrize("name, message", [
    ("corrupt", "is not a whole PDF"),
    ("damaged", "is damaged: pypdf could not read all of it"),
    ("encrypted", "is encrypted with a password"),
    ("scanned", "has no text layer"),
])
def test_an_unreadable_pdf_is_named_and_nothing_of_it_is_indexed(broken, name, message):
    pdf = broken[name]
    with pytest.raises(DataError) as refused:
        read_knowledge(pdf.parent)
    assert [i.file for i in refused.value.issues] == [str(pdf)] and message in str(refused.value)
    assert refused.value.issues[0].kind == UNREADABLE_KIND
    with pytest.raises(DataError, match=message):
        Retriever.load(pdf.parent, RetrievalSettings(retriever="bm25"))
    logged: list[str] = []
    texts = read_knowledge(pdf.parent, "skip", logged.append)
    assert [Path(t.source).name for t in texts] == ["good.txt:1"]
    assert len(logged) == 1 and str(pdf) in logged[0] and message in logged[0]
    retriever = Retriever.load(pdf.parent, RetrievalSettings(retriever="bm25", unreadable_documents="skip"))
    assert [Path(p.source).name for p in retriever.passages] == ["good.txt:1"]


def test_an_owner_password_alone_does_not_stop_reading(tmp_path):
    import pypdf

    writer = pypdf.PdfWriter(clone_from=write_pdf(tmp_path / "plain.pdf", PAGES))
    writer.encrypt(user_password="", owner_password="owner")  # opens without a password: printing rights only
    writer.write(str(tmp_path / "locked.pdf"))
    assert [p.label for p in extract_document(tmp_path / "locked.pdf").parts] == ["p1", "p3"]


def test_a_corrupt_docx_and_an_empty_html_are_named(tmp_path):
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "empty.html").write_text("<html><body><script>x()</script></body></html>", encoding="utf-8")
    with pytest.raises(DataError) as refused:
        read_knowledge(tmp_path)
    assert [(Path(i.file).name, i.kind) for i in refused.value.issues] == [("bad.docx", UNREADABLE_KIND),
                                                                          ("empty.html", UNREADABLE_KIND)]
    assert "could not be read as DOCX" in str(refused.value) and "has no text" in str(refused.value)


def test_training_chunks_name_their_page_or_section_and_documents_are_held_out_whole(library, tiny_tokenizer):
    data = prepare_data(str(library), None, tiny_tokenizer, 16, 0.3, seed=0)
    examples = data.train + data.val
    files = {str(library / n) for n in ("manual.pdf", "guide.docx", "rules.html")}
    assert {e.document for e in examples} == files and len(data.held_out_documents) == 1
    assert {e.document for e in data.val} == set(data.held_out_documents)
    manual = [e.source.rpartition(":")[2] for e in examples if e.document.endswith("manual.pdf")]
    assert manual[0] == "p1" and manual[-1] == "p3" and set(manual) == {"p1", "p3"}
    guide = [e.source.rpartition(":")[2] for e in examples if e.document.endswith("guide.docx")]
    assert guide[0] == "§start" and guide[-1] == "§Warranty"


def test_a_chunk_is_named_by_the_page_it_starts_on(library, tiny_tokenizer):
    (document,) = read_records(library / "manual.pdf")
    whole = tiny_tokenizer(document.text, add_special_tokens=False)["input_ids"]
    first_page = len(tiny_tokenizer(PAGES[0] + "\n\n", add_special_tokens=False)["input_ids"])
    size = first_page - 1  # the second chunk starts on page 1's last token, the third on page 3
    examples = encode_document(document, tiny_tokenizer, size)
    assert [e.source.rpartition(":")[2] for e in examples[:3]] == ["p1", "p1", "p3"]
    assert sum(len(e.input_ids) for e in examples) == len(whole) + 1  # the same tokens (+ EOS) as the whole text


def test_data_check_reports_pages_characters_and_empty_pages(library, broken, tiny_tokenizer):
    report = check_files(library, None, tiny_tokenizer, 64)
    assert report.ok, report.errors
    files = {Path(d["file"]).name: d for d in report.stats["splits"]["train"]["document_files"]}
    assert files["manual.pdf"] == {"file": str(library / "manual.pdf"), "kind": "pdf", "pages": 3,
                                   "characters": len(PAGES[0]) + len(PAGES[2]), "empty_pages": [2]}
    assert files["guide.docx"]["kind"] == "docx" and files["guide.docx"]["pages"] == 3
    assert files["rules.html"]["pages"] == 3 and files["rules.html"]["empty_pages"] == []
    (empty,) = [w for w in report.warnings if w.kind == "empty pages"]
    assert empty.file == str(library / "manual.pdf") and "1 of 3 pages have no text (p2)" in empty.message
    for name, pdf in broken.items():
        refused = check_files(pdf.parent, None, tiny_tokenizer, 64)
        assert [(e.file, e.kind) for e in refused.errors] == [(str(pdf), UNREADABLE_KIND)], name


def test_training_refuses_a_folder_with_an_unreadable_document(broken, tiny_tokenizer):
    with pytest.raises(DataError, match="has no text layer"):
        prepare_data(str(broken["scanned"].parent), None, tiny_tokenizer, 16, 0.3, seed=0)


def test_recall_at_k_on_known_answers():
    relevant = [[True, False, False], [False, False, True], [False, False, False], [False, True]]
    assert recall_at_k(relevant, (1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 0.75}
    assert recall_at_k([], (1,)) == {1: 0.0}


def test_reciprocal_rank_fusion_prefers_agreement():
    # With rrf_k = 1: passage 2 scores 1/(1+3) + 1/(1+1) = 0.75, passage 5 1/3 + 1/3 = 0.67, and
    # passage 0, first in one ranking but absent from the other, 1/2 = 0.5.
    assert fuse_rankings([[0, 5, 2], [2, 5]], rrf_k=1) == [2, 5, 0]
    assert fuse_rankings([[3, 1], []], rrf_k=60) == [3, 1]  # a ranking with no matches changes nothing


def test_retrievers_find_the_jargon_passage(library, embedder):
    question = "Do I need a bygglov for an extension?"
    found = {}
    for kind in ("dense", "bm25", "hybrid"):
        retriever = Retriever.load(library, RetrievalSettings(retriever=kind, top_k=2), embedder=embedder)
        assert (retriever.index is None) == (kind == "bm25") and (retriever.lexical is None) == (kind == "dense")
        found[kind] = [Path(p.source).name for p in retriever.retrieve([question])[0]]
    assert "guide.docx:§Permits when" in found["bm25"] and "guide.docx:§Permits when" in found["hybrid"]
    assert all(len(hits) == 2 for hits in found.values())


def test_bm25_passages_are_cached_until_a_file_changes(library, monkeypatch):
    settings = RetrievalSettings(retriever="bm25")
    first = Retriever.load(library, settings)
    with monkeypatch.context() as patched:
        patched.setattr("tunesmith.data.records.extract_document", lambda path: pytest.fail(f"{path} read again"))
        assert Retriever.load(library, settings).passages == first.passages
    (library / "rules.html").write_text(HTML.replace("BBR", "Boverket's rules"), encoding="utf-8")
    assert any("Boverket" in p.text for p in Retriever.load(library, settings).passages)
