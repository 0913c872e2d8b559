"""Graders in OpenAI's JSON format, parsed into frozen dataclasses and checked before anything grades.

The shapes follow developers.openai.com/api/docs/guides/graders and the fine-tuning API's grader
objects. `json_schema` is ours (OpenAI has none): the answer, parsed as JSON, checked against a
schema. Every problem of a grader is reported at once, each with its JSON path and the fix.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..errors import GraderError
from .formula import Formula, FormulaError, parse_formula
from .limits import GraderLimits
from .templates import template_paths

STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "cosine",
                      "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
JUDGE_ROLES = ("system", "developer", "user", "assistant")
TYPES = ("string_check", "text_similarity", "python", "score_model", "multi", "json_schema")


@dataclass(frozen=True)
class StringCheck:
    name: str
    input: str
    """Template: the text checked, usually {{sample.output_text}}."""
    reference: str
    """Template: what it is checked against."""
    operation: str
    """eq (equal), ne (not equal), like (input contains reference), ilike (the same, ignoring case)."""


@dataclass(frozen=True)
class TextSimilarity:
    name: str
    input: str
    reference: str
    evaluation_metric: str
    """One of SIMILARITY_METRICS; docs/graders.md says which library computes each."""
    pass_threshold: float | None = None
    """A reward at or above it passes; None: no pass/fail."""


@dataclass(frozen=True)
class PythonGrader:
    name: str
    source: str
    """Python source defining grade(sample, item) -> float."""
    pass_threshold: float | None = None
    image_tag: str | None = None
    """OpenAI's runtime image; kept, not used: the grader runs in this Python environment."""


@dataclass(frozen=True)
class JudgeMessage:
    role: str
    content: str
    """Template."""


@dataclass(frozen=True)
class ScoreModel:
    name: str
    input: tuple[JudgeMessage, ...]
    model: str
    """The judge's model id, sent as is (the judge URL's server decides what it means)."""
    range: tuple[float, float] = (0.0, 1.0)
    """The judge's score is clipped into it."""
    pass_threshold: float | None = None
    sampling_params: dict[str, Any] = field(default_factory=dict)
    """Sent with the request: seed, top_p, temperature, max_completions_tokens, reasoning_effort."""


@dataclass(frozen=True)
class JsonSchemaCheck:
    name: str
    schema: dict[str, Any]
    """A JSON Schema (draft 2020-12 unless its $schema says otherwise)."""
    input: str = "{{sample.output_text}}"
    """Template of the text parsed as JSON and checked."""


@dataclass(frozen=True)
class MultiGrader:
    name: str
    graders: tuple[tuple[str, Grader], ...]
    """(key, grader) in the file's order; a key is the formula's name for that grader's reward."""
    calculate_output: Formula


Grader = Union[StringCheck, TextSimilarity, PythonGrader, ScoreModel, JsonSchemaCheck, MultiGrader]


def graders_in(grader: Grader) -> list[Grader]:
    """The grader and, for a multi grader, its sub-graders."""
    return [grader, *(g for _, g in grader.graders)] if isinstance(grader, MultiGrader) else [grader]


def load_grader(path: str | Path, limits: GraderLimits = GraderLimits()) -> Grader:
    """The grader in a JSON file; GraderError naming the file, each JSON path and its fix."""
    return parse_grader(read_grader_spec(path), str(path), limits)


