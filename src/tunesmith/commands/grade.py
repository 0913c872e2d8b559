"""`tunesmith grade GRADER.json DATA`: score known answers with a grader before training on its rewards.

The recipe: load and check the grader, read the rows (every bad line named, nothing graded), take
each row's answer (its last assistant message, or with `run` the run's own answer to the row's
prompt), grade them all, and summarise: the mean reward with its 95% bootstrap interval, the mean
of each sub-score, the rows that could not be graded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..data.issues import DataError, DataIssue
from ..evaluation.bootstrap import bootstrap_ci
from ..graders import GradeResult, GraderLimits, GradingSession, Judge, check_rows, load_grader, make_sample
from ..graders.rows import split_row
from ..settings import Sampling

NO_ANSWER = "the row has no answer to grade: end its messages with an assistant message (or give --run RUN)"
NO_PROMPT = "the row has no prompt for the run to answer: give it messages (or a prompt)"


@dataclass(frozen=True)
class GradedFile:
    grader: str
    data: str
    lines: list[int]
    """Each graded row's line in DATA."""
    answers: list[str | None]
    """The answer graded for each row: its last assistant message, or the run's (None: the row had none)."""
    results: list[GradeResult]
    issues: list[DataIssue]
    """Rows lacking a field the grader reads (each such row's grade also carries the error)."""
    python_network: list[str]
    """How the python graders' network was cut, where one ran."""

    def summary(self) -> dict[str, Any]:
        rewards = [r.reward for r in self.results]
        n = len(rewards)
        lo, hi = bootstrap_ci(rewards, [1.0] * n) if n else (math.nan, math.nan)
        keys = list(dict.fromkeys(k for r in self.results for k in r.sub_scores))
        passed = [r.passed for r in self.results if r.passed is not None]
        return {
            "mean": sum(rewards) / n if n else math.nan, "ci95": [lo, hi], "n": n,
            "rows_with_errors": sum(1 for r in self.results if r.errors),
            "sub_scores": {k: sum(r.sub_scores.get(k, 0.0) for r in self.results) / n for k in keys},
            "pass_rate": sum(passed) / len(passed) if passed else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"grader": self.grader, "data": self.data, **self.summary(),
                "rows": [{"line": line, "answer": answer, **r.to_dict()}
                         for line, answer, r in zip(self.lines, self.answers, self.results)],
                "issues": [str(i) for i in self.issues], "python_network": self.python_network}


def grade_file(grader_path: str | Path, data: str | Path, run: str | Path | None = None, judge: Judge | None = None,
               limits: GraderLimits = GraderLimits(), max_new_tokens: int = Sampling.max_new_tokens) -> GradedFile:
    """Grade DATA's answers (or, with `run`, the run's answers to DATA's prompts) with the grader."""
    grader = load_grader(grader_path, limits)
    rows = read_rows(data)
    split = [split_row(row) for _, row in rows]
    answers = (run_answers(run, [s.prompt for s in split], max_new_tokens) if run is not None
               else [s.answer for s in split])
    issues = check_rows(grader, ((str(data), line, s.item) for (line, _), s in zip(rows, split)))
    answered = [i for i, answer in enumerate(answers) if answer is not None]
    with GradingSession(grader, judge, limits) as session:  # a run's answers make no tool calls
        grades = session.grade_many((make_sample(answers[i], None if run else split[i].tool_calls), split[i].item)
                                    for i in answered)
        network = session.python_network
    results = [GradeResult(0.0, errors=(NO_PROMPT if run else NO_ANSWER,))] * len(split)
    for i, result in zip(answered, grades):
        results[i] = result
    return GradedFile(str(grader_path), str(data), [line for line, _ in rows], answers, results, issues, network)


