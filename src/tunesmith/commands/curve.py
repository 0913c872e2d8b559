"""`tunesmith curve`: do I have enough data? The same config trained on nested, seeded shares of
the training split, every point measured on the same held-out examples, a learning curve fitted
through the points and read by fixed rules; writes OUTPUT/curve.json, curve.png and report.html
beside the point runs (OUTPUT/fraction-F/, each a normal run directory).

The recipe: plan the points (epochs and the evaluation interval resolved once, from the full
training split, so that the runs differ only in their data) -> train or reuse each point -> measure
each on the held-out split -> measure the base -> fit and report. A point whose run finished and
was measured is reused, so after a kill the same command continues (the interrupted point resumes
from its newest checkpoint, as `train --resume auto` would).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from rich.console import Console

from ..config import ConfigError, TrainConfig
from ..data import Example, PreparedData, data_options, prepare_data
from ..data.prepare import training_subset
from ..errors import RunDirError
from ..evaluation.bootstrap import bootstrap_ci
from ..evaluation.learning_curve import CurveAnalysis, analyse_curve, point_interval
from ..evaluation.report import budget_points, plot_curve, write_curve_report
from ..evaluation.text_metrics import rouge_l, token_f1
from ..forgetting.scoring import target_logprobs
from ..model.tokenizer import load_tokenizer
from ..run import RunDir, base_of, heldout, load_run, write_curve, write_heldout
from ..settings import CurveSettings
from ..training.batching import epoch_plan
from ..training.resume import check_resumable
from ..training.schedule import plan_schedule
from .evaluate import TASK_SIZES, generate_answers, generation_sample

"""Per point (and for the base, in OUTPUT): every held-out example's summed NLL and target tokens."""
GENERATION = TASK_SIZES["standard"]
"""With --generate: eval's standard sample (12 held-out questions, 64 new tokens), the same for every point."""


@dataclass(frozen=True)
class CurvePoint:
    """One trained share of the data, measured on the held-out split."""

    fraction: float
    examples: int
    """Training examples of this share."""
    run_dir: Path
    loss: float
    """Held-out loss of the run's final model: total NLL / total target tokens."""
    ci95: tuple[float, float]
    """Its 95% bootstrap interval over the held-out examples."""
    within_budget: bool | None
    """The run's forgetting verdict (summary.json); None when probes were not measured."""
    forgetting: str
    """That verdict in words, with the worst probe's share of its budget."""
    wall_seconds: float
    reused: bool
    """The run had finished before this call (a resumed curve)."""
    generated: dict[str, Any] | None
    """With --generate: token_f1 and rouge_l (value, ci95) on the fixed sample."""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "run_dir": str(self.run_dir), "ci95": list(self.ci95)}


@dataclass(frozen=True)
class CurveResult:
    output: Path
    """The curve's folder: the point runs, curve.json, curve.png, report.html."""
    points: list[CurvePoint]
    base_loss: float
    """The untrained model's held-out loss, measured the same way as the points."""
    analysis: CurveAnalysis
    report: dict[str, Any]
    """curve.json's content."""


def curve(config: TrainConfig, fractions: Sequence[float] | None = None, output: str | Path | None = None,
          generate: bool = False, overwrite: bool = False, console: Console | None = None,
          show_progress: bool = True, settings: CurveSettings | None = None) -> CurveResult:
    """Train `config` at each fraction of its training split, measure, fit; write the curve's files.

    `output` defaults to `<config.output>-curve`, else runs/<data-name>-curve (no timestamp: the same
    command finds its points again). `overwrite` trains every point afresh."""
    from .train import train

    settings = settings or (CurveSettings(fractions=tuple(fractions)) if fractions else CurveSettings())
    console = console or Console(stderr=True, soft_wrap=True)
    started = time.perf_counter()
    root = curve_root(config, output)
    tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    full = prepare_data(config.data, config.eval, tokenizer, config.max_seq_tokens, config.val_fraction, config.seed,
                        **data_options(config))
    plans = plan_points(config, full, settings.fractions, root)
    console.print(f"[bold]tunesmith curve[/]: {len(plans)} points of {len(full.train)} training examples "
                  f"({', '.join(f'{c.train_fraction:g}' for c, _ in plans)}), {plans[0][0].epochs:g} epoch(s) each, "
                  f"the same {len(full.val)} held-out examples; output {root}")
    pairs = generation_sample(config, full.val, GENERATION) if generate else []
    points: list[CurvePoint] = []
    for k, (point_config, n) in enumerate(plans):
        run_dir = Path(point_config.output)
        reused = not overwrite and finished(run_dir)
        if reused:
            refuse_changed(run_dir, point_config, full)
        console.print(progress_line(k, plans, points, time.perf_counter() - started, reused))
        if not reused:
            train(point_config, overwrite=overwrite, console=console, show_progress=show_progress,
                  resume=None if overwrite else "auto")
        points.append(measure_point(point_config, n, full.val, pairs, reused, overwrite, settings))
    base = measure_base(root, plans[-1][0], full.val, overwrite)
    return report_curve(root, plans[-1][0], points, base, full.val, settings, time.perf_counter() - started)


