"""The training recipe, top to bottom: set up a session -> evaluate the base -> run the steps -> save.

`train` is that sequence; each step is the named functions below it (its batches, backward, the
optimizer step, the data position, evaluation and probes, checkpoint and retention, stopping).
The machinery lives in `training/`: losses, schedule, checkpoints, resume, events.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from rich.console import Console
from rich.markup import escape

from ..config import PREFERENCE_OBJECTIVES, TrainConfig
from ..data import PreparedData, prepare_data
from ..data.gate import check_data
from ..data.preference import prepare_pairs
from ..data.prompts import prepare_prompts
from ..errors import NonFiniteLossError, StoppedBeforeTraining
from ..forgetting import ReplaySource, measure_probes_fast, probe_metrics_row, within_budget
from ..model.loading import build_training_model, load_base_copy, save_trained
from ..model.precision import autocast, compute_dtype
from ..model.sharding import local_share
from ..model.tokenizer import load_tokenizer
from ..retrieval.raft import training_files
from ..run import RunDir, finished_adapter, refuse_occupied
from ..training.batching import Batch, epoch_plan, eval_batches, micro_batches
from ..training.checkpoint import (
    TrainState,
    apply_retention,
    gather_trained,
    gather_weights,
    list_complete,
    read_trainable,
    rng_state,
    save_checkpoint,
)
from ..training.events import (
    METRICS_EVENTS,
    CheckpointEvent,
    FinishedEvent,
    ProbesEvent,
    StepEvent,
    StopEvent,
    Subscriber,
    TrainingEvent,
)
from ..training.loss import KLTerm, backward_group
from ..training.objectives import Objective, objective_for, reference_needed
from ..training.processes import end_processes, make_accelerator
from ..training.resume import create_run, locate_run, restore_run
from ..training.rft import GroupLoss, open_reward_task
from ..training.schedule import Schedule, lr_scheduler, plan_schedule
from ..training.selection import select_final
from ..training.signals import StopFlag, agree_to_stop, stop_at_once
from ..training.subscribers import MetricsWriter, ProgressBar
from ..training.trackers import check_trackers, open_trackers
from .train_result import TrainResult, start_label

__all__ = ["NonFiniteLossError", "TrainResult", "end_processes", "make_accelerator", "train"]

MIN_SCHEDULE_STEPS = 8
"""Fewer optimizer steps than this are warned about: a warmup step, four evaluations and a cosine
decay need some steps between them."""
Record = Callable[[TrainingEvent], None]
"""Adds a metrics event to the run's record and sends any event to the subscribers."""


@dataclass(frozen=True)
class Session:
    """What the phases of one run share, set up before the first step. The model and optimizer are
    mutable objects (training changes them); the fields do not change."""

    config: TrainConfig
    """The resolved config (epochs, output and derived values filled in)."""
    accelerator: Any
    """accelerate's Accelerator: device, processes, collectives."""
    console: Console
    """Where the run's lines go (quiet on ranks other than 0)."""
    tokenizer: Any
    data: PreparedData
    """Tokenized train and validation examples and the data files' SHA-256."""
    run: RunDir
    model: Any
    """The model being trained, wrapped by accelerate (DDP) or sharded (FSDP)."""
    base_copy: Any | None
    """A frozen copy of the base for full fine-tuning's KL term and probes; None otherwise."""
    optimizer: Any
    """AdamW as accelerate prepared it."""
    inner_optimizer: torch.optim.Optimizer
    """The torch optimizer itself, for the state-dict helpers."""
    scheduler: Any
    trainable: list[torch.nn.Parameter]
    dtype: torch.dtype
    """Compute dtype (autocast)."""
    schedule: Schedule
    val_batches: list[Batch]
    """The validation set packed in file order, measured at step 0 and every evaluation."""
    forward_tokens: int | None
    """Most tokens one forward pass takes (`forward_token_limit`); None: no limit."""
    sharded: bool
    """FSDP over several processes."""
    start: TrainState
    """Where training starts: step 0 or the resumed checkpoint."""
    metrics: list[dict[str, Any]]
    """The run's record: every metrics.jsonl row so far; saved with each checkpoint, appended to."""
    started: float
    """perf_counter() when `train` began."""
    objective: Objective
    """The loss of a step and what an evaluation measures (sft, dpo, orpo: training/objectives.py)."""


