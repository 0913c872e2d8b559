"""The `tunesmith grade` command: flags in, grade.py's recipe, its table or JSON out; and `data check
--grader`, where the data check and the graders meet (the data package imports no grader).

Only click at the top: `tunesmith --help` must not import the graders (numpy, the data package).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import EXIT_ERROR, EXIT_OK
from .settings import JUDGE_KEY_ENV, Sampling

# GraderLimits' defaults are written out in the help (importing them loads the data package);
# tests/test_graders.py holds these texts to the fields.
TIMEOUT_HELP = "Seconds a python grader may take per sample before its process is killed (default 120)."
MEMORY_HELP = "Memory cap of a python grader's process in MiB (default 2048)."
GRADER_CHECK_HELP = ("An OpenAI-format grader (JSON): check it, name every row lacking a field it reads, and take "
                     "RFT prompts (messages ending with a user turn) as its data.")


@click.command("grade")
@click.argument("grader", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--run", type=click.Path(exists=True, file_okay=False),
              help="Grade RUN's own answers to the rows' prompts instead of the rows' last assistant messages.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=Sampling.max_new_tokens, show_default=True,
              help="With --run: longest answer in tokens.")
@click.option("--judge-url", envvar="TUNESMITH_JUDGE_URL",
              help="OpenAI-compatible base URL of score_model's judge, e.g. http://127.0.0.1:8000/v1 for "
                   "`tunesmith serve RUN` (or set TUNESMITH_JUDGE_URL).")
@click.option("--judge-api-key", envvar=JUDGE_KEY_ENV, help=f"The judge's API key (or set {JUDGE_KEY_ENV}).")
@click.option("--judge-model", help="Model id sent to the judge instead of the grader's `model`.")
@click.option("--python-timeout", type=click.FloatRange(min=0, min_open=True), help=TIMEOUT_HELP)
@click.option("--python-memory-mb", type=click.IntRange(min=64), help=MEMORY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print every row's grade and the mean as JSON.")
def grade_command(grader: str, data: str, run: str | None, max_new_tokens: int, judge_url: str | None,
                  judge_api_key: str | None, judge_model: str | None, python_timeout: float | None,
                  python_memory_mb: int | None, as_json: bool) -> None:
    """Score DATA's answers (each row's last assistant message) with GRADER.json, an OpenAI-format grader:
    per-row rewards, sub-scores and errors, and their mean with a 95% interval. Exit 1 when a row could
    not be graded."""
    from .commands.grade import grade_file, print_report
    from .graders import GraderLimits, Judge

    overrides = {k: v for k, v in (("python_timeout_s", python_timeout),
                                   ("python_memory_bytes", python_memory_mb and python_memory_mb << 20)) if v}
    judge = Judge(judge_url, judge_api_key, judge_model) if judge_url else None
    report = grade_file(grader, data, run, judge, GraderLimits(**overrides), max_new_tokens)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_report(report, click.echo)
    sys.exit(EXIT_ERROR if report.summary()["rows_with_errors"] else EXIT_OK)


def check_files_with_grader(config: Any, tokenizer: Any, limits: Any, show: int, options: dict[str, Any],
                            grader: str | None) -> Any:
    """`data check`'s report (data.check.check_files); with `grader` (or a config's `objective: grpo` and its
    grader file), RFT prompts are what the data should hold, and the grader's problems and every row lacking a
    field it reads are errors too."""
    from .data.check import check_files

    if grader is None and config.objective == "grpo" and isinstance(config.grader, str):
        grader = config.grader
    report = check_files(config.data, config.eval, tokenizer, config.max_seq_tokens, limits, show=show,
                         val_fraction=None if config.eval else config.val_fraction,
                         reinforcement=grader is not None or config.objective == "grpo", **options)
    if grader is not None:
        from .commands.grade import grader_field_issues

        report.errors.extend(grader_field_issues(grader, [p for p in (config.data, config.eval) if p]))
    return report