# --- plan: which runs, with what config

def curve_root(config: TrainConfig, output: str | Path | None) -> Path:
    """The curve's folder; refused when the config would not give runs that differ only in data,
    or when the folder is a run of its own."""
    if config.max_steps is not None:
        raise ConfigError("curve: max_steps fixes the optimizer steps, so a smaller share would take more passes "
                          "over its data and the points would differ in more than data; set epochs instead "
                          "(--epochs), or leave it to the full data's default")
    if config.train_fraction != 1.0:
        raise ConfigError(f"curve: train_fraction is set per point ({config.train_fraction:g} given); remove it and "
                          "list the shares with --fractions")
    if output is not None:
        root = Path(output)
    elif config.output:
        root = Path(f"{config.output.rstrip('/')}-curve")
    else:
        root = Path("runs") / f"{Path(config.data).stem}-curve"
    if RunDir.is_run(root):
        raise RunDirError(f"'{root}' is a training run, not a curve's folder; choose another --output")
    if root.exists() and not root.is_dir():
        raise RunDirError(f"output '{root}' is a file; choose a directory name with --output")
    return root


def plan_points(config: TrainConfig, full: PreparedData, fractions: Sequence[float],
                root: Path) -> list[tuple[TrainConfig, int]]:
    """(config, training examples) of each point. Epochs and the evaluation interval come from the
    full training split, once: left to each point, small shares would get more epochs
    (`default_epochs`) and more evaluations per step, and the points would differ in more than data."""
    resolved = config.resolve(len(full.train))  # epochs of the full split (`default_epochs`) unless given
    epochs = resolved.epochs
    micro_per_epoch = len(epoch_plan(full.train, config.batch_size, config.seed, 0, config.batch_tokens))
    eval_every = plan_schedule(resolved, micro_per_epoch, 1).eval_every
    plans = []
    for fraction in fractions:
        n = len(training_subset(full.train, fraction, config.seed))
        point = dataclasses.replace(config, train_fraction=float(fraction), epochs=epochs, eval_every=eval_every,
                                    output=str(root / f"fraction-{fraction:g}"))
        plans.append((point, n))
    if len({n for _, n in plans}) < len(plans):
        raise ConfigError(f"curve: fractions {', '.join(f'{f:g}' for f in fractions)} of {len(full.train)} training "
                          "examples give subsets of the same size; use fewer or more distant fractions, or more data")
    return plans


def finished(run_dir: Path) -> bool:
    """The point's run finished training: summary.json is the last file a run writes. (Its
    measurement, if a kill came before it, is taken by `measure_point`.)"""
    return RunDir(run_dir).finished()


def refuse_changed(run_dir: Path, config: TrainConfig, full: PreparedData) -> None:
    """A finished point is reused only when it was trained as asked now, on the same data."""
    problems = check_resumable(RunDir.open(run_dir), config.resolve(0), full.sha256)  # epochs set: resolve fills lr
    if problems:
        raise RunDirError(f"curve: the finished point '{run_dir}' was trained differently: " + "; ".join(problems) +
                          ". Pass --overwrite to train every point again, or choose another --output.")


def progress_line(k: int, plans: list[tuple[TrainConfig, int]], done: list[CurvePoint], elapsed: float,
                  reused: bool) -> str:
    """'point k of N' with an ETA: training time grows with the examples trained (epochs are fixed),
    so the seconds per example of the points done so far, times the examples still to train."""
    config, n = plans[k]
    head = f"[bold]curve: point {k + 1} of {len(plans)}[/] (fraction {config.train_fraction:g}, {n:,} examples)"
    if reused:
        return f"{head}: finished before, reused"
    trained = sum(p.examples for p in done)
    if not trained:
        return f"{head}; ETA after the first point"
    remaining = sum(m for _, m in plans[k:]) * sum(p.wall_seconds for p in done) / trained
    return f"{head}; {elapsed / 60:.1f} min so far, ETA ~{remaining / 60:.1f} min"


# --- measure: the same held-out examples for every point and for the base

def heldout_losses(model: Any, val: Sequence[Example]) -> dict[str, Any]:
    """Per held-out example: its source, summed NLL of its targets, and their number."""
    logprobs = target_logprobs(model, val)
    return {"sources": [e.source for e in val], "nll": [float(-lp.sum()) for lp in logprobs],
            "tokens": [int(lp.size) for lp in logprobs]}


def scored_answers(model: Any, tokenizer: Any, pairs: list[tuple[list[dict[str, str]], str]]) -> dict[str, Any]:
    """Token F1 and ROUGE-L of greedy answers on the fixed sample, each with its 95% interval."""
    answers = generate_answers(model, tokenizer, pairs, GENERATION)
    out: dict[str, Any] = {"n": len(pairs)}
    for name, metric in (("token_f1", token_f1), ("rouge_l", rouge_l)):
        values = np.array([metric(a, ref) for a, (_, ref) in zip(answers, pairs)])
        out[name] = {"value": float(values.mean()), "ci95": list(bootstrap_ci(values, np.ones(len(values))))}
    return out