def train(config: TrainConfig, overwrite: bool = False, console: Console | None = None,
          show_progress: bool = True, resume: str | None = None, force: bool = False,
          subscribers: Iterable[Subscriber] = ()) -> TrainResult:
    """Fine-tune `config.model` on `config.data`; write the run directory; return the headline numbers.

    `resume` is 'auto' (continue `config.output` from its newest complete checkpoint, or start it),
    a run directory, or a checkpoint folder; `force` resumes even when config or data changed.
    `subscribers` receive every training event after the metrics.jsonl writer, the progress bar and the
    trackers of `config.report_to` (`tunesmith.training.events`: order, rank 0 only, what an exception does).
    """
    check_trackers(config.report_to)  # a tracker's missing package is refused before anything loads
    made: list[Path] = []  # a run directory this call creates, removed if stopped before a step
    try:
        with stop_at_once():
            session = set_up_session(config, overwrite, console, resume, force, made)
            main = session.accelerator.is_main_process
            bar = ProgressBar(session.console, session.schedule.total_steps, session.start.step,
                              latest_val_loss(session.metrics), enabled=show_progress and main)
            trackers = open_trackers(session.config, session.run.path, session.start.step, session.console) \
                if main else []
            record = recorder(session.metrics, [MetricsWriter(session.run), bar, *trackers, *subscribers]
                              if main else [])
            base_val_loss = evaluate_base(session, record)
    except KeyboardInterrupt:
        raise StoppedBeforeTraining(discard_unstarted(made)) from None
    try:
        with bar, StopFlag() as stop:
            state, stopped_by = run_steps(session, record, stop)
        if stopped_by is not None:
            session.console.print(f"{stopped_by}: saved checkpoint step-{state.step}; continue with "
                                  f"`tunesmith train --resume {session.run.path}`")
            return TrainResult(session.run.path, base_val_loss, latest_val_loss(session.metrics), state.train_tokens,
                               state.wall_seconds, state.step, interrupted=True, main_process=main,
                               objective=session.config.objective)
        return save_final(session, state, base_val_loss, record)
    finally:
        session.objective.close()


def recorder(metrics: list[dict[str, Any]], subscribers: list[Subscriber]) -> Record:
    """The one way the recipe reports: metrics events join the run's record, then every subscriber
    gets the event in order (the list is empty on ranks other than 0)."""
    def record(event: TrainingEvent) -> None:
        if isinstance(event, METRICS_EVENTS):
            metrics.append(event.to_dict())
        for subscriber in subscribers:
            subscriber(event)
    return record


def discard_unstarted(made: list[Path]) -> str:
    """Remove the run directory this call made before its first step (config and manifest only:
    nothing worth keeping, and in the way of running the same command again); say what happened."""
    for path in made:
        if path.is_dir() and not list_complete(path):
            shutil.rmtree(path, ignore_errors=True)
            return f"stopped before the first step: {path} is removed (nothing was trained); run the same command again"
    return "stopped before the first step: nothing was written; run the same command again"


def latest_val_loss(metrics: list[dict[str, Any]]) -> float | None:
    return next((r["val_loss"] for r in reversed(metrics) if "val_loss" in r), None)


# --- setup: everything that can fail on bad input happens before the run directory is touched