def read_grader_spec(path: str | Path) -> Any:
    """A grader file's JSON, unchecked; GraderError when the file is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraderError(f"{path}: no such grader file — check the path") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise GraderError(f"{path}: not valid JSON ({exc}) — a grader is one JSON object, "
                          "e.g. {\"type\": \"string_check\", ...}") from None


def parse_grader(spec: Any, source: str = "grader", limits: GraderLimits = GraderLimits()) -> Grader:
    """A checked grader from its JSON object; GraderError listing every problem, each at its JSON path."""
    problems: list[str] = []
    grader = _parse(spec, "$", problems, limits, nested=False)
    if problems or grader is None:
        raise GraderError("\n".join(f"{source}: {p}" for p in problems))
    return grader


def _parse(spec: Any, at: str, problems: list[str], limits: GraderLimits, nested: bool,
           default_name: str | None = None) -> Grader | None:
    if not isinstance(spec, dict):
        problems.append(f"{at}: is a JSON {type(spec).__name__}, not an object — write {{\"type\": ..., ...}}")
        return None
    kind = spec.get("type")
    if kind == "label_model":
        problems.append(f"{at}.type: label_model assigns labels, not a reward, and is not supported "
                        "— use score_model with a range")
        return None
    if kind not in TYPES:
        problems.append(f"{at}.type: {json.dumps(kind)} is not a grader type — use one of {', '.join(TYPES)}")
        return None
    if kind == "multi" and nested:
        problems.append(f"{at}: a multi grader inside a multi grader is not allowed (as at OpenAI) — "
                        "put its graders in the outer one's graders and its formula in the outer formula")
        return None
    before = len(problems)
    grader = _PARSERS[kind](_Fields(spec, at, problems, _KNOWN[kind], default_name or kind), limits)
    return grader if len(problems) == before else None


class _Fields:
    """Typed reads of one grader object, each problem recorded at its JSON path."""

    def __init__(self, spec: dict[str, Any], at: str, problems: list[str], known: tuple[str, ...],
                 default_name: str) -> None:
        self.spec, self.at, self.problems, self.default_name = spec, at, problems, default_name
        for key in spec:
            if key not in known and key != "type":
                problems.append(f"{at}.{key}: is not a field of a {spec['type']} grader — remove it "
                                f"(its fields: type, {', '.join(known)})")

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.at}.{key}: {message}")

    def text(self, key: str, default: str | None = None, template: bool = True) -> str:
        value = self.spec.get(key, default)
        if not isinstance(value, str):
            self.problem(key, "is missing — it is required" if key not in self.spec
                         else f"is a JSON {type(value).__name__}, not a string")
            return ""
        if template:
            self.check_template(key, value)
        return value

    def check_template(self, key: str, value: str) -> None:
        try:
            list(template_paths(value))
        except ValueError as exc:
            self.problem(key, str(exc))

    def choice(self, key: str, choices: tuple[str, ...], hint: str = "") -> str:
        value = self.text(key, template=False)
        if value and value not in choices:
            self.problem(key, f"'{value}' is not one of {', '.join(choices)}{hint}")
        return value

    def number(self, key: str) -> float | None:
        value = self.spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            self.problem(key, f"is {json.dumps(value)}, not a number")
            return None
        return None if value is None else float(value)

    def name(self) -> str:
        """The grader's name; without one, its key in a multi grader, else its type."""
        return self.text("name", self.default_name, template=False)


def _string_check(f: _Fields, limits: GraderLimits) -> StringCheck:
    hint = " (OpenAI's guide writes neq in its prose; its API takes ne)" if f.spec.get("operation") == "neq" else ""
    return StringCheck(f.name(), f.text("input"), f.text("reference"), f.choice("operation", STRING_OPERATIONS, hint))


def _text_similarity(f: _Fields, limits: GraderLimits) -> TextSimilarity:
    is_rouge = str(f.spec.get("evaluation_metric", "")).startswith("rouge")
    hint = " (write rouge_1 ... rouge_5, rouge_l)" if is_rouge else ""
    return TextSimilarity(f.name(), f.text("input"), f.text("reference"),
                          f.choice("evaluation_metric", SIMILARITY_METRICS, hint), f.number("pass_threshold"))


def _python(f: _Fields, limits: GraderLimits) -> PythonGrader:
    source = f.text("source", template=False)
    if len(source.encode()) >= limits.max_source_bytes:
        f.problem("source", f"is {len(source.encode()):,} bytes: OpenAI's limit, kept here, is under "
                            f"{limits.max_source_bytes:,} — move data out of the source into the rows")
    elif source:
        _check_python_source(f, source)
    tag = f.spec.get("image_tag")
    return PythonGrader(f.name(), source, f.number("pass_threshold"), tag if isinstance(tag, str) else None)


def _check_python_source(f: _Fields, source: str) -> None:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        f.problem("source", f"line {exc.lineno}: {exc.msg} — the source must be valid Python")
        return
    grade = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "grade"]
    if not grade:
        f.problem("source", "defines no top-level function grade(sample, item) -> float — add one")
    elif isinstance(grade[-1], ast.AsyncFunctionDef) or len(grade[-1].args.args) != 2:
        f.problem("source", "grade must be a plain function of exactly two arguments, grade(sample, item)")


