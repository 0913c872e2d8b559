"""Grade answers: `grade(grader, sample, item)` for one, `grade_rows` for many, through a GradingSession
that keeps what is costly to start (the python graders' processes, the judge's HTTP client) open
across samples.

The rule for failures is OpenAI's: a grader that cannot grade a sample (a template field missing, an
exception in a python grader, a judge's reply without a score) gives that sample 0, and the reason
goes to the sample's `errors`; it never stops the other samples.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..errors import GraderError
from .judge import Judge, JudgeError, ask_judge, judge_body, read_score
from .limits import GraderLimits
from .sandbox import PythonSandbox
from .similarity import similarity
from .spec import (
    Grader,
    JsonSchemaCheck,
    MultiGrader,
    PythonGrader,
    ScoreModel,
    StringCheck,
    TextSimilarity,
    graders_in,
)
from .templates import MissingField, render


@dataclass(frozen=True)
class GradeResult:
    reward: float
    """The grader's score of the sample; 0 when it could not grade (see errors)."""
    sub_scores: Mapping[str, float] = field(default_factory=dict)
    """A multi grader's rewards of its graders, by their key; empty for the other types."""
    errors: tuple[str, ...] = ()
    """Why the grader could not grade (a multi grader's: prefixed with the sub-grader's key)."""
    details: tuple[str, ...] = ()
    """Why the score is what it is, where a grader says: a schema violation, the judge's conclusions."""
    passed: bool | None = None
    """reward >= pass_threshold, for graders that have one."""

    def to_dict(self) -> dict[str, Any]:
        return {"reward": self.reward, "sub_scores": dict(self.sub_scores), "errors": list(self.errors),
                "details": list(self.details), "passed": self.passed}