def read_heldout(folder: Path, val: Sequence[Example]) -> dict[str, Any] | None:
    """A stored measurement (FOLDER/heldout.json), if it was taken on these held-out examples."""
    stored = heldout(folder)
    return stored if stored is not None and stored["sources"] == [e.source for e in val] else None


def measure_point(config: TrainConfig, n: int, val: Sequence[Example], pairs: list, reused: bool,
                  overwrite: bool, settings: CurveSettings) -> CurvePoint:
    """The point's held-out losses (measured once, then read from RUN/heldout.json) and its verdicts."""
    run = RunDir.open(config.output)
    stored = None if overwrite else read_heldout(run.path, val)
    if stored is None or (pairs and stored.get("generated") is None):
        model, tokenizer = load_run(run.path)
        stored = {**heldout_losses(model, val), "fraction": config.train_fraction, "examples": n,
                  "generated": scored_answers(model, tokenizer, pairs) if pairs else None}
        write_heldout(run.path, stored)
    summary = run.summary()
    nll, tokens = np.array(stored["nll"]), np.array(stored["tokens"], float)
    return CurvePoint(config.train_fraction, n, run.path, float(nll.sum() / tokens.sum()),
                      point_interval(nll, tokens, settings), summary.get("within_budget"),
                      forgetting_text(run, summary), float(summary["wall_seconds"]), reused,
                      stored.get("generated") if pairs else None)


def forgetting_text(run: RunDir, summary: dict[str, Any]) -> str:
    """The point's forgetting verdict with the worst probe at its final step, by `budget_share`."""
    ok = summary.get("within_budget")
    if ok is None:
        return "not measured"
    share = next(((s, probe) for step, _, s, probe in budget_points(run.metrics(), run.config().forgetting.budget)
                  if step == summary["selected_step"]), None)
    verdict = "within budget" if ok else "OVER budget"
    return verdict if share is None else f"{verdict} (worst: {share[1]} at {share[0]:.0%} of its budget)"


def measure_base(root: Path, config: TrainConfig, val: Sequence[Example], overwrite: bool) -> dict[str, Any]:
    """The base model's held-out losses, measured once with the same code as the points (OUTPUT/heldout.json)."""
    stored = None if overwrite else read_heldout(root, val)
    if stored is None:
        model, _ = load_run(config.output)
        with base_of(model, config)() as base:
            stored = heldout_losses(base, val)
        write_heldout(root, stored)
    return stored


# --- fit and report

def report_curve(root: Path, planned: TrainConfig, points: list[CurvePoint], base: dict[str, Any],
                 val: Sequence[Example], settings: CurveSettings, seconds: float) -> CurveResult:
    """Fit the points, write curve.json, curve.png and report.html; return the result. `planned` is
    a point's config (every point has its epochs and evaluation interval)."""
    stored = [heldout(p.run_dir) for p in points]
    nll = np.array([s["nll"] for s in stored])  # (K, E)
    tokens = np.array(base["tokens"], float)
    base_loss = float(np.sum(base["nll"]) / tokens.sum())
    analysis = analyse_curve([p.examples for p in points], [p.fraction for p in points], nll, tokens, base_loss,
                             [p.within_budget for p in points], settings)
    report = {
        "data": planned.data, "model": planned.model, "method": planned.method,
        "epochs": planned.epochs, "eval_every": planned.eval_every, "lr": planned.resolve(0).lr,
        "held_out_examples": len(val), "held_out_tokens": int(tokens.sum()),
        "base": {"loss": base_loss, "ci95": list(point_interval(np.array(base["nll"]), tokens, settings))},
        "points": [p.to_dict() for p in points],
        "fit": analysis.to_dict(), "verdict": analysis.verdict,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": seconds,
    }
    write_curve(root, report)
    plot_curve(report, root / "curve.png")
    write_curve_report(root, report)
    return CurveResult(root, points, base_loss, analysis, report)


def print_summary(result: CurveResult, echo: Callable[[str], None]) -> None:
    """The command's closing lines: the points, then the verdict."""
    echo(f"tunesmith curve: {len(result.points)} points, held-out loss of the base model {result.base_loss:.3f}")
    for p in result.points:
        generated = f", token F1 {p.generated['token_f1']['value']:.2f}" if p.generated else ""
        echo(f"  fraction {p.fraction:<6g} {p.examples:>6,} examples  held-out loss {p.loss:.3f} "
             f"[{p.ci95[0]:.3f}, {p.ci95[1]:.3f}]{generated}  forgetting: {p.forgetting}")
    for line in result.analysis.verdict.splitlines():
        echo(f"  {line}")
    echo(f"  curve             {result.output / 'curve.png'}")
    echo(f"  report            {result.output / 'report.html'}")