def _judge_message(f: _Fields, message: Any, at: str) -> JudgeMessage | None:
    if not isinstance(message, dict):
        f.problems.append(f"{at}: is not an object — write {{\"role\": \"user\", \"content\": \"...\"}}")
        return None
    role, content = message.get("role"), message.get("content")
    if role not in JUDGE_ROLES:
        f.problems.append(f"{at}.role: {json.dumps(role)} is not one of {', '.join(JUDGE_ROLES)}")
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, list):  # content parts: only text ones carry something a text judge reads
        if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
            f.problems.append(f"{at}.content: only text parts ({{\"type\": \"input_text\", \"text\": ...}}) are "
                              "supported — images and audio are not")
            return None
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        f.problems.append(f"{at}.content: is missing or not text")
        return None
    try:
        list(template_paths(content))
    except ValueError as exc:
        f.problems.append(f"{at}.content: {exc}")
    return JudgeMessage(str(role), content)


def _score_model(f: _Fields, limits: GraderLimits) -> ScoreModel:
    messages = f.spec.get("input")
    if not isinstance(messages, list) or not messages:
        f.problem("input", "must be a non-empty list of messages, e.g. [{\"role\": \"user\", \"content\": "
                           "\"Reference: {{item.reference_answer}}. Answer: {{sample.output_text}}\"}]")
        messages = []
    parsed = [_judge_message(f, m, f"{f.at}.input[{i}]") for i, m in enumerate(messages)]
    bounds = f.spec.get("range", [0, 1])
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) and
                                                                   not isinstance(b, bool) for b in bounds)
            and bounds[0] < bounds[1]):
        f.problem("range", f"is {json.dumps(bounds)}: write [low, high] with low < high, e.g. [0, 1]")
        bounds = [0, 1]
    params = f.spec.get("sampling_params", {})
    if not isinstance(params, dict):
        f.problem("sampling_params", "must be an object, e.g. {\"temperature\": 0}")
        params = {}
    return ScoreModel(f.name(), tuple(m for m in parsed if m is not None), f.text("model", template=False),
                      (float(bounds[0]), float(bounds[1])), f.number("pass_threshold"), dict(params))


def _json_schema(f: _Fields, limits: GraderLimits) -> JsonSchemaCheck:
    try:
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for
    except ModuleNotFoundError:
        raise GraderError("a json_schema grader needs the jsonschema package: "
                          "pip install 'tunesmith[graders]'") from None

    schema = f.spec.get("schema")
    if not isinstance(schema, dict):
        f.problem("schema", "must be a JSON Schema object, e.g. {\"type\": \"object\", \"required\": [\"answer\"]}")
        schema = {}
    else:
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            f.problem("schema", f"is not a valid JSON Schema: {exc.message} (at {exc.json_path})")
    return JsonSchemaCheck(f.name(), schema, f.text("input", "{{sample.output_text}}"))


def _multi(f: _Fields, limits: GraderLimits) -> MultiGrader:
    graders = f.spec.get("graders")
    if not isinstance(graders, dict) or not graders:
        f.problem("graders", "must be an object of name -> grader, e.g. {\"name\": {...}, \"email\": {...}}; the "
                             "names are calculate_output's variables" + (" (a list has no names)" if
                                                                         isinstance(graders, list) else ""))
        graders = {}
    parsed = [(key, _parse(g, f"{f.at}.graders.{key}", f.problems, limits, nested=True, default_name=key))
              for key, g in graders.items()]
    formula_text = f.text("calculate_output", template=False)
    formula = None
    if formula_text:
        try:
            formula = parse_formula(formula_text, set(graders), limits.max_formula_chars)
        except FormulaError as exc:
            f.problem("calculate_output", f"{json.dumps(formula_text)} {exc}")
    return MultiGrader(f.name(), tuple((k, g) for k, g in parsed if g is not None),
                       formula or parse_formula("0", set()))


_PARSERS = {"string_check": _string_check, "text_similarity": _text_similarity, "python": _python,
            "score_model": _score_model, "json_schema": _json_schema, "multi": _multi}
_KNOWN = {
    "string_check": ("name", "input", "reference", "operation"),
    "text_similarity": ("name", "input", "reference", "evaluation_metric", "pass_threshold"),
    "python": ("name", "source", "image_tag", "pass_threshold"),
    "score_model": ("name", "input", "model", "range", "pass_threshold", "sampling_params"),
    "json_schema": ("name", "input", "schema"),
    "multi": ("name", "graders", "calculate_output"),
}
