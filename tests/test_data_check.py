"""`tunesmith data check`: one malformed file per error kind, the warnings, the statistics, and the
gate in `train` that refuses bad data before creating anything."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import build_model_dir, faq_rows, write_jsonl
from tunesmith import DataError, load_config, train
from tunesmith.cli import main
from tunesmith.data import encode_conversation, read_records, tokenize_records
from tunesmith.data.check import check_files
from tunesmith.data.limits import CheckLimits
from tunesmith.data.preview import render_preview
from tunesmith.data.render import encode_conversations

# ChatML that refuses anything but user/assistant alternation, as Llama-2 and Mistral templates do.
STRICT = (
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
)
# A template with no end-of-turn marker at all.
PLAIN = "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def line(row: dict) -> bytes:
    return (json.dumps(row) + "\n").encode()


GOOD = b"".join(line(r) for r in faq_rows("chat")[:3])  # lines 1-3
LONG_PROMPT = "What is a building permit? " * 40

# name -> (file name, content, extra CLI flags, expected line, expected field, words in the message)
CORPUS = {
    "invalid JSON": ("a.jsonl", GOOD + b'{"messages": [\n', [], 4, "(line)", "column"),
    "invalid UTF-8": ("a.jsonl", GOOD + b'{"text": "caf\xe9"}\n', [], 4, "(line)", "UTF-8"),
    "line over the cap": ("a.jsonl", GOOD + line(chat("q", "a" * (1 << 20))), [], 4, "(line)", "cap"),
    "nesting too deep": ("a.jsonl", GOOD + line({**chat("q", "a"), "meta": json.loads("[" * 40 + "]" * 40)}), [],
                         4, "(line)", "deeper"),
    "NaN literal": ("a.jsonl", GOOD + b'{"prompt": "q", "completion": "a", "score": NaN}\n', [], 4, "(line)", "NaN"),
    "control character": ("a.jsonl", GOOD + line(chat("a\x00b", "fine")), [], 4, "messages[0].content", "U+0000"),
    "unknown format": ("a.jsonl", GOOD + line({"question": "q", "answer": "a"}), [], 4, "(row)", "no known format"),
    "mixed formats": ("a.jsonl", GOOD + line({"prompt": "q", "completion": "a"}), [], 4, "(row)", "one format"),
    "missing field": ("a.jsonl", line({"instruction": "q"}), [], 1, "output", "missing"),
    "empty field": ("a.jsonl", line({"prompt": " ", "completion": "a"}), [], 1, "prompt", "empty"),
    "wrong type": ("a.jsonl", line({"prompt": 3, "completion": "a"}), [], 1, "prompt", "string"),
    "unknown role": ("a.jsonl", GOOD + line({"messages": [{"role": "user", "content": "q"},
                                                          {"role": "bot", "content": "a"}]}), [], 4,
                     "messages[1].role", "unknown role"),
    "no assistant turn": ("a.jsonl", GOOD + line({"messages": [{"role": "user", "content": "q"}]}), [], 4,
                          "messages", "no assistant"),
    "empty assistant": ("a.jsonl", GOOD + line(chat("q", "")), [], 4, "messages[1].content", "empty"),
    "template rejects roles": ("a.jsonl", GOOD + line({"messages": [{"role": "user", "content": "q"},
                                                                    {"role": "user", "content": "q2"},
                                                                    {"role": "assistant", "content": "a"}]}),
                               [], 4, "messages", "chat template"),
    "all trained tokens truncated": ("a.jsonl", GOOD + line(chat(LONG_PROMPT, "Yes it is.")),
                                     ["--max-seq-tokens", "32"], 4, "messages", "past max_seq_tokens"),
    "json array: bad record": ("a.json",
                               b'[\n{"prompt": "q", "completion": "a"},\n{"prompt": 1,\n"completion": "a"}\n]',
                               [], 3, "prompt", "string"),
    "json array: trailing comma": ("a.json", b'[{"prompt": "q", "completion": "a"},\n]', [], 2, "(line)", "comma"),
    "unpaired surrogate": ("a.jsonl", GOOD + line(chat("q", "a")).replace(b'"q"', b'"q\\ud800"'), [], 4,
                           "messages[0].content", "surrogate"),
    "csv: wrong cell count": ("a.csv", b"prompt,completion\nq,a\nq2,a2,extra\n", [], 3, "(row)", "cells"),
    "empty file": ("a.jsonl", b"\n\n", [], 1, "(file)", "no rows"),
    "control character in a .txt": ("a.txt", b"A document.\nWith a \x07 bell.\n", [], 2, "text", "U+0007"),
}


@pytest.fixture(scope="session")
def strict_model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("strict-model"), chat_template=STRICT)


def run_check(args: list[str]):
    result = CliRunner().invoke(main, ["data", "check", *args, "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


@pytest.mark.parametrize("kind", list(CORPUS))
def test_each_error_kind_is_reported_and_train_creates_nothing(kind, strict_model_dir, tmp_path):
    name, content, flags, want_line, want_field, words = CORPUS[kind]
    path = tmp_path / name
    path.write_bytes(content)
    result, report = run_check([str(path), "--model", str(strict_model_dir), *flags])
    assert result.exit_code == 1, result.output
    hits = [e for e in report["errors"] if e["line"] == want_line and e["field"] == want_field]
    assert hits, report["errors"]
    assert words in hits[0]["message"]
    assert hits[0]["file"] == str(path)

    max_seq = int(flags[1]) if flags else 1024
    config = load_config(None, {"data": str(path), "model": str(strict_model_dir), "output": str(tmp_path / "run"),
                                "max_seq_tokens": max_seq, "max_steps": 1})
    with pytest.raises(DataError) as caught:
        train(config, show_progress=False)
    assert any(i.line == want_line and i.field == want_field for i in caught.value.issues)
    assert not (tmp_path / "run").exists()


def test_errors_are_all_reported_not_only_the_first(tiny_model_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD + b"{oops\n" + line(chat("q", "")) + b"[1]\n" + line(chat("q", 3)))
    result, report = run_check([str(path), "--model", str(tiny_model_dir)])
    assert result.exit_code == 1
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (4, "(line)"), (5, "messages[1].content"), (6, "(line)"), (7, "messages[1].content")]


def test_clean_file_exits_zero_with_stats_that_match_training(tiny_model_dir, tiny_tokenizer, faq_file):
    path = faq_file("chat")
    result, report = run_check([str(path), "--model", str(tiny_model_dir), "--max-seq-tokens", "48"])
    assert result.exit_code == 0, result.output
    assert report["ok"] and report["errors"] == []
    stats = report["stats"]["splits"]["train"]
    records = read_records(path)
    full = [len(encode_conversation(r, tiny_tokenizer, 10_000)[0].input_ids) for r in records]
    assert (stats["rows"], stats["format"]) == (10, "chat")
    assert (stats["tokens"]["min"], stats["tokens"]["max"]) == (min(full), max(full))
    assert stats["tokens"]["total"] == sum(full)
    assert stats["over_max_seq_tokens"] == sum(n > 48 for n in full) > 0
    # What the check says survives truncation is exactly what training keeps.
    examples, _ = tokenize_records(records, tiny_tokenizer, 48)
    assert stats["trained_tokens"] == sum(e.n_trained for e in examples)
    assert stats["end_of_turn_trained"] == 10
    truncation = [w for w in report["warnings"] if w["kind"] == "truncation"]
    assert len(truncation) == stats["over_max_seq_tokens"]


def test_batched_encoding_equals_one_at_a_time(tiny_tokenizer, faq_file):
    records = read_records(faq_file("sharegpt"))
    batched = encode_conversations(records, tiny_tokenizer, 20)
    assert batched == [encode_conversation(r, tiny_tokenizer, 20) for r in records]
    assert any(cut for _, cut in batched)


def warnings_of(report: dict, kind: str) -> list[tuple[int, str]]:
    return [(w["line"], w["field"]) for w in report["warnings"] if w["kind"] == kind]


def test_duplicates_near_duplicates_and_conflicts(tiny_model_dir, tmp_path):
    answer = ("The municipality's building committee decides on building permits within ten weeks of a complete "
              "application, and the decision can be appealed to the county administrative board.")
    rows = faq_rows("chat")[:4] + [
        chat("What is a building permit?", "A building permit is a decision from the municipality."),  # 5: = line 1
        chat("Who grants permits here?", answer),  # 6
        chat("Who grants permits here?", answer.replace("ten", "eleven")),  # 7: near line 6
        chat("How long does a permit take?", "Forever."),  # 8: same question as line 2, other answer
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    result, report = run_check([str(path), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0
    assert warnings_of(report, "duplicate") == [(5, "(row)")]
    assert "line 1" in next(w["message"] for w in report["warnings"] if w["kind"] == "duplicate")
    assert warnings_of(report, "near duplicate") == [(7, "(row)")]
    assert "line 6" in next(w["message"] for w in report["warnings"] if w["kind"] == "near duplicate")
    assert warnings_of(report, "conflicting answers") == [(8, "(row)")]
    stats = report["stats"]["splits"]["train"]
    assert (stats["exact_duplicates"], stats["near_duplicates"]) == (1, 1)


def test_leakage_between_train_and_eval(tiny_model_dir, tmp_path):
    train_rows = faq_rows("chat")
    eval_rows = [
        chat("Something new entirely?", "A fresh answer nobody wrote before."),  # 1: clean
        train_rows[3],  # 2: exact leak of training line 4
        chat(train_rows[5]["messages"][0]["content"], "A different answer."),  # 3: same question as line 6
    ]
    data = write_jsonl(tmp_path / "train.jsonl", train_rows)
    held = write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    result, report = run_check([str(data), "--eval", str(held), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0
    leaks = [(w["file"], w["line"]) for w in report["warnings"] if w["kind"] == "leakage"]
    assert leaks == [(str(held), 2), (str(held), 3)]
    assert report["stats"]["leakage"] == {"exact": 1, "near": 0, "same_prompt": 1}
    assert report["stats"]["splits"]["eval"]["rows"] == 3


def test_text_warnings_pii_control_tokens_short_and_untrained(tiny_model_dir, tmp_path):
    rows = faq_rows("chat")[:3] + [
        chat("Mail me", "Write to jane.doe@example.com today."),  # 4
        chat("Call me", "Ring +46 70 123 45 67 after nine."),  # 5
        chat("Pay", "Use card 4111 1111 1111 1111 please."),  # 6 (Luhn-valid test number)
        chat("Pay again", "Use card 4111 1111 1111 1112 please."),  # 7: fails Luhn, not a card
        chat("Stop?", "Ends here <|im_end|> really."),  # 8
        chat("Ok?", "ok"),  # 9
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},  # 10
    ]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    result, report = run_check([str(path), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, report["errors"]
    pii = [(w["line"], w["message"].split(" (")[0]) for w in report["warnings"] if w["kind"] == "pii"]
    assert pii == [(4, "looks like an e-mail address"), (5, "looks like a phone number"),
                   (6, "looks like a payment card number")]
    assert "jane.doe@example.com" not in result.stdout  # masked, not repeated
    assert report["stats"]["splits"]["train"]["pii"] == {"email": 1, "phone": 1, "card": 1}
    assert warnings_of(report, "control token string") == [(8, "messages[1].content")]
    assert warnings_of(report, "short answer") == [(9, "messages[1].content")]
    assert warnings_of(report, "no trained tokens") == [(10, "messages")]


def test_long_answer_and_end_of_turn_never_trained(tmp_path):
    model = build_model_dir(tmp_path / "plain", chat_template=PLAIN)
    rows = [chat(f"Question {i}?", f"Answer number {i}.") for i in range(8)]
    rows.append(chat("Tell me everything", "word " * 400))  # 9: far longer than the median answer
    rows.append({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a b c"},
                              {"role": "user", "content": "thanks"}]})  # 10: its answer has no end-of-turn
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    result, report = run_check([str(path), "--model", str(model)])
    assert result.exit_code == 0
    assert [w[0] for w in warnings_of(report, "long answer")] == [9]
    assert report["stats"]["splits"]["train"]["end_of_turn_trained"] == 9
    assert len(warnings_of(report, "end of turn not trained")) == 1


@pytest.mark.parametrize("fmt", ["instruction", "prompt_completion", "chat", "text"])
def test_json_array_and_csv_read_like_jsonl(fmt, tmp_path):
    rows = faq_rows(fmt)
    expected = read_records(write_jsonl(tmp_path / "x.jsonl", rows))
    array = tmp_path / "x.json"
    array.write_text("\ufeff[\r\n" + ",\r\n".join(json.dumps(r) for r in rows) + "\r\n]\r\n", encoding="utf-8")
    got = read_records(array)
    assert [r.messages if hasattr(r, "messages") else r.text for r in got] == \
           [r.messages if hasattr(r, "messages") else r.text for r in expected]
    assert [r.source.rsplit(":", 1)[1] for r in got] == [str(i) for i in range(2, 12)]
    import csv
    import io
    buffer = io.StringIO()
    columns = list(rows[0])
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([json.dumps(r[c]) if not isinstance(r[c], str) else r[c] for c in columns])
    table = tmp_path / "x.csv"
    table.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode())
    got = read_records(table)
    assert [r.messages if hasattr(r, "messages") else r.text for r in got] == \
           [r.messages if hasattr(r, "messages") else r.text for r in expected]
    assert got[0].source.endswith(":2")


def test_bom_and_crlf_jsonl_is_clean(tiny_model_dir, tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(line(r)[:-1] + b"\r\n" for r in faq_rows("chat")))
    result, report = run_check([str(path), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0 and report["stats"]["splits"]["train"]["rows"] == 10


def test_a_50_mb_line_is_rejected_fast_in_bounded_memory(tiny_tokenizer, tmp_path):
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"text": "')
        block = b"x" * (1 << 20)
        for _ in range(50):
            handle.write(block)
        handle.write(b'"}\n')
        handle.write(line({"text": "a normal row after it"}))
    tracemalloc.start()
    started = time.perf_counter()
    report = check_files(path, None, tiny_tokenizer, 64)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [(e.line, e.field) for e in report.errors] == [(1, "(line)")]
    assert "52,428,812+ bytes" in report.errors[0].message
    assert report.stats["splits"]["train"]["rows"] == 1  # the row after it is still read
    assert peak < 4 * (1 << 20), f"peak {peak:,} bytes"  # a 50 MB line, at most ~2 MiB held
    assert elapsed < 30.0  # about a second on a quiet machine; a scan that restarts per chunk takes minutes


def test_usage_errors_exit_2(tiny_model_dir, tmp_path):
    missing = str(tmp_path / "missing.jsonl")
    result = CliRunner().invoke(main, ["data", "check", missing, "--model", str(tiny_model_dir)])
    assert result.exit_code == 2
    assert CliRunner().invoke(main, ["data", "check"]).exit_code == 2
    assert CliRunner().invoke(main, ["data", "check", "x.jsonl", "--show", "-1"]).exit_code == 2


def test_preview_highlights_exactly_the_trained_tokens(tiny_model_dir, tiny_tokenizer, faq_file):
    path = faq_file("chat")
    report = check_files(path, None, tiny_tokenizer, 1024, show=2)
    assert len(report.previews) == 2
    markup = render_preview(report.previews[0], tiny_tokenizer, 1024)
    trained = markup.split("[bold green on grey15]")[1].split("[/]")[0]
    assert trained == "A building permit is a decision from the municipality.<|im_end|>"
    assert "What is a building permit?" in markup.split("[bold green on grey15]")[0]
    result = CliRunner().invoke(main, ["data", "check", str(path), "--model", str(tiny_model_dir), "--show", "1"])
    assert result.exit_code == 0 and "A building permit is a decision from the municipality." in result.stdout


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_line_bytes"):
        CheckLimits(max_line_bytes=10)


@pytest.mark.slow
def test_bundled_faq_passes_with_the_real_tokenizer():
    result, report = run_check(["pkg:zaragoza_construction_faq/data/faq-en-alpaca.jsonl"])
    assert result.exit_code == 0, report["errors"]
    stats = report["stats"]["splits"]["train"]
    assert (stats["rows"], stats["format"], stats["over_max_seq_tokens"]) == (503, "instruction", 0)
    assert stats["end_of_turn_trained"] == 503 and stats["exact_duplicates"] == 0
    print(json.dumps(stats, indent=1))


def test_minhash_estimates_jaccard_and_luhn_accepts_only_valid_cards():
    from tunesmith.data.pii import luhn_valid
    from tunesmith.data.similarity import normalize, signature, similarity

    words = [f"w{i}" for i in range(200)]
    a = normalize(" ".join(words))
    b = normalize(" ".join(words[:180] + [f"x{i}" for i in range(20)]))  # 179 of 219 bigrams shared: J=0.82
    c = normalize(" ".join(f"z{i}" for i in range(200)))
    assert similarity(signature(a), signature(a)) == 1.0
    assert abs(similarity(signature(a), signature(b)) - 179 / 219) < 0.15
    assert similarity(signature(a), signature(c)) < 0.1
    assert normalize("Hello,  WORLD!") == normalize("hello world")
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


def test_json_array_records_across_read_chunks_keep_their_line_numbers(tmp_path):
    rows = [{"prompt": f"Question {i}?", "completion": "An answer. " * (i % 7 + 1)} for i in range(3000)]
    path = tmp_path / "many.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r, indent=1) for r in rows) + "\n]\n", encoding="utf-8")
    assert path.stat().st_size > 4 * 65536  # several read chunks
    records = read_records(path)
    assert len(records) == 3000
    per_row = json.dumps(rows[0], indent=1).count("\n") + 1  # lines each indented record takes
    assert [int(r.source.rsplit(":", 1)[1]) for r in records[:3]] == [2, 2 + per_row, 2 + 2 * per_row]
    assert records[-1].messages[0].content == "Question 2999?"
    assert records[-1].source.endswith(f":{2 + 2999 * per_row}")


def test_train_prints_warnings_and_goes_on(tiny_model_dir, tmp_path):
    from rich.console import Console

    rows = faq_rows("chat") + [faq_rows("chat")[0]]  # line 11 duplicates line 1
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    config = load_config(None, {"data": str(path), "model": str(tiny_model_dir), "output": str(tmp_path / "run"),
                                "max_steps": 1, "batch_size": 4})
    console = Console(record=True, width=200)
    train(config, console=console, show_progress=False)
    printed = console.export_text()
    assert "data warning:" in printed and "duplicate x1" in printed and "dup.jsonl:11" in printed
    assert (tmp_path / "run" / "summary.json").exists()


def test_a_model_without_chat_template_is_one_error_not_one_per_row(tmp_path, faq_file):
    model = build_model_dir(tmp_path / "no-template", chat_template=None)
    result, report = run_check([str(faq_file("chat")), "--model", str(model)])
    assert result.exit_code == 1
    assert [(e["line"], e["field"], e["kind"]) for e in report["errors"]] == [(1, "(template)", "template")]
    # raw text needs no template
    result, report = run_check([str(faq_file("text")), "--model", str(model)])
    assert result.exit_code == 0, report["errors"]


def test_a_config_file_names_data_model_and_length(tiny_model_dir, faq_file, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {faq_file('instruction')}\nmodel: {tiny_model_dir}\nmax_seq_tokens: 64\n")
    result, report = run_check([str(config)])
    assert result.exit_code == 0, result.output
    assert report["stats"]["max_seq_tokens"] == 64
    assert report["stats"]["splits"]["train"]["format"] == "instruction"
