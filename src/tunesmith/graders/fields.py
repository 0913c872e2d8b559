"""What a grader reads from the rows, and the rows that lack it: for the data check, before anything trains.

A template's `{{item.a.b}}` names a field; so does a python grader's `item["a"]` (a constant key
subscripted on grade's second argument; `item.get("a")` says the field is optional and is not
counted). A row without a field its grader reads would be scored 0 on every answer: a reward
that teaches nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..data.issues import DataIssue
from .spec import Grader, JsonSchemaCheck, MultiGrader, PythonGrader, ScoreModel, StringCheck, TextSimilarity
from .templates import FieldPath, MissingField, lookup, template_paths

ISSUE_KIND = "grader field"
"""The DataIssue kind of a row that lacks a field its grader reads."""


def grader_templates(grader: Grader) -> Iterator[tuple[str, str]]:
    """(grader name, template string) for every template of the grader and its sub-graders."""
    if isinstance(grader, MultiGrader):
        for _, sub in grader.graders:
            yield from grader_templates(sub)
    elif isinstance(grader, (StringCheck, TextSimilarity)):
        yield grader.name, grader.input
        yield grader.name, grader.reference
    elif isinstance(grader, JsonSchemaCheck):
        yield grader.name, grader.input
    elif isinstance(grader, ScoreModel):
        for message in grader.input:
            yield grader.name, message.content


def referenced_item_fields(grader: Grader) -> list[tuple[str, FieldPath]]:
    """(grader name, item path) of every row field the grader reads, first mention first, each once."""
    seen: dict[FieldPath, str] = {}
    for name, template in grader_templates(grader):
        for path in template_paths(template):
            if path.namespace == "item":
                seen.setdefault(path, name)
    for python in _python_graders(grader):
        for key in python_item_keys(python.source):
            seen.setdefault(FieldPath("item", (key,)), python.name)
    return [(name, path) for path, name in seen.items()]


def _python_graders(grader: Grader) -> Iterator[PythonGrader]:
    if isinstance(grader, MultiGrader):
        for _, sub in grader.graders:
            yield from _python_graders(sub)
    elif isinstance(grader, PythonGrader):
        yield grader


def python_item_keys(source: str) -> list[str]:
    """The constant keys that grade(sample, item) subscripts its second argument with: item["key"]."""
    tree = ast.parse(source)
    grade = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "grade"]
    if not grade or len(grade[-1].args.args) != 2:
        return []
    item = grade[-1].args.args[1].arg
    keys: list[str] = []
    for node in ast.walk(grade[-1]):
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == item
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
                and isinstance(node.ctx, ast.Load) and node.slice.value not in keys):
            keys.append(node.slice.value)
    return keys


def check_rows(grader: Grader, rows: Iterable[tuple[str, int, dict[str, Any]]]) -> list[DataIssue]:
    """A DataIssue (file:line, the field) for every row that lacks a field its grader reads."""
    fields = referenced_item_fields(grader)
    issues = []
    for file, line, row in rows:
        for name, path in fields:
            try:
                lookup(path, {}, row)
            except MissingField as exc:
                issues.append(DataIssue(file, line, str(path), f"grader '{name}' reads {{{{{path}}}}}, but "
                                        f"{str(exc).split(': ', 1)[1]} — add the field to every row, or "
                                        "change the grader", ISSUE_KIND))
    return issues


def check_data_fields(grader: Grader, data: list[str | Path]) -> list[DataIssue]:
    """`check_rows` over every row of the data files (or folders): `data check --grader` and the jobs
    server's validation of a reinforcement job. Rows are read as the grader gets them (no column
    mapping; without their answer); bad lines are the data check's to report."""
    from ..data.limits import CheckLimits
    from ..data.records import TEXT_SUFFIXES, data_files, resolve_data_path
    from ..data.rows import iter_rows
    from .rows import split_row

    paths = [resolve_data_path(d) for d in data]
    files = [f for p in paths for f in (data_files(p).files if p.is_dir() else [p])
             if f.suffix.lower() not in TEXT_SUFFIXES]
    rows = ((str(file), line, split_row(row).item) for file in files
            for line, row, _ in iter_rows(file, CheckLimits(), []))
    return check_rows(grader, rows)
