"""Data as people have it: a column mapping for exports, a folder of documents, a style guide as the
system prompt, and plain words when there is too little data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import faq_rows, write_jsonl
from tunesmith.data import DataError, file_sha256, prepare_data, read_records, tokenize_records
from tunesmith.data.cache import entry_path, passed_check, record_check, tokenize_file
from tunesmith.data.check import check_files
from tunesmith.data.columns import parse_columns
from tunesmith.data.records import Conversation, Message, read_data, read_system_prompt, with_system_prompt
from tunesmith.data.render import IGNORE, encode_text
from tunesmith.errors import ConfigError

HELPDESK = "ticket_id,customer_message,agent_reply,tags,created_at,status,customer_email\n"
MAPPING = {"prompt": "customer_message", "completion": "agent_reply"}


def helpdesk_csv(path: Path) -> Path:
    """Three tickets; the second's message is a quoted cell over three lines, the third has no reply."""
    path.write_text(
        HELPDESK
        + "1,How do I reset my password?,Use the link on the sign-in page.,auth,2026-01-02,closed,a@example.com\n"
        + '2,"My invoice is wrong.\nIt lists two seats.\nI have one.",I have corrected it.,billing,2026-01-03,'
        'closed,b@example.com\n'
        + "3,Can I export my data?,,data,2026-01-04,open,c@example.com\n",
        encoding="utf-8")
    return path


def test_a_helpdesk_export_reads_with_a_mapping_and_a_bad_row_names_line_and_row(tmp_path):
    path = helpdesk_csv(tmp_path / "tickets.csv")
    with pytest.raises(DataError) as caught:
        read_records(path, columns=MAPPING)
    # The third ticket starts on line 6 because the second spans lines 3-5: both are named.
    assert str(caught.value) == f"{path}:6 (row 3): agent_reply: is empty — write the text or remove the row"

    path.write_text(path.read_text(encoding="utf-8").replace(",,data", ",Yes: Settings > Export.,data"),
                    encoding="utf-8")
    read = read_data(path, columns=MAPPING)
    assert [r.messages for r in read.records][1] == (
        Message("user", "My invoice is wrong.\nIt lists two seats.\nI have one."),
        Message("assistant", "I have corrected it."))
    assert [r.source for r in read.records] == [f"{path}:2", f"{path}:3", f"{path}:6"]
    assert [str(n) for n in read.notes] == [
        f"{path}: (columns): columns ignored: ticket_id, tags, created_at, status, customer_email — no format "
        "reads them; map one with --columns FIELD=COLUMN if it holds the text to train on"]


def test_the_ignored_columns_are_one_warning_of_the_data_check(tmp_path, tiny_tokenizer):
    path = helpdesk_csv(tmp_path / "tickets.csv")
    path.write_text(path.read_text(encoding="utf-8").replace(",,data", ",Yes.,data"), encoding="utf-8")
    report = check_files(path, None, tiny_tokenizer, 128, columns=MAPPING)
    assert report.ok
    ignored = [w for w in report.warnings if w.kind == "ignored columns"]
    assert len(ignored) == 1 and "ticket_id, tags, created_at, status, customer_email" in ignored[0].message
    assert report.stats["splits"]["train"]["rows"] == 3


def test_the_header_error_suggests_the_mapping(tmp_path):
    path = helpdesk_csv(tmp_path / "tickets.csv")
    with pytest.raises(DataError) as caught:
        read_records(path)
    assert str(caught.value) == (
        f"{path}:1: (header): no known format among columns ticket_id, customer_message, agent_reply, tags, "
        "created_at, status, customer_email — map them: --columns prompt=customer_message,completion=agent_reply "
        "(config: columns: {prompt: customer_message, completion: agent_reply})")


def test_a_mapping_to_a_missing_column_names_the_file_the_header_and_the_column(tmp_path):
    path = helpdesk_csv(tmp_path / "tickets.csv")
    with pytest.raises(DataError) as caught:
        read_records(path, columns={"prompt": "customer_message", "completion": "agent_answer"})
    assert str(caught.value) == (
        f"{path}:1: (header): has no column 'agent_answer', but columns maps completion to it — the header is: "
        "ticket_id, customer_message, agent_reply, tags, created_at, status, customer_email")


def test_jsonl_question_answer_keys_map_too(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"id": 1, "question": "Hours?", "answer": "9 to 5."},
                                               {"id": 2, "question": "Where?", "answer": "Main St."}])
    with pytest.raises(DataError) as caught:
        read_records(path)
    assert "map them: --columns prompt=question,completion=answer" in caught.value.issues[0].message
    read = read_data(path, columns=parse_columns("prompt=question, completion=answer"))
    assert [r.messages for r in read.records] == [(Message("user", "Hours?"), Message("assistant", "9 to 5.")),
                                                  (Message("user", "Where?"), Message("assistant", "Main St."))]
    assert [n.message.split(" — ")[0] for n in read.notes] == ["columns ignored: id"]


