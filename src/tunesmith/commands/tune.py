"""`tunesmith tune`, top to bottom: open the search -> run trials until `trials` finish or `minutes` run out
-> choose the lowest held-out loss within the forgetting budget -> write the table, the plot, best.yaml and
the `best` link -> evaluate the chosen run. The machinery is in `tuning/`; each trial is a `train` run."""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from rich.console import Console
from rich.markup import escape

from ..config import TrainConfig, dump_config, read_config_file
from ..errors import ConfigError, NonFiniteLossError, RunDirError
from ..run import RunDir, write_atomic
from ..sources import is_config_file, load_source
from ..tuning.plot import plot_trials
from ..tuning.space import Dimension, TuneConfig, apply_settings, fixed_by, search_space, suggest, tune_config_from_dict
from ..tuning.study import (
    DB_NAME,
    EvaluationReporter,
    draws_so_far,
    finished_trials,
    make_sampler,
    open_study,
    optuna_module,
    owner,
    recover_interrupted,
    requeue,
    set_budget_constraint,
    state_of,
)
from ..tuning.trials import TrialRecord, choose, figures, read_trial, table_csv, table_json

__all__ = ["TuneConfig", "TuneResult", "load_tune", "result_lines", "tune"]

TRIALS_CSV, TRIALS_JSON, TRADEOFF_PNG = "trials.csv", "trials.json", "tradeoff.png"
BEST_YAML, BEST_LINK = "best.yaml", "best"


@dataclass(frozen=True)
class TuneResult:
    """What a search found."""

    output: Path
    """The search's folder: tune.db, the trials' run directories, the table, the plot, best.yaml, best."""
    trials: tuple[TrialRecord, ...]
    """Every trial, in the order asked."""
    chosen: TrialRecord | None
    """The result (None when no trial completed)."""
    choice: str
    """Why that trial, in words; says so plainly when none was within the budget."""
    within_budget: bool
    """Whether the chosen trial is within the forgetting budget."""
    evaluation: dict[str, Any] | None = None
    """`tunesmith eval`'s result for the chosen run (eval.json), when asked for."""
    interrupted: bool = False
    """True when a signal stopped a trial: the same command continues the search."""


@dataclass(frozen=True)
class Search:
    """What the phases of a search share."""

    config: TrainConfig
    """Every trial's config before its settings: flags and the config file applied."""
    settings: TuneConfig
    space: tuple[Dimension, ...]
    folder: Path
    study: Any
    """The Optuna study in folder/tune.db."""


def load_tune(source: str, flags: dict[str, Any]) -> tuple[TrainConfig, TuneConfig, set[str]]:
    """SOURCE (a CONFIG.yaml or a data file) with the flags over it: the trials' config, the `tune:`
    section, and the searchable settings the file or a flag fixes."""
    raw = read_config_file(Path(source)) if is_config_file(source) else {}
    config = load_source(source, flags)
    return config, tune_config_from_dict(raw.get("tune"), source), fixed_by(raw, flags)


def tune(config: TrainConfig, settings: TuneConfig | None = None, fixed: Collection[str] = (), *,
         trials: int | None = None, minutes: float | None = None, evaluate: bool = True, overwrite: bool = False,
         console: Console | None = None, show_progress: bool = False) -> TuneResult:
    """Search settings of `config` for the lowest held-out loss within its forgetting budget.

    `settings` is the `tune:` section (its `trials` and `minutes` overridden by the arguments); `fixed` names
    searchable settings to keep at `config`'s values. The search lives in `config.output` (default
    runs/<data-name>-tune); running it again continues it. Each trial is a run directory in that folder.
    """
    settings = dataclasses.replace(settings or TuneConfig(), **{k: v for k, v in (("trials", trials),
                                                                                ("minutes", minutes)) if v is not None})
    console = console or Console(stderr=True)
    search = open_search(config, settings, fixed, overwrite, console)
    interrupted = run_trials(search, console, show_progress)
    records = read_records(search)
    chosen, choice = choose(records)
    write_outputs(search, records, chosen, choice)
    evaluation = None
    if evaluate and chosen is not None and not interrupted:
        from .evaluate import evaluate_run

        evaluation = evaluate_run(search.folder / chosen.run_dir, log=lambda m: console.print(f"[dim]{escape(m)}[/]"))
    return TuneResult(search.folder, tuple(records), chosen, choice, bool(chosen and chosen.within_budget),
                      evaluation, interrupted)


