"""Reading the five formats, and errors that name file, line and field."""

import pytest

from conftest import write_jsonl
from tunesmith.data import Conversation, DataError, Document, read_records


@pytest.mark.parametrize("fmt", ["chat", "sharegpt", "instruction", "prompt_completion"])
def test_formats_normalise_to_the_same_conversations(fmt, faq_file):
    records = read_records(faq_file(fmt))
    assert len(records) == 10 and all(isinstance(r, Conversation) for r in records)
    assert [m.role for m in records[0].messages] == ["user", "assistant"]
    assert records[0].messages[1].content == "A building permit is a decision from the municipality."
    assert records[3].source.endswith(":4")


def test_text_files_and_text_rows(tmp_path, faq_file):
    md = tmp_path / "doc.md"
    md.write_text("# Title\n\nSome domain text.\n", encoding="utf-8")
    assert read_records(md) == [Document("# Title\n\nSome domain text.\n", f"{md}:1", whole_file=True)]
    assert all(isinstance(r, Document) for r in read_records(faq_file("text")))


def test_instruction_input_is_appended(tmp_path):
    path = write_jsonl(tmp_path / "i.jsonl", [{"instruction": "Translate", "input": "hej", "output": "hi"}])
    assert read_records(path)[0].messages[0].content == "Translate\n\nhej"


def test_every_bad_row_is_reported_with_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
        '{"messages": [{"role": "robot", "content": "q"}]}\n'
        'not json\n'
        '{"messages": [{"role": "user", "content": "q"}]}\n'
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 7}]}\n'
        '{"prompt": "p", "completion": "c"}\n',
        encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_records(path)
    found = {(i.line, i.field) for i in info.value.issues}
    assert found == {(2, "messages[0].role"), (3, "(line)"), (4, "messages"), (5, "messages[1].content"), (6, "(row)")}
    text = str(info.value)
    assert f"{path}:3: (line): invalid JSON at column 1" in text
    assert "keep one format per file" in text


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl")