def set_up_session(config: TrainConfig, overwrite: bool, console: Console | None, resume: str | None,
                   force: bool, made: list[Path]) -> Session:
    """Accelerator, tokenizer, data check, data, resolved config, run path and resume point, model,
    base copy, optimizer, schedule, run directory and state, in the order that keeps runs reproducible
    (the seed is set after the data and before the model)."""
    from accelerate.utils import set_seed

    accelerator = make_accelerator()
    console = console if console is not None and accelerator.is_main_process else \
        Console(stderr=True, quiet=not accelerator.is_main_process)
    started = time.perf_counter()
    if resume is None and config.output:  # seconds, not after the model has loaded
        refuse_occupied(Path(config.output), overwrite)
    tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    check_data(config, tokenizer, console)
    config, files, options = training_files(config, tokenizer, lambda m: console.print(f"[dim]{escape(m)}[/]"))
    prepare = prepare_pairs if config.objective in PREFERENCE_OBJECTIVES else \
        prepare_prompts if config.objective == "grpo" else prepare_data  # pairs, prompts or answers
    data = prepare(*files, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed,
                   **options, train_fraction=config.train_fraction)
    config, rewards = open_reward_task(config, tokenizer, data, accelerator.num_processes) \
        if config.objective == "grpo" else (config, None)  # the grader, checked against every prompt's row
    for warning in data.warnings:
        if not warning.startswith("small data:"):  # the data check above has said it already
            console.print(f"[yellow]warning:[/] {warning}")
    config = config.resolve(len(data.train))
    config, run_path, start_from = locate_run(config, resume, force, data.sha256, accelerator)
    set_seed(config.seed)
    dtype = compute_dtype(config.precision)
    start = finished_adapter(config.init_from) if config.init_from is not None else None
    model, sharded = build_training_model(config, accelerator.num_processes, dtype, console.print, start)
    fg = config.forgetting
    base_copy = load_base_copy(config,
                               needed=fg.kl_weight > 0 or fg.measure_during_training or reference_needed(config))
    micro_per_epoch = len(epoch_plan(data.train, config.batch_size, config.seed, 0, config.batch_tokens))
    schedule = plan_schedule(config, micro_per_epoch, accelerator.num_processes)
    trainable = [p for p in model.parameters() if p.requires_grad]
    inner_optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = lr_scheduler(inner_optimizer, schedule, config.min_lr_ratio)
    if start_from is None:
        run = RunDir(run_path)
        create_run(run, config, data, model, accelerator, overwrite=overwrite or (
            resume == "auto" and run_path.is_dir() and RunDir.is_run(run_path)))
        if accelerator.is_main_process:
            made.append(run_path)
        start, metrics = TrainState(step=0, epoch=0, index_in_epoch=0, accum_index=0, train_tokens=0,
                                    val_loss=None), []
    else:
        run = RunDir.open(run_path)
        start, metrics = restore_run(start_from, run, model, inner_optimizer, scheduler, accelerator, console)
    if sharded:
        optimizer = accelerator.prepare(inner_optimizer)
    else:
        model, optimizer = accelerator.prepare(model, inner_optimizer)
    session = Session(config, accelerator, console, tokenizer, data, run, model, base_copy, optimizer,
                      inner_optimizer, scheduler, trainable, dtype, schedule,
                      eval_batches(data.val, config.batch_size),
                      config.forward_token_limit(accelerator.device.type), sharded, start, metrics, started,
                      objective_for(config, base_copy, rewards))
    print_header(session)
    return session


def print_header(s: Session) -> None:
    """The run's first lines: what trains on what, in which steps, on how many processes."""
    config, world, schedule = s.config, s.accelerator.num_processes, s.schedule
    n_trainable = sum(p.numel() for p in s.trainable)
    per_micro = f"up to {config.batch_tokens} tokens" if config.batch_tokens else config.batch_size
    step_size = f"{schedule.micro_per_step} micro-batch(es)" if config.batch_tokens else \
        f"{config.batch_size * schedule.micro_per_step} examples"
    length = f"{config.epochs:g} epoch(s) = {schedule.total_steps} steps" if not config.max_steps else \
        f"{schedule.total_steps} steps (max_steps; {schedule.total_steps / schedule.steps_per_epoch:.2g} epoch(s))"
    s.console.print(
        f"[bold]tunesmith train[/] {config.method}{'' if config.objective == 'sft' else ' ' + config.objective} "
        f"on {config.model}: {len(s.data.train)} train / {len(s.data.val)} "
        f"val examples, {length} of {step_size} "
        f"({per_micro} per micro-batch x {config.grad_accum_steps} accumulation x {world} process(es)"
        f"{', sharded (FSDP)' if s.sharded else ''}, packed: 0% padding"
        f"{f', at most {s.forward_tokens} tokens a forward pass' if s.forward_tokens else ''}), lr {config.lr:g}, "
        f"{n_trainable:,} trainable parameters, precision {str(s.dtype).removeprefix('torch.')}, output {s.run.path}"
    )
    if schedule.total_steps < MIN_SCHEDULE_STEPS:
        s.console.print(f"[yellow]warning:[/] only {schedule.total_steps} optimizer step(s): warmup and the "
                        f"cosine decay have little room and evaluations come {schedule.eval_every} step(s) apart; "
                        "add data, raise epochs, or lower batch_size")
    if s.sharded:
        local, total = local_share(s.model)
        s.console.print(f"FSDP: rank 0 stores {local:,} of the model's {total:,} weights ({local / total:.0%})")