def open_search(config: TrainConfig, settings: TuneConfig, fixed: Collection[str], overwrite: bool,
                console: Console) -> Search:
    """The search's folder and study (continued when it holds one of the same settings), interrupted trials
    queued again, and a header saying what is searched."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("tune runs its trials in one process each (not under torchrun or accelerate launch): to "
                          "share a search, start several `tunesmith tune` processes on the same --output")
    if not config.forgetting.measure_during_training:
        raise ConfigError("config key 'forgetting.measure_during_training' must be true for tune: the forgetting "
                          "budget, the search's constraint, is measured by the probes at each evaluation")
    folder = Path(config.output) if config.output else Path("runs") / f"{Path(config.data).stem}-tune"
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"output '{folder}' is a file; choose a folder with --output")
    if folder.is_dir() and any(folder.iterdir()) and (overwrite or not (folder / DB_NAME).exists()):
        if not overwrite:
            raise RunDirError(f"output '{folder}' holds files but no search ({DB_NAME}); choose another --output, "
                              "or pass --overwrite to replace it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    space = search_space(config, settings, fixed)
    identity = {"config": dataclasses.replace(config, output=None).to_dict(), "fixed": sorted(fixed),
                "space": [dataclasses.asdict(d) for d in space],
                "tune": {k: v for k, v in settings.to_dict().items() if k not in ("trials", "minutes")}}
    study = open_study(folder, identity, settings)
    search = Search(config, settings, space, folder, study)
    print_header(search, recover_interrupted(study), console)
    return search


def print_header(search: Search, resumed: list[str], console: Console) -> None:
    """The search's first lines: what is searched and fixed, how much is done, which trials resume."""
    config, space = search.config, search.space
    searched = ", ".join(f"{d.name} {list(d.choices)}" if d.kind == "choice" else
                         f"{d.name} [{d.low:g}, {d.high:g}]{' (log)' if d.kind == 'log' else ''}" for d in space)
    done = len(finished_trials(search.study))
    console.print(f"[bold]tunesmith tune[/] {config.method} on {config.model}: {search.settings.trials} trials"
                  f"{f' or {search.settings.minutes:g} minutes' if search.settings.minutes else ''}, searching "
                  f"{searched or 'nothing (every setting is fixed)'}; output {search.folder}"
                  f"{f'; {done} trial(s) already finished' if done else ''}", highlight=False)
    for run_dir in resumed:
        console.print(f"{run_dir} was interrupted: it is resumed in its run directory", highlight=False)


def run_trials(search: Search, console: Console, show_progress: bool) -> bool:
    """Trials until `trials` have finished or `minutes` would be passed; True when a signal stopped one."""
    study, settings = search.study, search.settings
    while len(done := finished_trials(study)) < settings.trials:
        if not time_left(done, settings.minutes):
            console.print(f"tune: stopping after {len(done)} trial(s): the {settings.minutes:g}-minute limit "
                          "leaves no room for another", highlight=False)
            break
        draw = draws_so_far(study)
        study.sampler = make_sampler(settings, search.config.seed, draw)
        trial = study.ask()
        if run_trial(search, trial, draw, len(done) + 1, console, show_progress) == "interrupted":
            console.print("tune: stopped; run the same command to continue the search", highlight=False)
            return True
        print_progress(search, len(finished_trials(study)), console)
    return False


def time_left(done: list[Any], minutes: float | None) -> bool:
    """Whether another trial fits: the finished trials' minutes plus the median one's stay within the limit."""
    if minutes is None or not done:
        return True
    spent = [t.user_attrs.get("minutes", 0.0) for t in done]
    return sum(spent) + statistics.median(spent) <= minutes


