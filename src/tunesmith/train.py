"""The training recipe, top to bottom: setup -> evaluate base -> train -> evaluate -> save."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .config import ConfigError, TrainConfig
from .data import prepare_data
from .data.cache import passed_check, record_check
from .data.check import check_files
from .errors import NonFiniteLossError
from .forgetting import ReplaySource, kl_to_base_loss, measure_probes_fast, probe_metrics_row, within_budget
from .model.attention import use_packed_attention
from .model.loading import add_adapter, load_base_copy, load_model, load_tokenizer, save_trained
from .model.precision import autocast, compute_dtype, frozen_weight_dtype
from .model.sharding import compile_layers, local_share, shard_model
from .model.swiglu import use_fused_swiglu
from .training.batching import Batch, epoch_plan, eval_batches, loss_sum, micro_batches, split_batch
from .training.checkpoint import (
    TrainState,
    apply_retention,
    checkpoint_bytes,
    clean_stale,
    gather_trained,
    gather_weights,
    list_complete,
    load_checkpoint,
    read_trainable,
    rng_state,
    save_checkpoint,
)
from .training.rundir import RunDir, RunDirError

_STEP_NAME = re.compile(r"^step-\d+$")


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


def lr_at(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak rate at optimizer step `step` (0-based): linear warmup, then cosine."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def evaluate(model: Any, batches: list[Batch], device: torch.device, dtype: torch.dtype) -> float:
    """Mean cross-entropy per trained token over all batches (token-weighted, not batch-weighted)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast(device, dtype):
        for batch in batches:
            total += float(loss_sum(model, batch, device))
            count += batch.n_trained
    model.train(was_training)
    return total / max(1, count)


def backward_group(model: Any, group: list[Batch], accelerator: Any, dtype: torch.dtype,
                   group_trained: int | None = None, kl_term: KLTerm | None = None,
                   forward_tokens: int | None = None) -> float:
    """Accumulate this process's gradients of one optimizer step; returns its share of the step's
    mean loss per trained token.

    Each micro-batch's summed loss is divided by the trained tokens of the whole step (across
    micro-batches and processes, `group_trained`), not by the number of micro-batches, so two
    micro-batches of N/2 give exactly the gradient of one batch of N whatever their token counts
    (the accumulation bug that bit HF Trainer users). The same makes a micro-batch of more than
    `forward_tokens` tokens safe to run in pieces (`split_batch`). DDP averages gradients over
    processes, so each process scales its part by the world size to make that average the sum
    (FSDP's reduce-scatter averages the same way). `kl_term` adds
    weight x KL(base || tuned) on general text, averaged over the step's micro-batches.
    """
    n_trained = group_trained or sum(b.n_trained for b in group)
    world = accelerator.num_processes
    total = 0.0
    for i, batch in enumerate(group):
        pieces = split_batch(batch, forward_tokens)
        for j, piece in enumerate(pieces):
            last = i == len(group) - 1 and j == len(pieces) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                with autocast(accelerator.device, dtype):
                    loss = loss_sum(model, piece, accelerator.device) / n_trained
                    if kl_term is not None and j == 0:
                        kl = kl_to_base_loss(model, kl_term.batches[i], kl_term.base_model,
                                             inner=accelerator.unwrap_model(model))
                        loss = loss + kl_term.weight * kl / (len(group) * world)
                accelerator.backward(loss * world)
            total += float(loss.detach())
    return total


@dataclass(frozen=True)
class KLTerm:
    """The KL-to-base mitigation for one step: its weight, a general-text batch per micro-batch, and
    the frozen base (None with adapters: the same model with adapters disabled)."""

    weight: float
    batches: list[Batch]
    base_model: Any | None


def select_final(metrics: list[dict[str, Any]]) -> tuple[int | None, str]:
    """The evaluation step whose weights become the final model, and why.

    The best validation loss among evaluations within the forgetting budget; when none is within,
    the best validation loss, said plainly. None (the last step) when probes were not measured.
    """
    vals = {r["step"]: r["val_loss"] for r in metrics if "val_loss" in r and r["step"] > 0}
    within = {r["step"]: r["within_budget"] for r in metrics if "within_budget" in r}
    if not within or not vals:
        return None, "last step"
    ok = [s for s in vals if within.get(s)]
    if ok:
        return min(ok, key=vals.get), "best validation loss within the forgetting budget"
    return min(vals, key=vals.get), "best validation loss; NO evaluation was within the forgetting budget"


