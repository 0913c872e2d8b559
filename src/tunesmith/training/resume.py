"""Where a run lives and where it continues from: the run path, a fresh run directory, the
checkpoint to resume, and the checks that resuming is safe."""

from __future__ import annotations

import dataclasses
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from ..config import TrainConfig
from ..data import PreparedData
from ..errors import RunDirError
from ..run import RunDir, checkpoint_run
from .checkpoint import TrainState, checkpoint_bytes, clean_stale, list_complete, load_checkpoint

_STEP_NAME = re.compile(r"^step-\d+$")


def default_output(data: str) -> Path:
    """runs/DATA-STEM-TIMESTAMP: the run directory when the config names none."""
    return Path("runs") / f"{Path(data).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resume_point(run_path: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: a given step folder, or the newest complete one of the run."""
    if _STEP_NAME.match(run_path.name) and run_path.parent.name == "checkpoints":
        return run_path
    complete = list_complete(run_path)
    if not complete and resume != "auto":
        raise RunDirError(f"run '{run_path}' has no complete checkpoint to resume from; "
                          "start it again with --overwrite")
    return complete[-1][1] if complete else None


RESUME_FREE_KEYS = ("output", "report_to")
"""Config keys a resume may change: where the run lives and who watches it change nothing it trains."""


def check_resumable(run: RunDir, config: TrainConfig, data_sha256: dict[str, str]) -> list[str]:
    """Differences between the run as saved and as asked now; empty when resuming is safe."""
    saved = run.config().to_dict()
    asked = config.to_dict()
    problems = [f"config '{k}': saved {saved[k]!r}, now {asked[k]!r}"
                for k in asked if k not in RESUME_FREE_KEYS and saved.get(k) != asked[k]]
    manifest = run.manifest()
    if list(manifest["data_sha256"].values()) != list(data_sha256.values()):
        problems.append("the data files' SHA-256 differ from the run's manifest (the data changed)")
    if manifest.get("seed") != config.seed:
        problems.append(f"seed: saved {manifest.get('seed')}, now {config.seed}")
    return problems


def locate_run(config: TrainConfig, resume: str | None, force: bool, data_sha256: dict[str, str],
               accelerator: Any) -> tuple[TrainConfig, Path, Path | None]:
    """The config with its output set, the run directory, and the checkpoint to continue from (None:
    a fresh start). `resume` is None, 'auto', a run directory or a checkpoint folder; a changed config
    or data refuses to resume unless `force`."""
    from accelerate.utils import broadcast_object_list

    run_path = Path(config.output) if config.output else default_output(config.data)
    if accelerator.num_processes > 1:  # every rank must agree on the timestamped default name
        run_path = Path(broadcast_object_list([str(run_path)])[0])
    if resume not in (None, "auto"):
        run_path = checkpoint_run(resume)
        config = dataclasses.replace(config, output=str(run_path))
    elif resume == "auto" and not config.output:
        raise RunDirError("--resume auto continues the run in `output`: set output in the config or pass --output")
    start_from = None
    if resume is not None and RunDir.is_run(run_path):
        start_from = resume_point(Path(resume) if resume != "auto" else run_path, resume)
    if start_from is not None:
        problems = check_resumable(RunDir.open(run_path), config, data_sha256)
        if problems and not force:
            raise RunDirError(f"refusing to resume '{run_path}': " + "; ".join(problems) +
                              ". Pass --force to resume anyway, or start a new run with another --output.")
    return config, run_path, start_from


def restore_run(start_from: Path, run: RunDir, model: Any, optimizer: Any, scheduler: Any, accelerator: Any,
                console: Console) -> tuple[TrainState, list[dict[str, Any]]]:
    """Load the checkpoint into model, optimizer, scheduler and RNG; on rank 0 remove what the resumed
    timeline replaces (torn saves, later checkpoints, metrics rows after the checkpoint)."""
    state, metrics = load_checkpoint(start_from, model, optimizer, scheduler, accelerator.process_index,
                                     accelerator.num_processes)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for stale in clean_stale(run.path):
            console.print(f"removed incomplete checkpoint {stale}")
        for step, path in list_complete(run.path):
            if step > state.step:  # a later timeline abandoned by resuming from an earlier checkpoint
                shutil.rmtree(path)
                console.print(f"removed checkpoint {path}: it is later than the resume point")
        run.rewrite_metrics(metrics)
    console.print(f"resuming {run.path} from {start_from.name} (epoch {state.epoch}, "
                  f"example {state.index_in_epoch} of its order)")
    return state, metrics


def create_run(run: RunDir, config: TrainConfig, data: PreparedData, model: Any, accelerator: Any,
               overwrite: bool) -> None:
    """A fresh run directory with its config and manifest (rank 0 writes; every rank waits).
    `overwrite` is also set for `--resume auto` on a run that never completed a checkpoint: nothing
    to keep, start it over."""
    if accelerator.is_main_process:
        RunDir.create(run.path, overwrite=overwrite)
        _check_disk(run.path, checkpoint_bytes(model))
        run.write_config(config)
        run.write_manifest(data.sha256, config.seed)
    accelerator.wait_for_everyone()


def _check_disk(path: Path, checkpoint_size: int) -> None:
    """Stop before training when the first checkpoint (plus the final weights) will not fit."""
    free = shutil.disk_usage(path).free
    if free < 2 * checkpoint_size:
        raise RunDirError(f"'{path}' has {free / 2**20:.0f} MiB free; checkpoints need about "
                          f"{2 * checkpoint_size / 2**20:.0f} MiB. Free space or choose another --output.")