# --- evaluate the untouched model (LoRA/DoRA adapters start as the identity)

def evaluate_base(s: Session, record: Record) -> float:
    """The base model's validation loss: measured on a fresh run, read from the record on resume."""
    if s.start.step == 0:
        record(s.objective.evaluate(s.model, s.val_batches, s.accelerator.device, s.dtype, 0))
        row = s.metrics[-1]  # grpo's evaluation is a reward; its loss is minus that
        s.console.print(f"{start_label(s.config)} held-out reward {row['reward']:.4f}" if "reward" in row else
                        f"{start_label(s.config)} validation loss {row['val_loss']:.4f}")
    return next(r["val_loss"] for r in s.metrics if r["step"] == 0 and "val_loss" in r)


# --- train

def run_steps(s: Session, record: Record, stop: StopFlag) -> tuple[TrainState, str | None]:
    """Optimizer steps from the start state to the schedule's end, or to a stop signal (then the
    state is saved and the signal's name returned)."""
    fg = s.config.forgetting
    replay = ReplaySource(s.tokenizer, s.config.max_seq_tokens, position=s.start.replay_position) \
        if fg.replay_fraction > 0 or fg.kl_weight > 0 else None
    s.model.train()
    stream = micro_batches(s.data.train, s.config.batch_size, s.config.seed, s.start.epoch, s.start.index_in_epoch,
                           s.config.batch_tokens)
    state, tick = s.start, time.perf_counter()
    for step in range(s.start.step + 1, s.schedule.total_steps + 1):  # 1-based: the step being done
        group, batches, kl_term = step_batches(s, stream, replay)
        step_loss, rollout, sampled_tokens = backward(s, batches, kl_term, step)
        lr, grad_norm, skipped = optimizer_step(s, step, step_loss, batches, state.skipped_steps)
        epoch, index = data_position(group, len(s.data.train))
        elapsed = time.perf_counter() - tick
        tokens = state.train_tokens + sum(b.n_tokens for b in batches) + sampled_tokens
        record(StepEvent(step, step_loss, lr, group[-1][0], tokens,
                         (tokens - s.start.train_tokens) / elapsed if elapsed > 0 else 0.0, grad_norm,
                         tuple(src for b in batches for src in b.sources), s.schedule.total_steps, rollout))
        evaluating = s.schedule.evaluates(step)
        measured = evaluate_and_probe(s, step, record) if evaluating else None
        state = TrainState(step, epoch, index, 0, tokens, measured, skipped,
                           replay.position if replay is not None else 0,
                           s.start.wall_seconds + time.perf_counter() - s.started)
        stopping = agree_to_stop(stop, s.accelerator)
        # With probes, every evaluation is a candidate for the final model, so it gets a checkpoint.
        if s.schedule.saves(step) or stopping or (evaluating and fg.measure_during_training):
            save_and_retain(s, state, record)
        if stopping:
            signal_name = stop.requested or "SIGTERM"
            record(StopEvent(step, signal_name))
            return state, signal_name
    return state, None