def run_trial(search: Search, trial: Any, draw: int, k: int, console: Console, show_progress: bool) -> str:
    """Train one trial (draw `draw`, the k-th to finish) in its run directory and tell the study how it
    ended; returns its state."""
    from .train import train

    optuna, study = optuna_module(), search.study
    run_dir = trial.user_attrs.get("run_dir") or trial_dir_name(search, draw, trial.number)
    trial.set_user_attr("run_dir", run_dir)
    trial.set_user_attr("owner", owner())
    chosen = suggest(trial, search.space)
    path = search.folder / run_dir
    config = apply_settings(search.config, chosen, str(path))
    console.print(f"[bold]trial {k} of {search.settings.trials}[/] ({run_dir}): " +
                  (", ".join(f"{name} {value:.3g}" for name, value in chosen.items()) or "the config as given"),
                  highlight=False)
    reporter, started = EvaluationReporter(trial, path), time.perf_counter()
    try:
        result = train(config, console=console, show_progress=show_progress, resume="auto", subscribers=[reporter])
    except optuna.TrialPruned as exc:
        return tell(search, trial, path, "pruned", started, note=str(exc))
    except NonFiniteLossError as exc:
        trial.set_user_attr("error", str(exc))
        return tell(search, trial, path, "failed", started, note=str(exc))
    except BaseException:  # a crash or a second Ctrl-C: the next search resumes this trial in its directory
        requeue(study, trial.number, trial.params, run_dir)
        raise
    if result.interrupted:
        requeue(study, trial.number, trial.params, run_dir)
        return "interrupted"
    reporter.report()  # a resumed run that had nothing left to train sent no evaluations
    return tell(search, trial, path, "complete", started)


def trial_dir_name(search: Search, k: int, number: int) -> str:
    """trial-K by draw (the same names in a resumed search as in an uninterrupted one); a name another
    process's trial took at the same moment gets the trial's number too."""
    name = f"trial-{k:03d}"
    taken = {t.user_attrs.get("run_dir") for t in search.study.get_trials(deepcopy=False) if t.number != number}
    return name if name not in taken else f"{name}-{number}"


def tell(search: Search, trial: Any, path: Path, state: str, started: float, note: str = "") -> str:
    """Record a trial's minutes, budget share and note, then tell the study its state (and objective)."""
    optuna = optuna_module()
    run = RunDir(path)
    summary = run.summary() if state == "complete" else None
    rows = run.metrics()
    found = figures(rows, summary, search.config.forgetting.budget) if rows else {}
    trial.set_user_attr("minutes", (time.perf_counter() - started) / 60)
    set_budget_constraint(trial, found.get("budget_share"))
    if note:
        trial.set_user_attr("note", note)
    if state == "complete":
        search.study.tell(trial, summary["final_val_loss"])
    else:
        search.study.tell(trial, state=optuna.trial.TrialState.PRUNED if state == "pruned" else
                          optuna.trial.TrialState.FAIL)
    return state