def read_rows(data: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) of every row of a .jsonl/.json/.csv file; DataError naming every bad line."""
    from ..data.limits import CheckLimits
    from ..data.records import resolve_data_path
    from ..data.rows import iter_rows

    path = resolve_data_path(data)
    if not path.is_file():
        raise FileNotFoundError(f"{data}: no such data file — grade reads one .jsonl, .json or .csv file")
    issues: list[DataIssue] = []
    rows = [(line, row) for line, row, _ in iter_rows(path, CheckLimits(), issues)]
    if issues:
        raise DataError(issues)
    if not rows:
        raise DataError([DataIssue(str(data), 0, "(file)", "has no rows to grade")])
    return rows


def grader_field_issues(grader_path: str | Path, data: list[str | Path]) -> list[DataIssue]:
    """`data check --grader`: the grader's own problems (its file, each at its JSON path), or a DataIssue
    (file:line, the field) for every row of the data files (or folders) lacking a field the grader reads."""
    from ..errors import GraderError
    from ..graders import check_data_fields

    try:
        grader = load_grader(grader_path)
    except GraderError as exc:
        return [_grader_problem(str(grader_path), line) for line in str(exc).splitlines()]
    return check_data_fields(grader, data)


def _grader_problem(grader_path: str, problem: str) -> DataIssue:
    """One line of a GraderError ("g.json: $.graders.a.operation: ...") as a DataIssue at its JSON path."""
    text = problem.removeprefix(f"{grader_path}: ")
    at, _, message = text.partition(": ")
    if not at.startswith("$") or not message:
        at, message = "(grader)", text
    return DataIssue(grader_path, 0, at, message, "grader")


def run_answers(run: str | Path, prompts: list[list[dict[str, str]]],
                max_new_tokens: int = Sampling.max_new_tokens) -> list[str | None]:
    """RUN's tuned model's greedy answer to each prompt (its system prompt added, as in training),
    decoded in batches as eval and compare decode; None where a prompt is empty."""
    from ..data.render import encode_prompt, end_of_turn_ids, pad_id, with_system_prompt
    from ..inference.decode import adapters_merged, generate_batch
    from ..run import load_run, run_system_prompt

    model, tokenizer = load_run(run)
    system = run_system_prompt(run)
    asked = [i for i, prompt in enumerate(prompts) if prompt]
    ids = [encode_prompt(with_system_prompt(prompts[i], system), tokenizer) for i in asked]
    with adapters_merged(model) as decoding:
        out = generate_batch(decoding, ids, max_new_tokens, sorted(end_of_turn_ids(tokenizer)), pad_id(tokenizer))
    answers: list[str | None] = [None] * len(prompts)
    for i, answer_ids in zip(asked, out):
        answers[i] = tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
    return answers


def print_report(report: GradedFile, echo: Callable[[str], None], max_error_chars: int = 100) -> None:
    """The per-row table, then the mean with its interval."""
    keys = list(dict.fromkeys(k for r in report.results for k in r.sub_scores))
    for issue in report.issues:
        echo(f"warning: {issue}")
    echo(f"{'line':>6}  {'reward':>8}  " + "".join(f"{k[:12]:>12}  " for k in keys) + "errors")
    for line, result in zip(report.lines, report.results):
        subs = "".join(f"{result.sub_scores.get(k, math.nan):>12.4f}  " for k in keys)
        errors = "; ".join(_short(e, keys, max_error_chars) for e in result.errors)
        echo(f"{line:>6}  {result.reward:>8.4f}  {subs}{errors}".rstrip())
    s = report.summary()
    lo, hi = s["ci95"]
    echo(f"mean reward {s['mean']:.4f} (95% CI {lo:.4f} to {hi:.4f}) over {s['n']} rows, "
         f"{s['rows_with_errors']} with errors" + (f"; pass rate {s['pass_rate']:.1%}" if s["pass_rate"] is not None
                                                   else ""))
    for key, mean in s["sub_scores"].items():
        echo(f"  {key}: mean {mean:.4f}")


def _short(error: str, keys: list[str], chars: int) -> str:
    """An error's last line (a traceback's exception), after its sub-grader's key, cut to `chars`."""
    key = next((k for k in keys if error.startswith(f"{k}: ")), None)
    rest = error[len(key) + 2:] if key else error
    lines = [ln.strip() for ln in rest.splitlines() if ln.strip() and not ln.strip().startswith("(printed")]
    text = (f"{key}: " if key else "") + (lines[-1] if lines else rest)
    return text if len(text) <= chars else text[: chars - 3] + "..."
