"""The data check as training's gate: run before anything is written, by `train` and by the server's
validation of a job, and skipped when it already passed on these exact files (its warnings repeated)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from ..config import TrainConfig
from .cache import passed_check, record_check
from .check import check_files
from .prepare import data_options


def check_data(config: TrainConfig, tokenizer: Any, console: Console) -> None:
    """`data check` of the config's files; raises DataError (printing every issue) when they fail.
    Objective grpo's prompts are checked every time (the record of a passed check does not say for
    which objective it passed)."""
    key = (config.data, config.eval, tokenizer, config.max_seq_tokens)
    options = {**data_options(config), "val_fraction": None if config.eval else config.val_fraction}
    if config.objective == "grpo":
        check_files(*key, **options, reinforcement=True).enforce(console)
        return
    earlier = passed_check(*key, **options)
    if earlier is None:
        report = check_files(*key, **options)
        report.enforce(console)
        earlier = report.warning_summary()
        record_check(*key, earlier, **options)
    else:
        for line in earlier:
            console.print(f"[yellow]data warning:[/] {escape(line)}", highlight=False)