def step_batches(s: Session, stream: Iterator[tuple[int, int, Batch]], replay: ReplaySource | None,
                 ) -> tuple[list[tuple[int, int, Batch]], list[Batch], KLTerm | None]:
    """This step's micro-batches of every process (with replayed general text mixed in) and the KL
    term's general-text batches of this process."""
    group = [next(stream) for _ in range(s.schedule.micro_per_step)]
    batches = [b for _, _, b in group]
    kl_term = None
    fg, world, rank = s.config.forgetting, s.accelerator.num_processes, s.accelerator.process_index
    if replay is not None:  # every rank walks the same replay stream, so all agree on the step
        if fg.replay_fraction > 0:
            batches = [replay.extend(b, fg.replay_fraction) for b in batches]
        if fg.kl_weight > 0:
            kl_batches = [replay.batch(max(1, round(s.objective.trained_tokens(b) * fg.kl_tokens))) for b in batches]
            kl_term = KLTerm(fg.kl_weight, kl_batches[rank::world], s.base_copy)
    return group, batches, kl_term


def backward(s: Session, batches: list[Batch], kl_term: KLTerm | None,
             step: int) -> tuple[float, dict[str, float] | None, int]:
    """This process's share of the step's gradients; returns the step's loss over all processes and,
    for GRPO, what its samples scored (`GroupLoss.step_metrics`) and their tokens (trained beside the
    prompts; 0 for the other objectives)."""
    world, rank = s.accelerator.num_processes, s.accelerator.process_index
    objective_loss = s.objective.step_loss(batches, s.accelerator.unwrap_model(s.model), step,
                                           s.accelerator.device, s.dtype)
    step_loss = backward_group(s.model, batches[rank::world], s.accelerator, s.dtype,
                               group_trained=sum(b.n_trained for b in batches), kl_term=kl_term,
                               forward_tokens=s.forward_tokens if s.objective.splits_batches else None,
                               step_loss=objective_loss)
    if world > 1:
        step_loss = float(s.accelerator.reduce(torch.tensor(step_loss, device=s.accelerator.device), "sum"))
    if isinstance(objective_loss, GroupLoss):
        return step_loss, objective_loss.step_metrics(), objective_loss.totals.tokens
    return step_loss, None, 0


def optimizer_step(s: Session, step: int, step_loss: float, batches: list[Batch],
                   skipped: int) -> tuple[float, float, int]:
    """Clip, then step unless the loss or gradient norm is not finite: that stops the run naming the
    rows (no checkpoint is written from this state), or with `skip_nonfinite` skips the update.
    Returns the step's learning rate, its gradient norm before clipping, and the skipped-step count."""
    config = s.config
    max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
    grad_norm = float(s.accelerator.clip_grad_norm_(s.trainable, max_norm))
    lr = s.optimizer.param_groups[0]["lr"]
    if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
        rows = [src for b in batches for src in b.sources]
        if not config.skip_nonfinite:
            raise NonFiniteLossError(
                f"non-finite {'loss' if not math.isfinite(step_loss) else 'gradient norm'} at step {step} "
                f"(rows {', '.join(rows)}); no checkpoint was written from this state. Lower lr, check "
                "those rows, or set skip_nonfinite: true")
        s.console.print(f"[yellow]warning:[/] skipped step {step}: non-finite loss (rows {', '.join(rows)})")
        skipped += 1
    else:
        s.optimizer.step()
    s.scheduler.step()  # also on a skipped step: the schedule counts steps, not updates
    s.optimizer.zero_grad(set_to_none=True)
    return lr, grad_norm, skipped


def data_position(group: list[tuple[int, int, Batch]], n_train: int) -> tuple[int, int]:
    """(epoch, index in its order) of the next micro-batch after this step's last one."""
    epoch, index, last = group[-1]
    index += len(last.sources)
    if index >= n_train:
        epoch, index = epoch + 1, 0
    return epoch, index


def evaluate_and_probe(s: Session, step: int, record: Record) -> float:
    """The validation loss after `step`, and the forgetting probes when measured during training."""
    record(s.objective.evaluate(s.model, s.val_batches, s.accelerator.device, s.dtype, step))
    val_loss = s.metrics[-1]["val_loss"]
    fg = s.config.forgetting
    if fg.measure_during_training:
        with autocast(s.accelerator.device, s.dtype):  # frozen weights may be stored in bf16
            probes = measure_probes_fast(s.accelerator.unwrap_model(s.model), s.tokenizer, s.config.model,
                                         fg.probes, base_model=s.base_copy)
        ok, reason = within_budget(fg.budget, probes)
        record(ProbesEvent(**probe_metrics_row(step, probes, ok)))
        if not ok:
            s.console.print(f"step {step}: over the forgetting budget ({reason})")
    return val_loss