@pytest.mark.parametrize("text, error", [
    ("prompt", "'prompt' is not FIELD=COLUMN"),
    ("prompt=a,=b", "'=b' is not FIELD=COLUMN"),
    ("question=a", "unknown field 'question'"),
    ("prompt=a,prompt=b", "prompt is given twice"),
    ("prompt=a,completion=a", "the column 'a' is mapped twice"),
])
def test_parse_columns_refuses_bad_flags(text, error):
    with pytest.raises(ConfigError, match=error):
        parse_columns(text)


def test_parse_columns():
    assert parse_columns("prompt=customer_message,completion=agent_reply") == MAPPING


def test_no_python_none_in_messages(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"content": "hi"}, {"role": "assistant",
                                                                                  "content": "yo", "weight": None}]}])
    report = check_files(path, None, tiny_tokenizer, 64)
    assert [e.message.split(" — ")[0] for e in report.errors] == ["role is missing", "must be 0 or 1, got null"]
    assert report.stats["splits"]["train"]["format"] == "unknown"  # was None: "0 rows (None)"
    assert "None" not in json.dumps(report.to_json())


DOCS = {
    "a/one.txt": "Policy one.\nRefunds are paid within ten days.\nAsk billing for details.\n" * 3,
    "b/two.md": "# Policy two\n\nOffice hours are nine to five on weekdays.\n" * 3,
    "three.txt": "Policy three: laptops are replaced every four years.\n" * 3,
}


def docs_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    (folder / ".notes.txt").write_text("a hidden file", encoding="utf-8")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff")  # not a document: skipped, and counted
    return folder


def test_a_folder_of_three_documents_holds_one_out_whole(tmp_path, tiny_tokenizer):
    folder = docs_folder(tmp_path)
    data = prepare_data(str(folder), None, tiny_tokenizer, 16, 0.3, seed=0)
    files = {str(folder / name): text for name, text in DOCS.items()}
    assert len(data.held_out_documents) == 1 and data.held_out_documents[0] in files
    assert {e.document for e in data.val} == set(data.held_out_documents)
    assert {e.document for e in data.train} == set(files) - set(data.held_out_documents)
    # Every chunk is text of its own file (so none spans two), and names the line it starts on.
    for example in data.train + data.val:
        assert tiny_tokenizer.decode(list(example.input_ids), skip_special_tokens=True) in files[example.document]
        file, _, line = example.source.rpartition(":")
        assert file == example.document and int(line) >= 1
    lines = [int(e.source.rpartition(":")[2]) for e in data.train + data.val if e.document.endswith("three.txt")]
    assert lines[0] == 1 and lines == sorted(lines) and lines[-1] > 1
    assert any(w.startswith("held out for validation, whole: 1 document(s)") for w in data.warnings)
    assert any("skipped 1 hidden and 1 of other types (photo.jpg) file(s)" in w for w in data.warnings)


def test_a_folder_is_checked_and_hashed(tmp_path, tiny_tokenizer):
    folder = docs_folder(tmp_path)
    report = check_files(folder, None, tiny_tokenizer, 16)
    assert report.ok, report.errors
    assert report.stats["splits"]["train"]["documents"] == 3
    assert [w.kind for w in report.warnings].count("skipped files") == 1
    sha = file_sha256(folder)
    (folder / ".notes.txt").write_text("edited, but hidden", encoding="utf-8")
    assert file_sha256(folder) == sha
    (folder / "three.txt").rename(folder / "four.txt")
    assert file_sha256(folder) != sha
    (folder / "four.txt").rename(folder / "three.txt")
    assert file_sha256(folder) == sha


def test_an_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError,
                       match="is a folder with no .txt, .md, .pdf, .docx, .html, .jsonl, .json or .csv file in it"):
        read_records(tmp_path / "empty")


GUIDE = "Write in a warm, plain voice. Short sentences. Never promise dates."


def test_the_system_prompt_is_rendered_as_context_and_never_trained(faq_file, tiny_tokenizer):
    path = faq_file("chat")
    plain, _ = tokenize_records(read_records(path), tiny_tokenizer, 256)
    guided, _ = tokenize_records(read_records(path, system_prompt=GUIDE), tiny_tokenizer, 256)
    text = tiny_tokenizer.decode(list(guided[0].input_ids))
    assert text.startswith(f"<|im_start|>system\n{GUIDE}<|im_end|>\n<|im_start|>user\n")
    # The same tokens are trained with and without it: the answers and their end of turn, not the guide.
    for with_guide, without in zip(guided, plain):
        trained = [t for t in with_guide.targets if t != IGNORE]
        assert trained == [t for t in without.targets if t != IGNORE]
        assert GUIDE not in tiny_tokenizer.decode(trained)


def test_a_row_with_its_own_system_turn_keeps_it(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}]}, faq_rows("chat")[0]]
    records = read_records(write_jsonl(tmp_path / "d.jsonl", rows), system_prompt=GUIDE)
    assert [r.messages[0].content for r in records] == ["Be terse.", GUIDE]