def default_output(data: str) -> Path:
    return Path("runs") / f"{Path(data).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"



class StopFlag:
    """SIGTERM/SIGINT set a flag that the loop reads at the next step boundary (no I/O in the handler).
    A second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def make_accelerator() -> Any:
    """Accelerate for this process: its device and, with several processes, the process group
    (gloo on CPUs, NCCL on GPUs). DDP comes from `accelerator.prepare`; FSDP from `shard_model`,
    because accelerate ignores an FSDP plugin on CPUs (see sharding.py)."""
    from accelerate import Accelerator

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # accelerate sets up a gloo process group for several CPU processes only when told cpu=True;
    # without it each process would silently train alone.
    return Accelerator(cpu=several and not torch.cuda.is_available())


def end_processes() -> None:
    """Wait for every rank, then close the process group. A rank that exits while another still
    writes the run can abort in the process group's teardown ("terminate called without an active
    exception", seen with gloo); the launcher then reports the whole run as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resume_point(run_path: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: a given step folder, or the newest complete one of the run."""
    if _STEP_NAME.match(run_path.name) and run_path.parent.name == "checkpoints":
        return run_path
    complete = list_complete(run_path)
    if not complete and resume != "auto":
        raise RunDirError(f"run '{run_path}' has no complete checkpoint to resume from; start it again with --overwrite")
    return complete[-1][1] if complete else None


def check_resumable(run: RunDir, config: TrainConfig, data_sha256: dict[str, str]) -> list[str]:
    """Differences between the run as saved and as asked now; empty when resuming is safe."""
    saved = run.config().to_dict()
    asked = config.to_dict()
    problems = [f"config '{k}': saved {saved[k]!r}, now {asked[k]!r}"
                for k in asked if k != "output" and saved.get(k) != asked[k]]
    manifest = json.loads((run.path / "manifest.json").read_text(encoding="utf-8"))
    if list(manifest["data_sha256"].values()) != list(data_sha256.values()):
        problems.append("the data files' SHA-256 differ from the run's manifest (the data changed)")
    if manifest.get("seed") != config.seed:
        problems.append(f"seed: saved {manifest.get('seed')}, now {config.seed}")
    return problems


def check_data(config: TrainConfig, tokenizer: Any, console: Console) -> None:
    """`data check` before anything is written; skipped when it already passed on these exact files."""
    key = (config.data, config.eval, tokenizer, config.max_seq_tokens)
    earlier = passed_check(*key)
    if earlier is None:
        report = check_files(config.data, config.eval, tokenizer, config.max_seq_tokens)
        report.enforce(console)
        earlier = report.warning_summary()
        record_check(*key, earlier)
    else:
        for line in earlier:
            console.print(f"[yellow]data warning:[/] {escape(line)}", highlight=False)


