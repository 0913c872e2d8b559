"""What `train` returns, and how the CLI prints it: the loss (GRPO: the held-out reward) at the start and
at the kept step, the tokens, the time and where the run is."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    base_val_loss: float
    final_val_loss: float
    train_tokens: int
    wall_seconds: float
    steps: int
    interrupted: bool = False
    """True when SIGTERM/SIGINT stopped the run after saving a checkpoint."""
    main_process: bool = True
    """False on the other ranks of a multi-process run (only rank 0 reports)."""
    objective: str = "sft"
    """The run's objective; with grpo the validation losses are minus the held-out greedy reward."""
    start: str = "base"
    """What step 0 measured: the base, or with init_from the run whose adapter this one started from."""


def start_label(config: TrainConfig) -> str:
    """Step 0's model: the base, or the adapter of the run named by init_from."""
    return "base" if config.init_from is None else f"start ({Path(config.init_from).name})"


def result_lines(result: TrainResult) -> list[str]:
    """A finished run for the terminal (rich markup): the loss (GRPO: held-out reward) before and after,
    and where the run is."""
    change = (result.final_val_loss - result.base_val_loss) / (abs(result.base_val_loss) or math.nan)
    headline = (f"  held-out reward   {result.start} {-result.base_val_loss:.4f} -> tuned {-result.final_val_loss:.4f}"
                if result.objective == "grpo" else
                f"  validation loss   {result.start} {result.base_val_loss:.4f} -> tuned {result.final_val_loss:.4f} "
                f"({change:+.1%})")
    return ["", "[bold]tunesmith: run finished[/]", headline,
            f"  tokens trained    {result.train_tokens:,} in {result.steps} steps",
            f"  wall time         {result.wall_seconds:.0f} s",
            f"  run directory     {result.run_dir}",
            f"  try it            tunesmith generate {result.run_dir} --prompt \"...\""]
