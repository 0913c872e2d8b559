"""The run directory: the only code that writes a run's files, each written atomically."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig, dump_config, load_config
from .errors import RunDirError

PACKAGES = ("tunesmith", "torch", "transformers", "peft", "accelerate", "safetensors", "numpy")



def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """`write_atomic` for binary content (arrays of a retrieval index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        if not (path / "config.yaml").exists():
            raise RunDirError(f"'{path}' is not a tunesmith run: it has no config.yaml")
        return cls(path)

    def config(self) -> TrainConfig:
        return load_config(self.path / "config.yaml")

    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / "summary.json").read_text(encoding="utf-8"))

    def write_config(self, config: TrainConfig) -> None:
        write_atomic(self.path / "config.yaml", dump_config(config))

    def write_manifest(self, data_sha256: dict[str, str], seed: int) -> None:
        manifest = {
            "data_sha256": data_sha256,
            "seed": seed,
            "packages": _package_versions(),
            "python": sys.version.split()[0],
            "hardware": _hardware(),
            "git_revision": _git_revision(),
        }
        write_atomic(self.path / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    def append_metrics(self, row: dict[str, Any]) -> None:
        # One short line per append: a crash leaves at most a torn last line, which readers skip.
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl (on resume: drop rows logged after the checkpoint)."""
        write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict[str, Any]]:
        rows = []
        path = self.path / "metrics.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return rows

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def write_compare(self, result: dict[str, Any]) -> Path:
        """RUN/compare.json: the four systems' scores and the recommendation."""
        path = self.path / "compare.json"
        write_atomic(path, json.dumps(result, indent=2) + "\n")
        return path


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _hardware() -> dict[str, Any]:
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
