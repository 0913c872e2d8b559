"""A run directory: the only code that reads or writes a run's files (config.yaml, manifest.json,
metrics.jsonl, summary.json, eval.json, compare.json, trackers.json, the jobs server's
step_metrics.csv, curve's heldout.json; a curve folder's curve.json and heldout.json), each written
atomically, and the loader of a finished run's model. Torch-free at import: the loader and the
manifest's hardware line import torch when they run."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, ContextManager

from .config import TrainConfig, dump_config, load_config
from .errors import RunDirError
from .files import write_atomic, write_atomic_bytes

__all__ = ["RunDir", "base_model_id", "base_of", "checkpoint_run", "heldout", "load_run", "load_run_and_base",
           "refuse_occupied", "run_system_prompt", "write_atomic", "write_atomic_bytes", "write_curve", "write_heldout"]

PACKAGES = ("tunesmith", "torch", "transformers", "peft", "accelerate", "safetensors", "numpy")

CONFIG, MANIFEST, METRICS, SUMMARY = "config.yaml", "manifest.json", "metrics.jsonl", "summary.json"
EVAL, COMPARE, TRACKERS, CURVE = "eval.json", "compare.json", "trackers.json", "curve.json"
HELDOUT, STEP_METRICS = "heldout.json", "step_metrics.csv"


def checkpoint_run(path: str | Path) -> Path:
    """The run directory of RUN or of RUN/checkpoints/step-N (what `--resume` accepts)."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else path


def finished_adapter(path: str | Path) -> tuple[TrainConfig, Path]:
    """A finished run's config and its adapter's weights file (`init_from`); a ConfigError naming the
    key where `path` is no run with an adapter."""
    from .errors import ConfigError

    run = Path(path).expanduser()
    weights = run / "adapter" / "adapter_model.safetensors"
    if not (run / CONFIG).is_file() or not weights.is_file():
        raise ConfigError(f"config key 'init_from' must be a finished run with an adapter: {run} has no "
                          "adapter/adapter_model.safetensors (train it to the end first, or point at another run)")
    return load_config(run / CONFIG), weights


