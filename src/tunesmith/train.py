"""The training recipe, top to bottom: setup -> evaluate base -> train -> evaluate -> save."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .batching import Batch, eval_batches, loss_sum, micro_batches
from .config import TrainConfig
from .data import prepare_data
from .data.check import check_files
from .models import add_adapter, load_model, load_tokenizer, save_trained
from .rundir import RunDir


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    base_val_loss: float
    final_val_loss: float
    train_tokens: int
    wall_seconds: float
    steps: int


def bf16_available() -> bool:
    """bf16 where the hardware computes it natively: modern GPUs, CPUs with AVX-512 BF16 or AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = torch.backends.cpu
    return bool(getattr(cpu, "get_cpu_capability", lambda: "")() in ("AVX512", "AMX")) and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def mixed_precision(precision: str) -> str:
    if precision == "fp32":
        return "no"
    if precision == "bf16" or bf16_available():
        return "bf16"
    return "no"


def lr_at(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak rate at optimizer step `step` (0-based): linear warmup, then cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def evaluate(model: Any, batches: list[Batch], accelerator: Any) -> float:
    """Mean cross-entropy per trained token over all batches (token-weighted, not batch-weighted)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), accelerator.autocast():
        for batch in batches:
            total += float(loss_sum(model, batch, accelerator.device))
            count += batch.n_trained
    model.train(was_training)
    return total / max(1, count)


def default_output(data: str) -> Path:
    return Path("runs") / f"{Path(data).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(config: TrainConfig, overwrite: bool = False, console: Console | None = None,
          show_progress: bool = True, on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Fine-tune `config.model` on `config.data`; write the run directory; return the headline numbers."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    console = console or Console(stderr=True)
    started = time.perf_counter()

    # --- setup: everything that can fail on bad input happens before the run directory exists
    tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    check_files(config.data, config.eval, tokenizer, config.max_seq_tokens).enforce(console)  # same as `data check`
    data = prepare_data(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed)
    for warning in data.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    config = config.resolve(len(data.train))
    set_seed(config.seed)
    accelerator = Accelerator(mixed_precision=mixed_precision(config.precision))
    model = add_adapter(load_model(config.model, trust_remote_code=config.trust_remote_code), config.method, config.lora)
    run = RunDir.create(config.output or default_output(config.data), overwrite=overwrite)
    run.write_config(config)
    run.write_manifest(data.sha256, config.seed)

    micro_per_epoch = math.ceil(len(data.train) / config.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum_steps)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    warmup_steps = max(1, round(config.warmup_ratio * total_steps))
    eval_every = config.eval_every or max(1, total_steps // 4)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, total_steps, warmup_steps, config.min_lr_ratio))
    model, optimizer = accelerator.prepare(model, optimizer)
    n_trainable = sum(p.numel() for p in trainable)
    console.print(
        f"[bold]tunesmith train[/] {config.method} on {config.model}: {len(data.train)} train / {len(data.val)} "
        f"val examples, {config.epochs:g} epoch(s) = {total_steps} steps of {config.batch_size}x"
        f"{config.grad_accum_steps} examples, lr {config.lr:g}, {n_trainable:,} trainable parameters, "
        f"precision {accelerator.mixed_precision}, output {run.path}"
    )

    # --- evaluate the untouched model (LoRA/DoRA adapters start as the identity)
    val = eval_batches(data.val, config.batch_size)
    base_val_loss = evaluate(model, val, accelerator)
    run.append_metrics({"step": 0, "val_loss": base_val_loss})
    console.print(f"base validation loss {base_val_loss:.4f}")

    # --- train
    model.train()
    stream = micro_batches(data.train, config.batch_size, config.seed)
    train_tokens, val_loss = 0, base_val_loss
    tick = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not show_progress, transient=False,
    )
    with progress:
        task = progress.add_task("train", total=total_steps, info="")
        for step in range(total_steps):
            group = [next(stream) for _ in range(config.grad_accum_steps)]
            # Normalise by the trained tokens of the whole accumulation group, so that two
            # micro-batches of N/2 give the gradient of one batch of N whatever their token counts.
            group_trained = sum(b.n_trained for _, _, b in group)
            step_loss = 0.0
            for _, _, batch in group:
                with accelerator.autocast():
                    loss = loss_sum(model, batch, accelerator.device) / group_trained
                accelerator.backward(loss)
                step_loss += float(loss.detach())
                train_tokens += batch.n_tokens
            grad_norm = accelerator.clip_grad_norm_(trainable, config.grad_clip) if config.grad_clip > 0 else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - tick
            row = {
                "step": step + 1,
                "loss": step_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch": group[-1][0],
                "tokens": train_tokens,
                "tokens_per_s": train_tokens / elapsed if elapsed > 0 else 0.0,
            }
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            run.append_metrics(row)
            if on_step is not None:
                on_step(row)
            if (step + 1) % eval_every == 0 or step + 1 == total_steps:
                val_loss = evaluate(model, val, accelerator)
                run.append_metrics({"step": step + 1, "val_loss": val_loss})
            progress.update(task, advance=1, info=f"loss {step_loss:.3f} val {val_loss:.3f} "
                                                  f"{row['tokens_per_s']:.0f} tok/s")

    # --- save
    save_trained(accelerator.unwrap_model(model), tokenizer, config.method, run.path)
    wall = time.perf_counter() - started
    result = TrainResult(run.path, base_val_loss, val_loss, train_tokens, wall, total_steps)
    run.write_summary({
        "base_val_loss": base_val_loss,
        "final_val_loss": val_loss,
        "val_loss_change": (val_loss - base_val_loss) / base_val_loss,
        "train_tokens": train_tokens,
        "wall_seconds": wall,
        "steps": total_steps,
        "method": config.method,
        "model": config.model,
    })
    return result