class GradingSession:
    """Grades many samples with one grader; a context manager (it owns processes and a client)."""

    def __init__(self, grader: Grader, judge: Judge | None = None, limits: GraderLimits = GraderLimits()) -> None:
        self.grader, self.judge, self.limits = grader, judge, limits
        self._sandboxes: dict[int, PythonSandbox] = {}  # id(PythonGrader) -> its worker
        self._client: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> GradingSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for sandbox in self._sandboxes.values():
            sandbox.close()
        self._sandboxes.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def python_network(self) -> list[str]:
        """How each started python grader's network was cut (for the report)."""
        return sorted({s.network for s in self._sandboxes.values() if s.network})

    def grade(self, sample: dict[str, Any], item: dict[str, Any]) -> GradeResult:
        return self._grade(self.grader, sample, item)

    def grade_many(self, rows: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> list[GradeResult]:
        """The grade of each (sample, item), in order. A grader that asks a judge grades
        `limits.judge_concurrency` rows at once (the judge's latency, not our CPU, is the cost),
        unless it also holds a python grader, whose one process grades one row at a time."""
        rows = list(rows)
        kinds = {type(g) for g in graders_in(self.grader)}
        if ScoreModel not in kinds or PythonGrader in kinds or self.limits.judge_concurrency == 1 or len(rows) < 2:
            return [self.grade(sample, item) for sample, item in rows]
        with ThreadPoolExecutor(self.limits.judge_concurrency) as pool:
            return list(pool.map(lambda row: self.grade(*row), rows))

    def _grade(self, grader: Grader, sample: dict[str, Any], item: dict[str, Any]) -> GradeResult:
        if isinstance(grader, MultiGrader):
            return self._multi(grader, sample, item)
        try:
            reward, details = self._score(grader, sample, item)
        except GraderError:
            raise  # a missing package: no sample can be graded
        except (MissingField, JudgeError, ArithmeticError, ValueError) as exc:
            return GradeResult(0.0, errors=(str(exc),), passed=False if _threshold(grader) is not None else None)
        threshold = _threshold(grader)
        return GradeResult(reward, details=tuple(details), passed=None if threshold is None else reward >= threshold)

    def _score(self, grader: Grader, sample: dict[str, Any], item: dict[str, Any]) -> tuple[float, list[str]]:
        if isinstance(grader, StringCheck):
            return _string_check(grader.operation, render(grader.input, sample, item),
                                 render(grader.reference, sample, item)), []
        if isinstance(grader, TextSimilarity):
            text, reference = render(grader.input, sample, item), render(grader.reference, sample, item)
            return similarity(grader.evaluation_metric, text, reference), []
        if isinstance(grader, JsonSchemaCheck):
            return _schema_check(grader, render(grader.input, sample, item))
        if isinstance(grader, ScoreModel):
            return self._judge(grader, sample, item)
        assert isinstance(grader, PythonGrader)
        answer = self._sandbox(grader).grade(sample, item)
        if answer.reward is None:
            raise ValueError(answer.error)
        return answer.reward, []

    def _multi(self, grader: MultiGrader, sample: dict[str, Any], item: dict[str, Any]) -> GradeResult:
        scores: dict[str, float] = {}
        errors: list[str] = []
        details: list[str] = []
        for key, sub in grader.graders:
            result = self._grade(sub, sample, item)
            scores[key] = result.reward
            errors += [f"{key}: {e}" for e in result.errors]
            details += [f"{key}: {d}" for d in result.details]
        try:
            reward = grader.calculate_output.evaluate(scores)
        except (ArithmeticError, ValueError) as exc:
            return GradeResult(0.0, scores, (*errors, f"calculate_output {grader.calculate_output.text!r}: {exc}"),
                               tuple(details))
        return GradeResult(reward, scores, tuple(errors), tuple(details))

    def _judge(self, grader: ScoreModel, sample: dict[str, Any], item: dict[str, Any]) -> tuple[float, list[str]]:
        if self.judge is None:
            raise JudgeError("score_model needs a judge: give its OpenAI-compatible URL with --judge-url "
                             "(`tunesmith grade` or `tunesmith server`; http://127.0.0.1:8000/v1 for "
                             "`tunesmith serve RUN`)")
        messages = [{"role": m.role, "content": render(m.content, sample, item)} for m in grader.input]
        with self._lock:  # rows may be graded on several threads (grade_many)
            if self._client is None:
                try:
                    import httpx
                except ModuleNotFoundError:
                    raise GraderError("score_model needs the httpx package: pip install 'tunesmith[graders]'") from None
                self._client = httpx.Client(timeout=self.limits.judge_timeout_s)
        reply = ask_judge(self._client, self.judge, judge_body(grader, messages, self.judge.model),
                          self.limits.judge_retries)
        return read_score(reply, grader.range)

    def _sandbox(self, grader: PythonGrader) -> PythonSandbox:
        if id(grader) not in self._sandboxes:
            self._sandboxes[id(grader)] = PythonSandbox(grader.source, self.limits)
        return self._sandboxes[id(grader)]


def grade(grader: Grader, sample: dict[str, Any], item: dict[str, Any], judge: Judge | None = None,
          limits: GraderLimits = GraderLimits()) -> GradeResult:
    """One sample's grade. For many samples use grade_rows: it starts a python grader's process once."""
    with GradingSession(grader, judge, limits) as session:
        return session.grade(sample, item)


def grade_rows(grader: Grader, rows: Iterable[tuple[dict[str, Any], dict[str, Any]]], judge: Judge | None = None,
               limits: GraderLimits = GraderLimits()) -> list[GradeResult]:
    """The grade of each (sample, item), in order."""
    with GradingSession(grader, judge, limits) as session:
        return session.grade_many(rows)


def _string_check(operation: str, text: str, reference: str) -> float:
    """OpenAI's string_check: eq and ne exact and case-sensitive; like: text contains reference; ilike:
    the same ignoring case."""
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    return float(reference.casefold() in text.casefold())


def _schema_check(grader: JsonSchemaCheck, text: str) -> tuple[float, list[str]]:
    import json

    from jsonschema.validators import validator_for

    try:
        value = json.loads(text)
    except ValueError as exc:
        return 0.0, [f"the answer is not JSON: {exc}"]
    validator = validator_for(grader.schema)(grader.schema)
    problems = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return (0.0, [f"{p.json_path}: {p.message}" for p in problems[:5]]) if problems else (1.0, [])


def _threshold(grader: Grader) -> float | None:
    return getattr(grader, "pass_threshold", None)

