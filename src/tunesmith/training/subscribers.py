"""The two subscribers `train` builds itself: the metrics.jsonl writer and the terminal progress bar."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..run import RunDir
from .events import METRICS_EVENTS, EvaluationEvent, StepEvent, TrainingEvent


class MetricsWriter:
    """Appends each metrics event's row to RUN/metrics.jsonl as it arrives (one short line per row:
    a crash leaves at most a torn last line, which readers skip)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def __call__(self, event: TrainingEvent) -> None:
        if isinstance(event, METRICS_EVENTS):
            self.run.append_metrics(event.to_dict())


class ProgressBar:
    """The `train` bar: steps done of the total, the last loss and validation loss, tokens per second.
    A context manager: the bar shows between enter and exit; disabled, it prints nothing."""

    def __init__(self, console: Console, total_steps: int, done_steps: int, val_loss: float | None,
                 enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, disable=not enabled, transient=False,
        )
        self.total_steps, self.done_steps = total_steps, done_steps
        self.val_loss = val_loss
        """The latest validation loss (the base's, or the resumed run's last)."""
        self.last: StepEvent | None = None
        self.task: Any = None

    def __enter__(self) -> ProgressBar:
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.total_steps, completed=self.done_steps, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: TrainingEvent) -> None:
        if isinstance(event, StepEvent):
            self.last = event
            self._show(advance=1)
        elif isinstance(event, EvaluationEvent):
            self.val_loss = event.val_loss
            if self.last is not None:  # the step's own evaluation: its figure replaces the previous one
                self._show(advance=0)

    def _show(self, advance: int) -> None:
        info = f"loss {self.last.loss:.3f} val {self.val_loss:.3f} {self.last.tokens_per_s:.0f} tok/s"
        self.progress.update(self.task, advance=advance, info=info)