def save_and_retain(s: Session, state: TrainState, record: Record) -> None:
    """A checkpoint of `state` (a collective: every rank gathers its shards and RNG), then retention,
    which never removes the step the final model would be chosen from."""
    from accelerate.utils import gather_object

    rng_states = gather_object([rng_state()]) if s.accelerator.num_processes > 1 else None
    weights, optimizer_state = gather_trained(s.accelerator.unwrap_model(s.model), s.inner_optimizer)
    path = None
    if s.accelerator.is_main_process:
        path = save_checkpoint(s.run.path, weights, optimizer_state, s.scheduler, state, s.metrics, rng_states)
        chosen, _ = select_final(s.metrics)
        apply_retention(s.run.path, s.config.keep_last, newest_step=state.step,
                        protected={chosen} if chosen is not None else set())
    s.accelerator.wait_for_everyone()
    if path is not None:
        record(CheckpointEvent(state.step, str(path)))


# --- save: the final model is the best evaluation within the forgetting budget

def save_final(s: Session, state: TrainState, base_val_loss: float, record: Record) -> TrainResult:
    """Save the final model (the selected step's weights; the last ones beside it, labelled) and
    summary.json; every rank takes part in gathering the weights, rank 0 writes."""
    wall = s.start.wall_seconds + time.perf_counter() - s.started  # every session of a resumed run
    total_steps, metrics = s.schedule.total_steps, s.metrics
    chosen, why = select_final(metrics)
    last_val_loss = val_loss = latest_val_loss(metrics)
    if chosen is not None and chosen != total_steps:
        val_loss = next(r["val_loss"] for r in metrics if r["step"] == chosen and "val_loss" in r)
    result = TrainResult(s.run.path, base_val_loss, val_loss, state.train_tokens, wall, total_steps,
                         main_process=s.accelerator.is_main_process, objective=s.config.objective,
                         start=start_label(s.config))
    unwrapped = s.accelerator.unwrap_model(s.model)
    # A collective under FSDP (every rank gathers its shards); the full model for full fine-tuning.
    final_weights = gather_weights(unwrapped, frozen=s.config.method == "full")
    if not s.accelerator.is_main_process:
        return result
    method = s.config.method
    if chosen is not None and chosen != total_steps:
        # Keep the last weights too, labelled, then put the chosen checkpoint's weights in place.
        last_dir = save_trained(unwrapped, s.tokenizer, method, s.run.path, final_weights)
        labelled = last_dir.with_name(f"{last_dir.name}-last")
        shutil.rmtree(labelled, ignore_errors=True)
        last_dir.rename(labelled)
        final_weights.update(read_trainable(s.run.path / "checkpoints" / f"step-{chosen}"))
    save_trained(unwrapped, s.tokenizer, method, s.run.path, final_weights)
    if chosen is not None:
        s.console.print(f"final model: step {chosen} of {total_steps}, {why}")
    within = next((r["within_budget"] for r in metrics
                   if r["step"] == (chosen or total_steps) and "within_budget" in r), None)
    finished = FinishedEvent(
        base_val_loss=base_val_loss, final_val_loss=val_loss, last_val_loss=last_val_loss,
        selected_step=chosen or total_steps, selection=why, within_budget=within,
        # GRPO's loss is minus a reward, which may be 0 at the base: no relative change then (None)
        val_loss_change=(val_loss - base_val_loss) / abs(base_val_loss) if base_val_loss else None,
        train_tokens=state.train_tokens,
        wall_seconds=wall, steps=total_steps, skipped_steps=state.skipped_steps, method=method,
        model=s.config.model)
    s.run.write_summary(finished.to_dict())
    record(finished)
    return result
