"""`tunesmith data check DATA --grader GRADER.json`: OpenAI's RFT rows (messages ending with a user turn)
detected as their own format, every row lacking a field the grader reads named with file:line, a grader
that does not parse named at its JSON path, and an RFT file refused for supervised training."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import write_jsonl
from tunesmith import train
from tunesmith.cli import main
from tunesmith.config import load_config
from tunesmith.data.check import check_files
from tunesmith.data.formats import RFT_NOT_SUPERVISED, detect_format
from tunesmith.data.records import DataError

GRADER = {"type": "multi", "name": "m", "calculate_output": "0.5 * city + 0.5 * code", "graders": {
    "city": {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer.city}}",
             "operation": "ilike"},
    "code": {"type": "python", "source": "def grade(sample, item):\n"
                                         "    return float(item['zip'] in sample['output_text'] or item.get('alt'))"}}}


def prompt(question: str, **fields) -> dict:
    return {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}],
            **fields}


ROWS = [prompt("Where is the town hall?", answer={"city": "Zaragoza"}, zip="50001"),  # 1: every field
        prompt("Where is the archive?", answer={"town": "Huesca"}, zip="22001"),     # 2: no answer.city
        prompt("Where is the museum?", answer={"city": "Teruel"}),                   # 3: no zip
        prompt("Where is the library?", answer={"city": "Zaragoza"}, zip="50002")]


def check(args: list[str]):
    result = CliRunner().invoke(main, ["data", "check", *args, "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def test_rft_rows_are_their_own_format():
    assert detect_format(ROWS[0]) == "rft"
    assert detect_format({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) == \
        "chat"
    # a conversation with an answer before its last user turn stays chat, as it always was
    assert detect_format({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                       {"role": "user", "content": "thanks"}]}) == "chat"


def test_grader_fields_missing_from_rft_rows_are_named_with_file_and_line(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rft.jsonl", ROWS)
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GRADER))
    result, report = check([str(data), "--model", str(tiny_model_dir), "--grader", str(grader)])
    assert result.exit_code == 1, result.output
    assert [(e["file"], e["line"], e["field"], e["kind"]) for e in report["errors"]] == [
        (str(data), 2, "item.answer.city", "grader field"), (str(data), 3, "item.zip", "grader field")]
    assert "grader 'city' reads {{item.answer.city}}" in report["errors"][0]["message"]
    assert report["stats"]["splits"]["train"]["format"] == "rft"
    assert not [w for w in report["warnings"] if w["kind"] in ("no trained tokens", "ignored columns")]
    shown = CliRunner().invoke(main, ["data", "check", str(data), "--model", str(tiny_model_dir), "--grader",
                                      str(grader)])
    assert f"{data}:3: item.zip: grader 'code' reads {{{{item.zip}}}}" in shown.output
    write_jsonl(data, [ROWS[0], ROWS[3]])
    result, report = check([str(data), "--model", str(tiny_model_dir), "--grader", str(grader)])
    assert result.exit_code == 0 and report["errors"] == [], result.output


def test_a_grader_that_does_not_parse_is_named_at_its_json_path(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rft.jsonl", ROWS[:1])
    grader = tmp_path / "grader.json"
    broken = json.loads(json.dumps(GRADER))
    broken["graders"]["city"]["operation"] = "contains"
    broken["calculate_output"] = "city + zip"
    grader.write_text(json.dumps(broken))
    result, report = check([str(data), "--model", str(tiny_model_dir), "--grader", str(grader)])
    assert result.exit_code == 1
    assert [(e["file"], e["field"], e["kind"]) for e in report["errors"]] == [
        (str(grader), "$.graders.city.operation", "grader"), (str(grader), "$.calculate_output", "grader")]
    missing, _ = check([str(data), "--model", str(tiny_model_dir), "--grader", str(tmp_path / "none.json")])
    assert missing.exit_code == 2  # a missing file is a usage error, as for DATA


def test_an_rft_file_is_refused_for_supervised_training(tiny_model_dir, tiny_tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "rft.jsonl", ROWS)
    report = check_files(data, None, tiny_tokenizer, 256)
    assert [(e.line, e.field, e.message) for e in report.errors] == [(0, "(file)", RFT_NOT_SUPERVISED)]
    assert check_files(data, None, tiny_tokenizer, 256, reinforcement=True).ok
    config = load_config(None, {"data": str(data), "model": str(tiny_model_dir), "output": str(tmp_path / "run"),
                                "max_steps": 1})
    with pytest.raises(DataError, match="RFT prompts"):
        train(config, show_progress=False)
    assert not (tmp_path / "run").exists()


def test_a_chat_row_missing_its_answer_and_a_mixed_rft_file_are_named(tiny_model_dir, tmp_path):
    answered = {"messages": [{"role": "user", "content": "Who signs?"}, {"role": "assistant", "content": "The mayor."}]}
    data = write_jsonl(tmp_path / "chat.jsonl", [answered, prompt("Who signs the permit?")])
    result, report = check([str(data), "--model", str(tiny_model_dir)])
    assert [(e["line"], e["field"]) for e in report["errors"]] == [(2, "messages")]
    assert "has no assistant turn" in report["errors"][0]["message"]
    write_jsonl(data, [prompt("Who signs the permit?"), answered])
    result, report = check([str(data), "--model", str(tiny_model_dir), "--grader", str(
        write_jsonl(tmp_path / "g.json", [GRADER["graders"]["city"]]))])
    assert (2, "(row)") in [(e["line"], e["field"]) for e in report["errors"]]
    assert "line 1 is an RFT prompt" in next(e["message"] for e in report["errors"] if e["line"] == 2)