def read_records(search: Search) -> list[TrialRecord]:
    """Every asked trial's record, from its run directory."""
    trials = [t for t in search.study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
    resumed_by = {t.user_attrs["resumes"]: t.number for t in trials if "resumes" in t.user_attrs}
    records = []
    for t in trials:
        state, run_dir = state_of(t), t.user_attrs.get("run_dir", f"trial-{t.number}")
        note = t.user_attrs.get("note", "")
        if state == "interrupted":
            note = f"interrupted; resumed as trial {resumed_by[t.number]}" if t.number in resumed_by else "interrupted"
        records.append(read_trial(search.folder / run_dir, search.config.forgetting.budget, number=t.number,
                                  state=state, run_dir=run_dir, settings=dict(t.params),
                                  minutes=t.user_attrs.get("minutes"), note=note))
    return records


def print_progress(search: Search, done: int, console: Console) -> None:
    """The last trial's outcome, the best so far and the ETA."""
    records = read_records(search)
    last, (best, _) = records[-1], choose(records)
    total = search.settings.trials
    spent = [r.minutes for r in records if r.minutes is not None and r.state != "interrupted"]
    eta = statistics.mean(spent) * (total - done) if spent else 0.0
    if search.settings.minutes is not None:
        eta = min(eta, max(0.0, search.settings.minutes - sum(spent)))
    outcome = last.state
    if last.val_loss is not None and last.task_gain is not None:
        verdict = "within budget" if last.within_budget else "OVER budget"
        outcome += (f": held-out loss {last.val_loss:.4f} ({-last.task_gain:+.1%}), {verdict} (worst probe "
                    f"{last.worst_probe} at {last.budget_share:.0%} of its budget)")
    best_text = (f"{best.run_dir} {best.val_loss:.4f}{'' if best.within_budget else ' (over budget)'}"
                 if best else "none yet")
    console.print(f"trial {done} of {total} {outcome}; {last.minutes or 0:.1f} min | best so far: {best_text} | "
                  f"ETA {eta:.0f} min", highlight=False)


def write_outputs(search: Search, records: list[TrialRecord], chosen: TrialRecord | None, choice: str) -> None:
    """trials.csv, trials.json, tradeoff.png, and for a chosen trial best.yaml and the `best` link."""
    folder = search.folder
    write_atomic(folder / TRIALS_CSV, table_csv(records))
    write_atomic(folder / TRIALS_JSON, table_json(records, chosen, choice))
    plot_trials(records, chosen, folder / TRADEOFF_PNG)
    if chosen is None:
        return
    config = dataclasses.replace(RunDir.open(folder / chosen.run_dir).config(), output=None)
    verdict = "within" if chosen.within_budget else "OVER"
    header = (f"# tunesmith tune: the settings of {chosen.run_dir} (held-out loss {chosen.val_loss:.4f}, {verdict} the "
              f"forgetting budget).\n# Train them again with: tunesmith train {folder / BEST_YAML}\n")
    write_atomic(folder / BEST_YAML, header + dump_config(config))
    link_best(folder, chosen.run_dir)


def link_best(folder: Path, run_dir: str) -> None:
    """folder/best -> the chosen run directory (relative, replaced atomically); a copy where links fail."""
    tmp = folder / f".{BEST_LINK}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(run_dir, target_is_directory=True)
        os.replace(tmp, folder / BEST_LINK)
    except OSError:  # a file system without symbolic links
        shutil.rmtree(folder / BEST_LINK, ignore_errors=True)
        shutil.copytree(folder / run_dir, folder / BEST_LINK)


def result_lines(result: TuneResult) -> list[str]:
    """The search's outcome for the terminal (rich markup): the chosen trial and why, where the files are."""
    chosen, output = result.chosen, result.output
    lines = ["", f"[bold]tunesmith tune: {len(result.trials)} trial(s)[/] in {escape(str(output))}"]
    if chosen is None:
        return [*lines, f"  [red]{escape(result.choice)}[/]"]
    verdict = "within" if result.within_budget else "[red]OVER[/]"
    lines += [f"  chosen            {chosen.run_dir}: held-out loss {chosen.base_val_loss:.4f} -> "
              f"{chosen.val_loss:.4f} ({-(chosen.task_gain or 0):+.1%}), {verdict} the forgetting budget",
              f"  why               {escape(result.choice)}",
              "  settings          " + ", ".join(f"{k} {v:g}" for k, v in chosen.settings.items() if v is not None)]
    if result.evaluation is not None:
        within = "within" if result.evaluation["within_budget"] else "[red]OVER[/]"
        lines.append(f"  tunesmith eval    {within} the forgetting budget; report "
                     f"{escape(str(output / chosen.run_dir / 'report.html'))}")
    return [*lines, f"  table, plot       {escape(str(output / TRIALS_CSV))}, {escape(str(output / TRADEOFF_PNG))}",
            f"  train it again    tunesmith train {escape(str(output / BEST_YAML))}"]