def refuse_occupied(path: Path, overwrite: bool = False) -> None:
    """A RunDirError when `path` cannot become a fresh run directory: it is a file, or a folder that
    already holds files (unless `overwrite`). `train` asks before loading anything, so the answer
    comes in a second, not after the model has loaded."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output '{path}' is a file; choose a directory name with --output")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunDirError(f"output directory '{path}' already holds files; choose another with --output, "
                          "or pass --overwrite to replace it")


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, path: str | Path, overwrite: bool = False) -> RunDir:
        """A fresh run directory; an existing non-empty one is refused unless `overwrite`."""
        path = Path(path)
        refuse_occupied(path, overwrite)
        if path.is_dir() and any(path.iterdir()):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run, for eval, generate, export and serve."""
        path = Path(path)
        if not cls.is_run(path):
            raise RunDirError(f"'{path}' is not a tunesmith run: it has no {CONFIG}")
        return cls(path)

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """A run was created in `path`: its config is written before anything else."""
        return (Path(path) / CONFIG).exists()

    def config(self, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The run's resolved config, with `overrides` (flags) over it."""
        return load_config(self.path / CONFIG, overrides)

    def finished(self) -> bool:
        """The run saved its final model: summary.json is the last file a run writes."""
        return (self.path / SUMMARY).exists()

    def summary(self) -> dict[str, Any] | None:
        """summary.json (the `FinishedEvent`), or None before the run finished."""
        return _read_json(self.path / SUMMARY)

    def write_config(self, config: TrainConfig) -> None:
        write_atomic(self.path / CONFIG, dump_config(config))

    def manifest(self) -> dict[str, Any]:
        """manifest.json, or {} for a folder without one."""
        return _read_json(self.path / MANIFEST) or {}

    def write_manifest(self, data_sha256: dict[str, str], seed: int) -> None:
        manifest = {
            "data_sha256": data_sha256,
            "seed": seed,
            "packages": _package_versions(),
            "python": sys.version.split()[0],
            "hardware": _hardware(),
            "git_revision": _git_revision(),
        }
        write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=2) + "\n")

    def append_metrics(self, row: dict[str, Any]) -> None:
        # One short line per append: a crash leaves at most a torn last line, which readers skip.
        with (self.path / METRICS).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl (on resume: drop rows logged after the checkpoint)."""
        write_atomic(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows; a torn last line (a crash mid-append) is skipped, none for no file."""
        rows = []
        path = self.path / METRICS
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.path / SUMMARY, summary)

    def evaluation(self) -> dict[str, Any] | None:
        """eval.json (`tunesmith eval`'s result), or None before the run was evaluated."""
        return _read_json(self.path / EVAL)

    def write_evaluation(self, result: dict[str, Any]) -> Path:
        return _write_json(self.path / EVAL, result)

    def comparison(self) -> dict[str, Any] | None:
        """compare.json, or None before the run was compared."""
        return _read_json(self.path / COMPARE)

    def write_compare(self, result: dict[str, Any]) -> Path:
        """RUN/compare.json: the four systems' scores and the recommendation."""
        return _write_json(self.path / COMPARE, result)

    def tracker_ids(self) -> dict[str, Any] | None:
        """trackers.json: each tracker's run id, kept so a resume or an eval continues its run; None if none."""
        return _read_json(self.path / TRACKERS)

    def write_tracker_ids(self, ids: dict[str, Any]) -> None:
        _write_json(self.path / TRACKERS, ids)

    def write_step_metrics_csv(self) -> Path:
        """step_metrics.csv, OpenAI's result file of a job: one row per step, its training and (when
        measured) validation loss."""
        rows: dict[int, dict[str, Any]] = {}
        for row in self.metrics():
            figures = rows.setdefault(row["step"], {"step": row["step"], "train_loss": "", "valid_loss": ""})
            figures["train_loss"] = row.get("loss", figures["train_loss"])
            figures["valid_loss"] = row.get("val_loss", figures["valid_loss"])
        out = io.StringIO()
        writer = csv.DictWriter(out, ["step", "train_loss", "valid_loss"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[step] for step in sorted(rows))
        write_atomic(self.path / STEP_METRICS, out.getvalue())
        return self.path / STEP_METRICS


def write_curve(folder: Path, report: dict[str, Any]) -> Path:
    """A learning curve's folder (its point runs inside): curve.json."""
    return _write_json(folder / CURVE, report)


def heldout(folder: Path) -> dict[str, Any] | None:
    """heldout.json of a curve's point run or of the curve's folder (the base's): held-out losses, or None."""
    return _read_json(folder / HELDOUT)


def write_heldout(folder: Path, measured: dict[str, Any]) -> Path:
    write_atomic(folder / HELDOUT, json.dumps(measured) + "\n")
    return folder / HELDOUT


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_json(path: Path, content: Any) -> Path:
    write_atomic(path, json.dumps(content, indent=2) + "\n")
    return path


# --- the loader of a finished run (torch, transformers and peft load when these run)


def load_run(run_path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a finished run, in eval mode."""
    from .model.loading import load_tuned
    from .model.tokenizer import load_tokenizer

    run = RunDir.open(run_path)
    config = run.config()
    saved = run.path / ("model" if config.method == "full" else "adapter")
    if not saved.exists():
        raise FileNotFoundError(f"run '{run.path}' has no {saved.name}/: it did not finish; train it again")
    tokenizer = load_tokenizer(str(saved), config.chat_template, config.trust_remote_code)
    model = load_tuned(run.path, config.model, config.method, trust_remote_code=config.trust_remote_code)
    return model.eval(), tokenizer


def run_system_prompt(run_path: str | Path) -> str | None:
    """The system prompt the run trained with (its config's `system_prompt`, a file read), or None."""
    from .data import data_options

    return data_options(RunDir.open(run_path).config())["system_prompt"]


def base_of(model: Any, config: TrainConfig) -> Callable[[], ContextManager[Any]]:
    """Enters the run's base model: the tuned model with its adapters disabled, or, for full
    fine-tuning, a frozen copy of the base loaded on first use (it costs a second model's memory)."""
    from .model.base import base_view
    from .model.loading import load_base_copy

    copy: list[Any] = []

    def enter() -> ContextManager[Any]:
        if config.method == "full" and not copy:
            copy.append(load_base_copy(config))
        return base_view(model, copy[0] if copy else None)()

    return enter


def load_run_and_base(run_path: str | Path) -> tuple[Any, Any, Any | None, Callable[[], ContextManager[Any]]]:
    """(model, tokenizer, base copy, base view) of a finished run, to measure base beside tuned (eval,
    compare): the frozen base copy is loaded now for full fine-tuning, None with adapters, which the
    view disables instead."""
    from .model.base import base_view
    from .model.loading import load_base_copy

    model, tokenizer = load_run(run_path)
    base_model = load_base_copy(RunDir.open(run_path).config())
    return model, tokenizer, base_model, base_view(model, base_model)


def base_model_id(config: TrainConfig, tuned_id: str) -> str:
    """The base model's own name beside a tuned one: its hub id or folder name (-base if they clash)."""
    path = Path(config.model).expanduser()
    name = path.name if path.is_dir() else config.model
    return name if name != tuned_id else f"{name}-base"


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