def test_the_data_check_reports_what_the_system_prompt_adds(faq_file, tiny_tokenizer):
    report = check_files(faq_file("chat"), None, tiny_tokenizer, 256, system_prompt=GUIDE)
    # The template writes a default system turn when a row has none; ours replaces it.
    default = "You are a helpful assistant."
    added = len(encode_text(tiny_tokenizer, GUIDE)) - len(encode_text(tiny_tokenizer, default))
    assert added > 0 and report.stats["system_prompt_tokens"] == added
    assert report.stats["splits"]["train"]["system_prompt_added"] == 10
    assert check_files(faq_file("chat"), None, tiny_tokenizer, 256).stats["system_prompt_tokens"] == 0


def test_read_system_prompt_takes_a_file_or_the_text(tmp_path):
    guide = tmp_path / "voice.md"
    guide.write_text(GUIDE + "\n", encoding="utf-8")
    assert read_system_prompt(str(guide)) == GUIDE
    assert read_system_prompt(GUIDE) == GUIDE
    assert read_system_prompt(None) is None
    with pytest.raises(DataError, match="does not exist"):
        read_system_prompt(str(tmp_path / "voic.md"))


def test_too_little_data_is_said_plainly(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "three.jsonl", faq_rows("chat")[:3])
    data = prepare_data(str(path), None, tiny_tokenizer, 128, 0.1, seed=0)
    assert (len(data.train), len(data.val)) == (2, 1)
    small = [w for w in data.warnings if w.startswith("small data")]
    assert small == [
        "small data: the validation set has 1 example(s), too few to judge the run (under 20, its loss moves by "
        "chance) — add rows (at val_fraction=0.1, 20 held out need about 200 examples) or pass an eval file",
        "small data: 2 training example(s) is tiny — the model tends to memorise them rather than learn the "
        "pattern; aim for 50 or more"]
    report = check_files(path, None, tiny_tokenizer, 128, val_fraction=0.1)
    assert [w.message for w in report.warnings if w.kind == "small data"] == [m.removeprefix("small data: ")
                                                                            for m in small]


def test_enough_data_has_no_small_data_warning(tmp_path, tiny_tokenizer):
    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"{2 * i}."} for i in range(100)]
    path = write_jsonl(tmp_path / "sums.jsonl", rows)
    data = prepare_data(str(path), None, tiny_tokenizer, 128, 0.2, seed=0)
    assert (len(data.train), len(data.val)) == (80, 20)
    assert not [w for w in data.warnings if w.startswith("small data")]


def test_the_token_cache_is_keyed_by_mapping_and_system_prompt(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "qa.jsonl",
                       [{"question": "Hours?", "answer": "9 to 5.", "note": "Closed Sundays."},
                        {"question": "Where?", "answer": "Main St.", "note": "Next to the bank."}])
    sha = file_sha256(path)
    as_answer = {"prompt": "question", "completion": "answer"}
    as_note = {"prompt": "question", "completion": "note"}
    keys = {entry_path(path, sha, tiny_tokenizer, 256), entry_path(path, sha, tiny_tokenizer, 256, columns=as_answer),
            entry_path(path, sha, tiny_tokenizer, 256, columns=as_note),
            entry_path(path, sha, tiny_tokenizer, 256, columns=as_answer, system_prompt=GUIDE)}
    assert len(keys) == 4
    decode = tiny_tokenizer.decode
    first, _ = tokenize_file(path, sha, tiny_tokenizer, 256, columns=as_answer)
    second, _ = tokenize_file(path, sha, tiny_tokenizer, 256, columns=as_note)
    third, _ = tokenize_file(path, sha, tiny_tokenizer, 256, columns=as_answer, system_prompt=GUIDE)
    assert "9 to 5." in decode(list(first[0].input_ids)) and "Closed Sundays." in decode(list(second[0].input_ids))
    assert GUIDE in decode(list(third[0].input_ids)) and GUIDE not in decode(list(first[0].input_ids))
    record_check(path, None, tiny_tokenizer, 256, ["a warning"], columns=as_answer)
    assert passed_check(path, None, tiny_tokenizer, 256, columns=as_answer) == ["a warning"]
    assert passed_check(path, None, tiny_tokenizer, 256, columns=as_note) is None
    assert passed_check(path, None, tiny_tokenizer, 256, columns=as_answer, system_prompt=GUIDE) is None


def test_conversations_are_unchanged_without_a_system_prompt():
    conversation = Conversation((Message("user", "Hi"), Message("assistant", "Hello.")), "x:1")
    assert with_system_prompt(conversation, None) is conversation
    assert with_system_prompt(conversation, "") is conversation


def test_a_duplicate_in_a_folder_names_the_other_file(tmp_path, tiny_tokenizer):
    folder = tmp_path / "docs"
    (folder / "hr").mkdir(parents=True)
    text = "The office opens at nine and closes at five on weekdays. " * 4
    (folder / "hr" / "hours.txt").write_text(text)
    (folder / "policy.md").write_text(text)
    (folder / "other.md").write_text("Parking is free for visitors in the north car park. " * 4)
    report = check_files(folder, None, tiny_tokenizer, 64)
    duplicate = [w for w in report.warnings if w.kind == "duplicate"]
    assert len(duplicate) == 1 and duplicate[0].file.endswith("policy.md")
    assert duplicate[0].message.startswith(f"duplicates {folder / 'hr' / 'hours.txt'}:1 ")
