"""Export a run for use elsewhere: the peft adapter with a card, a merged Hugging Face model, or GGUF.

Every export is written to a staging folder and renamed into place; the run itself (its adapter
above all) is only read. Merged and GGUF exports prove themselves: the written files are loaded
back and their logits compared with base + adapter before the export is kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ExportError
from ..model.loading import load_model
from ..model.tokenizer import load_tokenizer
from ..run import RunDir, RunDirError, write_atomic
from ..settings import DEFAULT_GGUF_TYPE, EXPORT_FORMATS, MERGE_TOLERANCE
from .gguf import export_gguf
from .parity import compare_logits, merged_model, sample_inputs


@dataclass(frozen=True)
class ExportResult:
    output: Path
    files: tuple[str, ...]
    max_abs_diff: float | None = None
    """Largest |logit| difference between the export and base + adapter (merged, gguf)."""
    relative_diff: float | None = None
    """‖Δ logits‖ / ‖logits of base + adapter‖ (root-mean-square error relative to the logits' size)."""


def export_run(run_path: str | Path, fmt: str, output: str | Path | None = None, *, tolerance: float | None = None,
               gguf_type: str = DEFAULT_GGUF_TYPE, overwrite: bool = False,
               log: Callable[[str], None] = print) -> ExportResult:
    """Write RUN's tuned model as `fmt` into `output` (default RUN/export-FMT)."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format '{fmt}': choose one of {', '.join(EXPORT_FORMATS)}")
    run = RunDir.open(run_path)
    target = Path(output) if output is not None else run.path / f"export-{fmt}"
    occupied = target.is_file() or (target.is_dir() and any(target.iterdir()))
    if occupied and not overwrite:
        raise RunDirError(f"export folder '{target}' already exists; choose another with --output or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if fmt == "adapter":
            result = _export_adapter(run, staging)
        elif fmt == "merged":
            result = _export_merged(run, staging, MERGE_TOLERANCE if tolerance is None else tolerance, log)
        else:
            result = export_gguf(run, staging, gguf_type, tolerance, log)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = tuple(sorted(p.name for p in target.iterdir()))
    return ExportResult(target, files, *result)


def _export_adapter(run: RunDir, out: Path) -> tuple[None, None]:
    config = run.config()
    if config.method == "full":
        raise ExportError(f"run '{run.path}' is a full fine-tune and has no adapter: "
                          "export it with --format merged or gguf")
    source = run.path / "adapter"
    if not source.is_dir():
        raise FileNotFoundError(f"run '{run.path}' has no adapter/: it did not finish; train it again")
    shutil.copytree(source, out, dirs_exist_ok=True)
    write_atomic(out / "README.md", model_card(run))
    return None, None


def model_card(run: RunDir) -> str:
    """A README for the exported adapter: base model, method, data hash and the run's metrics."""
    config = run.config()
    manifest = run.manifest()
    summary = run.summary() or {}
    hashes = manifest.get("data_sha256", {})
    data_rows = "\n".join(f"| data sha256 ({Path(name).name}) | `{digest}` |" for name, digest in hashes.items())
    metrics = ""
    if summary:
        metrics = (
            f"| held-out reward, base | {-summary['base_val_loss']:.4f} |\n"  # grpo's loss: minus the reward
            f"| held-out reward, tuned | {-summary['final_val_loss']:.4f} |\n" if config.objective == "grpo" else
            f"| validation loss, base | {summary['base_val_loss']:.4f} |\n"
            f"| validation loss, tuned | {summary['final_val_loss']:.4f} ({summary['val_loss_change']:+.1%}) |\n"
        ) + f"| steps | {summary['steps']} |\n| tokens trained | {summary['train_tokens']:,} |\n"
    return (
        f"---\nbase_model: {config.model}\nlibrary_name: peft\ntags: [tunesmith, {config.method}]\n---\n\n"
        f"# {run.path.name}\n\n{config.method.upper()} adapter trained with tunesmith.\n\n"
        f"| | |\n|---|---|\n| base model | `{config.model}` |\n"
        f"| method | {config.method} (r={config.lora.r}, alpha={config.lora.alpha}) |\n"
        f"| learning rate | {config.lr} |\n| seed | {config.seed} |\n{data_rows}\n{metrics}\n"
        "## Use\n\n```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
        f"base = AutoModelForCausalLM.from_pretrained(\"{config.model}\")\n"
        "model = PeftModel.from_pretrained(base, \"THIS_FOLDER\")\n```\n"
    )


def _export_merged(run: RunDir, out: Path, tolerance: float, log: Callable[[str], None]) -> tuple[float, float]:
    merged, tuned, tokenizer = merged_model(run)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # carries the chat template
    # Check what was written, not what is in memory: reload and compare with base + adapter.
    reloaded = load_model(str(out)).eval()
    diff, scaled, rel = compare_logits(tuned, reloaded, sample_inputs(load_tokenizer(str(out))))
    # Elementwise, like torch.allclose with atol = rtol = tolerance.
    log(f"merged vs base + adapter: max |logit difference| {diff:.3g}, max |Δ| / (1 + |logit|) {scaled:.3g} "
        f"(tolerance {tolerance:g})")
    if not scaled <= tolerance:
        raise ExportError(f"merged model differs from base + adapter: max |Δ| / (1 + |logit|) = {scaled:.3g} > "
                          f"tolerance {tolerance:g}; nothing was written (raise --tolerance only if you accept that)")
    return diff, rel