def train(config: TrainConfig, overwrite: bool = False, console: Console | None = None,
          show_progress: bool = True, on_step: Callable[[dict[str, Any]], None] | None = None,
          resume: str | None = None, force: bool = False) -> TrainResult:
    """Fine-tune `config.model` on `config.data`; write the run directory; return the headline numbers.

    `resume` is 'auto' (continue `config.output` from its newest complete checkpoint, or start it),
    a run directory, or a checkpoint folder; `force` resumes even when config or data changed.
    """
    from accelerate.utils import broadcast_object_list, gather_object, set_seed

    if config.distributed == "fsdp" and config.method == "qlora":
        raise ConfigError("distributed: fsdp with method: qlora is not supported (4-bit weights cannot be sharded "
                          "as DTensors here); use distributed: ddp, which QLoRA's small adapters suit")
    accelerator = make_accelerator()
    main_process = accelerator.is_main_process
    console = console if console is not None and main_process else Console(stderr=True, quiet=not main_process)
    started = time.perf_counter()

    # --- setup: everything that can fail on bad input happens before the run directory is touched
    tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    check_data(config, tokenizer, console)
    data = prepare_data(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed)
    for warning in data.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    config = config.resolve(len(data.train))
    run_path = Path(config.output) if config.output else default_output(config.data)
    if accelerator.num_processes > 1:  # every rank must agree on the timestamped default name
        run_path = Path(broadcast_object_list([str(run_path)])[0])
    if resume not in (None, "auto"):
        run_path = Path(resume)
        if run_path.parent.name == "checkpoints":
            run_path = run_path.parent.parent
        config = dataclasses.replace(config, output=str(run_path))
    elif resume == "auto" and not config.output:
        raise RunDirError("--resume auto continues the run in `output`: set output in the config or pass --output")
    start_from = None
    if resume is not None and (run_path / "config.yaml").exists():
        start_from = resume_point(Path(resume) if resume != "auto" else run_path, resume)
    if start_from is not None:
        run = RunDir.open(run_path)
        problems = check_resumable(run, config, data.sha256)
        if problems and not force:
            raise RunDirError(f"refusing to resume '{run_path}': " + "; ".join(problems) +
                              ". Pass --force to resume anyway, or start a new run with another --output.")
    set_seed(config.seed)
    dtype = compute_dtype(config.precision)
    base = load_model(config.model, trust_remote_code=config.trust_remote_code, quantize_4bit=config.method == "qlora")
    use_packed_attention(base)
    if not config.compile:  # inductor picks what to save itself, and the custom function only slows it
        use_fused_swiglu(base)
    model = add_adapter(base, config.method, config.lora, frozen_dtype=frozen_weight_dtype(config.method, dtype),
                        gradient_checkpointing=config.gradient_checkpointing)

    world, rank = accelerator.num_processes, accelerator.process_index
    sharded = config.distributed == "fsdp" and world > 1
    if sharded:  # before the optimizer exists: sharding replaces the parameters by DTensors
        model = shard_model(model)
    if config.compile:
        console.print(f"compiling {compile_layers(model)} decoder layers (torch.compile): the first steps wait for it")
    micro_per_step = config.grad_accum_steps * world  # global batch = micro-batch x accumulation x processes
    forward_tokens = config.forward_token_limit(accelerator.device.type)
    fg = config.forgetting
    base_copy = load_base_copy(config, needed=fg.kl_weight > 0 or fg.measure_during_training)
    micro_per_epoch = len(epoch_plan(data.train, config.batch_size, config.seed, 0, config.batch_tokens))
    steps_per_epoch = math.ceil(micro_per_epoch / micro_per_step)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    warmup_steps = max(1, round(config.warmup_ratio * total_steps))
    eval_every = config.eval_every or max(1, total_steps // 4)
    save_every = config.save_every or eval_every
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, total_steps, warmup_steps, config.min_lr_ratio))

    if start_from is None:
        if resume == "auto" and run_path.is_dir() and (run_path / "config.yaml").exists():
            overwrite = True  # a run that never completed a checkpoint: nothing to keep, start it over
        if main_process:
            run = RunDir.create(run_path, overwrite=overwrite)
            _check_disk(run.path, checkpoint_bytes(model))
            run.write_config(config)
            run.write_manifest(data.sha256, config.seed)
        accelerator.wait_for_everyone()
        run = RunDir(run_path)
        state = TrainState(step=0, epoch=0, index_in_epoch=0, accum_index=0, train_tokens=0, val_loss=None)
        metrics: list[dict[str, Any]] = []
    else:
        state, metrics = load_checkpoint(start_from, model, optimizer, scheduler, rank, world)
        accelerator.wait_for_everyone()
        if main_process:
            for stale in clean_stale(run.path):
                console.print(f"removed incomplete checkpoint {stale}")
            for step, path in list_complete(run.path):
                if step > state.step:  # a later timeline abandoned by resuming from an earlier checkpoint
                    shutil.rmtree(path)
                    console.print(f"removed checkpoint {path}: it is later than the resume point")
            run.rewrite_metrics(metrics)
        console.print(f"resuming {run.path} from {start_from.name} (epoch {state.epoch}, "
                      f"example {state.index_in_epoch} of its order)")
    inner_optimizer = optimizer  # the torch optimizer, for the state-dict helpers
    if sharded:
        optimizer = accelerator.prepare(optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    n_trainable = sum(p.numel() for p in trainable)
    per_micro = f"up to {config.batch_tokens} tokens" if config.batch_tokens else config.batch_size
    step_size = f"{micro_per_step} micro-batch(es)" if config.batch_tokens else f"{config.batch_size * micro_per_step} examples"
    console.print(
        f"[bold]tunesmith train[/] {config.method} on {config.model}: {len(data.train)} train / {len(data.val)} "
        f"val examples, {config.epochs:g} epoch(s) = {total_steps} steps of {step_size} "
        f"({per_micro} per micro-batch x {config.grad_accum_steps} accumulation x {world} process(es)"
        f"{', sharded (FSDP)' if sharded else ''}, packed: 0% padding"
        f"{f', at most {forward_tokens} tokens a forward pass' if forward_tokens else ''}), lr {config.lr:g}, {n_trainable:,} trainable parameters, "
        f"precision {str(dtype).removeprefix('torch.')}, output {run.path}"
    )

    if sharded:
        local, total = local_share(model)
        console.print(f"FSDP: rank 0 stores {local:,} of the model's {total:,} weights ({local / total:.0%})")

    def log(row: dict[str, Any]) -> None:
        metrics.append(row)
        if main_process:
            run.append_metrics(row)

    # --- evaluate the untouched model (LoRA/DoRA adapters start as the identity)
    val = eval_batches(data.val, config.batch_size)
    if state.step == 0:
        log({"step": 0, "val_loss": evaluate(model, val, accelerator.device, dtype)})
        console.print(f"base validation loss {metrics[-1]['val_loss']:.4f}")
    base_val_loss = next(r["val_loss"] for r in metrics if r["step"] == 0 and "val_loss" in r)
    val_loss = next((r["val_loss"] for r in reversed(metrics) if "val_loss" in r), base_val_loss)

    replay = ReplaySource(tokenizer, config.max_seq_tokens, position=state.replay_position) \
        if fg.replay_fraction > 0 or fg.kl_weight > 0 else None

    # --- train
    model.train()
    stream = micro_batches(data.train, config.batch_size, config.seed, state.epoch, state.index_in_epoch,
                           config.batch_tokens)
    tick, tokens_at_start = time.perf_counter(), state.train_tokens
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, disable=not (show_progress and main_process), transient=False,
    )
    stopped_by = None
    with progress, StopFlag() as stop:
        task = progress.add_task("train", total=total_steps, completed=state.step, info="")
        for step in range(state.step, total_steps):
            group = [next(stream) for _ in range(micro_per_step)]
            batches = [b for _, _, b in group]
            kl_term = None
            if replay is not None:  # every rank walks the same replay stream, so all agree on the step
                if fg.replay_fraction > 0:
                    batches = [replay.extend(b, fg.replay_fraction) for b in batches]
                if fg.kl_weight > 0:
                    kl_batches = [replay.batch(b.n_trained) for b in batches]
                    kl_term = KLTerm(fg.kl_weight, kl_batches[rank::world], base_copy)
            step_loss = backward_group(model, batches[rank::world], accelerator, dtype,
                                       group_trained=sum(b.n_trained for b in batches), kl_term=kl_term,
                                       forward_tokens=forward_tokens)
            if world > 1:
                step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "sum"))
            grad_norm = float(accelerator.clip_grad_norm_(trainable, config.grad_clip if config.grad_clip > 0 else math.inf))
            lr = optimizer.param_groups[0]["lr"]
            skipped = state.skipped_steps
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                rows = [s for b in batches for s in b.sources]
                if not config.skip_nonfinite:
                    raise NonFiniteLossError(
                        f"non-finite {'loss' if not math.isfinite(step_loss) else 'gradient norm'} at step {step + 1} "
                        f"(rows {', '.join(rows)}); no checkpoint was written from this state. Lower lr, check "
                        "those rows, or set skip_nonfinite: true")
                console.print(f"[yellow]warning:[/] skipped step {step + 1}: non-finite loss (rows {', '.join(rows)})")
                skipped += 1
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            epoch, index, last = group[-1]
            index += len(last.sources)
            if index >= len(data.train):
                epoch, index = epoch + 1, 0
            elapsed = time.perf_counter() - tick
            tokens = state.train_tokens + sum(b.n_tokens for b in batches)
            row = {"step": step + 1, "loss": step_loss, "lr": lr, "epoch": group[-1][0],
                   "tokens": tokens, "tokens_per_s": (tokens - tokens_at_start) / elapsed if elapsed > 0 else 0.0,
                   "grad_norm": grad_norm}
            log(row)
            measured = None
            evaluating = (step + 1) % eval_every == 0 or step + 1 == total_steps
            if evaluating:
                val_loss = measured = evaluate(model, val, accelerator.device, dtype)
                log({"step": step + 1, "val_loss": val_loss})
                if fg.measure_during_training:
                    with autocast(accelerator.device, dtype):  # frozen weights may be stored in bf16
                        probes = measure_probes_fast(accelerator.unwrap_model(model), tokenizer, config.model,
                                                     fg.probes, base_model=base_copy)
                    ok, reason = within_budget(fg.budget, probes)
                    log(probe_metrics_row(step + 1, probes, ok))
                    if not ok:
                        console.print(f"step {step + 1}: over the forgetting budget ({reason})")
            state = TrainState(step + 1, epoch, index, 0, tokens, measured, skipped,
                               replay.position if replay is not None else 0)
            stopping = stop.requested is not None
            if world > 1:  # ranks may get the signal at different steps: stop together
                flag = torch.tensor(float(stopping), device=accelerator.device)
                stopping = bool(accelerator.reduce(flag, "sum") > 0)
            # With probes, every evaluation is a candidate for the final model, so it gets a checkpoint.
            probed = evaluating and fg.measure_during_training
            if (step + 1) % save_every == 0 or step + 1 == total_steps or stopping or probed:
                rng_states = gather_object([rng_state()]) if world > 1 else None
                weights, optimizer_state = gather_trained(accelerator.unwrap_model(model), inner_optimizer)
                if main_process:
                    save_checkpoint(run.path, weights, optimizer_state, scheduler, state, metrics, rng_states)
                    chosen, _ = select_final(metrics)
                    apply_retention(run.path, config.keep_last, newest_step=step + 1,
                                    protected={chosen} if chosen is not None else set())
                accelerator.wait_for_everyone()
            if on_step is not None:
                on_step({**row, "examples": [s for b in batches for s in b.sources]})
            progress.update(task, advance=1, info=f"loss {step_loss:.3f} val {val_loss:.3f} "
                                                  f"{row['tokens_per_s']:.0f} tok/s")
            if stopping:
                stopped_by = stop.requested or "SIGTERM"
                break

    wall = time.perf_counter() - started
    if stopped_by is not None:
        console.print(f"{stopped_by}: saved checkpoint step-{state.step}; continue with "
                      f"`tunesmith train --resume {run.path}`")
        return TrainResult(run.path, base_val_loss, val_loss, state.train_tokens, wall, state.step, interrupted=True)

    # --- save: the final model is the best evaluation within the forgetting budget
    chosen, why = select_final(metrics)
    last_val_loss = val_loss
    if chosen is not None and chosen != total_steps:
        val_loss = next(r["val_loss"] for r in metrics if r["step"] == chosen and "val_loss" in r)
    result = TrainResult(run.path, base_val_loss, val_loss, state.train_tokens, wall, total_steps,
                         main_process=main_process)
    unwrapped = accelerator.unwrap_model(model)
    # A collective under FSDP (every rank gathers its shards); the full model for full fine-tuning.
    final_weights = gather_weights(unwrapped, frozen=config.method == "full")
    if not main_process:
        return result
    if chosen is not None and chosen != total_steps:
        # Keep the last weights too, labelled, then put the chosen checkpoint's weights in place.
        last_dir = save_trained(unwrapped, tokenizer, config.method, run.path, final_weights)
        labelled = last_dir.with_name(f"{last_dir.name}-last")
        shutil.rmtree(labelled, ignore_errors=True)
        last_dir.rename(labelled)
        final_weights.update(read_trainable(run.path / "checkpoints" / f"step-{chosen}"))
    save_trained(unwrapped, tokenizer, config.method, run.path, final_weights)
    if chosen is not None:
        console.print(f"final model: step {chosen} of {total_steps}, {why}")
    within = next((r["within_budget"] for r in metrics if r["step"] == (chosen or total_steps) and "within_budget" in r),
                  None)
    run.write_summary({
        "base_val_loss": base_val_loss,
        "final_val_loss": val_loss,
        "last_val_loss": last_val_loss,
        "selected_step": chosen or total_steps,
        "selection": why,
        "within_budget": within,
        "val_loss_change": (val_loss - base_val_loss) / base_val_loss,
        "train_tokens": state.train_tokens,
        "wall_seconds": wall,
        "steps": total_steps,
        "skipped_steps": state.skipped_steps,
        "method": config.method,
        "model": config.model,
    })
    return result


def _check_disk(path: Path, checkpoint_size: int) -> None:
    """Stop before training when the first checkpoint (plus the final weights) will not fit."""
    free = shutil.disk_usage(path).free
    if free < 2 * checkpoint_size:
        raise RunDirError(f"'{path}' has {free / 2**20:.0f} MiB free; checkpoints need about "
                          f"{2 * checkpoint_size / 2**20:.0f} MiB. Free space or choose another --output.")
