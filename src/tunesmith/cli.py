"""The `tunesmith` command line: one function per command, each a thin layer over the Python API."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

# Only light modules at the top, so that `tunesmith --help` starts at once; each command imports
# what it needs (torch, transformers) inside its function.
from .cli_config import RUN_KEYS, config_options

# Only light modules at the top, so that `tunesmith --help` starts at once; each command imports
# what it needs (torch, transformers) inside its function.
from .cli_grade import GRADER_CHECK_HELP, check_files_with_grader, grade_command
from .cli_options import KNOWLEDGE_HELP, engine_option, listen_options, repetition_options, retrieval_options
from .cli_server import jobs_group, server_command, ui_command
from .config import DEFAULT_MODEL, TrainConfig
from .errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TunesmithError
from .settings import (
    DEFAULT_EXPORT_FORMAT,
    DEFAULT_GGUF_TYPE,
    EXPORT_FORMATS,
    GGUF_TYPES,
    MERGE_TOLERANCE,
    CompareSettings,
    CurveSettings,
    RetrievalSettings,
    Sampling,
    ServeLimits,
)
from .sources import load_source

console = Console(stderr=True, soft_wrap=True)  # messages name FILE:LINE: never cut them


class _UsageError(TunesmithError):
    """A problem found before `data check` reads a row: a bad flag, a missing file, a model that
    cannot be loaded. Exit 2 keeps 1 for errors in the data itself."""

    exit_code = EXIT_USAGE
    label = "usage error"


class _Commands(click.Group):
    """The root command group; its `invoke` is the one place where user errors are reported."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            raise _with_our_name(exc) from None
        except TunesmithError as exc:
            _exit(exc.label, str(exc), exc.exit_code)
        except FileNotFoundError as exc:  # the OS message names the path
            _exit("error", str(exc), EXIT_ERROR)
        except KeyboardInterrupt:  # the first Ctrl-C stops training cleanly; a second lands here
            _exit("interrupted", "stopped at once by a second Ctrl-C", EXIT_INTERRUPTED)


def _with_our_name(exc: click.NoSuchOption) -> click.NoSuchOption:
    """A flag another tool uses (--learning-rate, --num-epochs, --lora-r) answered with ours."""
    from .config_names import OTHER_TOOLS_NAMES

    ours = OTHER_TOOLS_NAMES.get(exc.option_name.lstrip("-").replace("-", "_"))
    if ours is None:
        return exc
    command = exc.ctx.command if exc.ctx is not None else None
    flag = "--" + ours.replace("_", "-")
    has_flag = command is not None and any(flag in p.opts for p in command.params)
    name = f"use {flag}" if has_flag else f"tunesmith sets it as the config key '{ours}' in a CONFIG.yaml"
    return click.NoSuchOption(exc.option_name, f"No such option: {exc.option_name} — {name}.", ctx=exc.ctx)


def _exit(label: str, message: str, code: int) -> NoReturn:
    """Print `label: message` to stderr and exit `code`. The message is never read as rich markup, and
    not wrapped, so that a path in it stays whole for grep and copy."""
    console.print(f"[bold red]{escape(label)}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _quiet_libraries() -> None:
    # Environment settings, read when transformers and huggingface_hub are imported: importing
    # transformers here would cost every command (and --help) seconds.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # transformers' deprecation notices about its own internals say nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    for name in ("transformers", "accelerate", "peft", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported (a test, a notebook): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _print_json(report: dict[str, Any], as_json: bool) -> bool:
    """With --json, print `report` and return True: the command ends there."""
    import json

    if as_json:
        click.echo(json.dumps(report, indent=2))
    return as_json


def _load_source(source: str, flags: dict[str, Any]) -> TrainConfig:
    """The config of SOURCE, a CONFIG.yaml or a data file, with the command's flags over it."""
    return load_source(source, flags)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tunesmith")
def main() -> None:
    """Fine-tune open language models on small, focused data, and prove they did not forget."""
    _quiet_libraries()


@main.command("train")
@click.argument("source", type=click.Path(), required=False)
@config_options(*RUN_KEYS, "grader", "output", "save_every", "report_to",
                helps={"output": "Run directory (default runs/<data-name>-<timestamp>)."})
@click.option("--knowledge",
              help=f"Train with passages retrieved from this {KNOWLEDGE_HELP} (RAFT; sets retrieval.knowledge).")
@click.option("--judge-url", help="objective grpo with a score_model grader: the judge's OpenAI-compatible /v1 URL "
                                   "(sets grpo.judge_url; its key from TUNESMITH_JUDGE_API_KEY).")
@click.option("--resume", help="Continue a run: RUN, RUN/checkpoints/step-N, or 'auto' (the output dir's newest).")
@click.option("--force", is_flag=True, help="With --resume: continue even if the config or data changed.")
@click.option("--overwrite", is_flag=True, help="Replace an existing non-empty output directory.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def train_command(source: str | None, overrides: dict[str, Any], knowledge: str | None, judge_url: str | None,
                  resume: str | None, force: bool, overwrite: bool, no_progress: bool) -> None:
    """Fine-tune on SOURCE: a data file (.jsonl/.txt/.md/.json/.csv), a folder of them, or a CONFIG.yaml.

    SOURCE may be left out with --resume RUN: the run's own config.yaml is used."""
    from .commands.train import end_processes, train
    from .commands.train_result import result_lines
    from .retrieval.raft import with_knowledge
    from .run import RunDir, checkpoint_run

    if source is None:
        if resume in (None, "auto"):
            raise click.UsageError("give a data file or CONFIG.yaml (or --resume RUN)")
        config = RunDir.open(checkpoint_run(resume)).config(overrides)
    else:
        config = _load_source(source, overrides)
    if judge_url:
        import dataclasses

        config = dataclasses.replace(config, grpo=dataclasses.replace(config.grpo, judge_url=judge_url))
    result = train(with_knowledge(config, knowledge), overwrite=overwrite, console=console,
                   show_progress=not no_progress, resume=resume, force=force)
    end_processes()  # this command owns the process: close its group cleanly (not on errors)
    if not result.interrupted and result.main_process:
        Console().print("\n".join(result_lines(result)))


@main.command("generate")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", required=True, help="The user message.")
@click.option("--system", help="A system prompt (default: the run's system_prompt, else the chat template's own).")
@click.option("--base", is_flag=True, help="Answer with the base model (the run's adapters disabled), to compare.")
@click.option("--max-new-tokens", type=int, default=Sampling.max_new_tokens, show_default=True)
@click.option("--temperature", type=float, default=Sampling.temperature, show_default=True, help="0 is greedy.")
@repetition_options
def generate_command(run: str, prompt: str, system: str | None, base: bool, max_new_tokens: int, temperature: float,
                     repetition_penalty: float, no_repeat_ngram_size: int) -> None:
    """Answer one prompt with the tuned model of RUN (or, with --base, its base model)."""
    import contextlib

    from .commands.generate import generate
    from .data.render import with_system_prompt
    from .run import RunDir, base_of, load_run, run_system_prompt

    model, tokenizer = load_run(run)
    messages = with_system_prompt([{"role": "user", "content": prompt}], system or run_system_prompt(run))
    sampling = Sampling(max_new_tokens, temperature, repetition_penalty=repetition_penalty,
                        no_repeat_ngram_size=no_repeat_ngram_size)
    answering = base_of(model, RunDir.open(run).config())() if base else contextlib.nullcontext(model)
    with answering as answerer:
        click.echo(generate(answerer, tokenizer, messages, sampling=sampling))


@main.command("plan")
@click.argument("source", type=click.Path())
@config_options("model", "method", "max_seq_tokens", "batch_size",
                helps={"model": f"Model directory, hub id, or {DEFAULT_MODEL} (default)."})
@click.option("--devices", type=int, default=1, show_default=True, help="Processes (GPUs or CPU ranks).")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def plan_command(source: str, overrides: dict[str, Any], devices: int, as_json: bool) -> None:
    """Estimate the peak memory per device of training on SOURCE (data file or CONFIG.yaml)."""
    from .commands.plan import plan_lines, plan_memory

    config = _load_source(source, overrides)
    plan = plan_memory(config, devices=devices)
    if not _print_json(plan.to_dict(), as_json):
        click.echo("\n".join(plan_lines(plan, config, devices)))


@main.group("data")
def data_group() -> None:
    """Look at training data before training on it."""


@data_group.command("check")
@click.argument("data")
@config_options("eval", "model", "max_seq_tokens", "columns", "system_prompt", helps={
    "eval": "Evaluation file: checked too, and for leakage from DATA.",
    "model": f"Model whose tokenizer and chat template are used (default {DEFAULT_MODEL}).",
    "max_seq_tokens": f"Longest example in tokens, as in training (default {TrainConfig.max_seq_tokens})."})
# CheckLimits.max_line_bytes is not read here: its package, tunesmith.data, imports torch.
# tests/test_cli.py holds this text to the field.
@click.option("--max-line-bytes", type=int, help="Longest accepted line in bytes (default 1 MiB).")
@click.option("--show", type=click.IntRange(min=0), default=0,
              help="Print N rendered examples, trained tokens highlighted.")
@click.option("--grader", type=click.Path(exists=True, dir_okay=False), help=GRADER_CHECK_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema in the README).")
def data_check_command(data: str, overrides: dict[str, Any], max_line_bytes: int | None, show: int, grader: str | None,
                       as_json: bool) -> None:
    """Check DATA (a data file, a folder of them, or a CONFIG.yaml): exit 0 clean, 1 errors, 2 usage errors."""
    import json

    from .data import data_options, resolve_data_path
    from .data.limits import CheckLimits
    from .data.preview import print_report
    from .model.tokenizer import load_tokenizer

    try:
        config = _load_source(data, overrides)
        for path in filter(None, (config.data, config.eval)):
            if not resolve_data_path(path).exists():
                raise FileNotFoundError(f"{path}: no such data file or folder — check the path")
        limits = CheckLimits(**({"max_line_bytes": max_line_bytes} if max_line_bytes else {}))
        options = data_options(config)
        tokenizer = load_tokenizer(config.model, config.chat_template, config.trust_remote_code)
    except (TunesmithError, FileNotFoundError, ValueError) as exc:  # ValueError: CheckLimits' checks
        raise _UsageError(str(exc)) from exc
    report = check_files_with_grader(config, tokenizer, limits, show, options, grader)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        sys.exit(EXIT_OK if report.ok else EXIT_ERROR)
    out = Console(highlight=False, soft_wrap=True)  # a FILE:LINE stays whole in a pipe or a log
    print_report(report, tokenizer, config.max_seq_tokens, limits.max_issues_shown, out)
    sys.exit(EXIT_OK if report.ok else EXIT_ERROR)


@main.command("chat")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--system", help="A system prompt (default: the run's system_prompt, else the chat template's own).")
@click.option("--max-new-tokens", type=int, default=Sampling.max_new_tokens, show_default=True,
              help="Most tokens per answer.")
@click.option("--temperature", type=float, default=Sampling.temperature, show_default=True, help="0 is greedy.")
@click.option("--top-p", type=float, default=Sampling.top_p, show_default=True,
              help="Nucleus sampling mass (temperature > 0).")
@click.option("--seed", type=int, help="Seed for sampled answers.")
@repetition_options
@click.option("--knowledge", help=f"Answer with passages retrieved from this {KNOWLEDGE_HELP}.")
@retrieval_options
@engine_option
def chat_command(run: str, system: str | None, max_new_tokens: int, temperature: float, top_p: float, seed: int | None,
                 repetition_penalty: float, no_repeat_ngram_size: int, knowledge: str | None, engine: str,
                 retrieval: RetrievalSettings) -> None:
    """Chat with the tuned model of RUN in the terminal (streamed; /reset, /system TEXT, /base, /tuned, /exit)."""
    from .commands.chat import chat_loop, engine_decoder
    from .retrieval.raft import chat_retrieval
    from .run import RunDir, base_of, load_run, run_system_prompt

    model, tokenizer = load_run(run)
    augment, cite = chat_retrieval(RunDir.open(run).config(), knowledge, retrieval, model, tokenizer, max_new_tokens,
                                   log=lambda m: console.print(f"[dim]{escape(m)}[/]"))

    def write(text: str) -> None:
        click.echo(text, nl=False)
        sys.stdout.flush()

    sampling = Sampling(max_new_tokens, temperature, top_p, seed, repetition_penalty=repetition_penalty,
                        no_repeat_ngram_size=no_repeat_ngram_size)
    chat_loop(model, tokenizer, sampling, input, write, system or run_system_prompt(run), augment,
              base=base_of(model, RunDir.open(run).config()), engine=engine_decoder(engine, run, tokenizer), cite=cite)


@main.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=DEFAULT_EXPORT_FORMAT, show_default=True)
@click.option("--output", help="Folder to write (default RUN/export-FORMAT).")
@click.option("--gguf-type", type=click.Choice(GGUF_TYPES), default=DEFAULT_GGUF_TYPE, show_default=True,
              help="Weight type of a GGUF export.")
@click.option("--tolerance", type=float, help="Largest accepted logit difference (merged: |Δ|/(1+|logit|), default "
                                              f"{MERGE_TOLERANCE:g}; gguf: relative RMS, default per type).")
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
def export_command(run: str, fmt: str, output: str | None, gguf_type: str, tolerance: float | None,
                   overwrite: bool) -> None:
    """Export RUN as a peft adapter with a card, a merged Hugging Face model, or GGUF + Ollama Modelfile."""
    from .export.exporter import export_run

    result = export_run(run, fmt, output, tolerance=tolerance, gguf_type=gguf_type, overwrite=overwrite,
                        log=lambda line: console.print(line, highlight=False))
    click.echo(f"exported {fmt} to {result.output}: {', '.join(result.files)}")


@main.command("serve")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@listen_options("Require 'Authorization: Bearer KEY' (or set TUNESMITH_API_KEY).")
@click.option("--model-name", help="Model id clients send (default: the run folder's name).")
@click.option("--max-tokens", type=int,
              help=f"Largest max_tokens a request may ask for (default {ServeLimits.max_tokens}).")
@click.option("--max-queued", type=int,
              help=f"Requests that may wait for the model before 429 (default {ServeLimits.max_queued}).")
@click.option("--knowledge", help=f"Chat answers use passages retrieved from this {KNOWLEDGE_HELP}.")
@retrieval_options
@engine_option
def serve_command(run: str, host: str, port: int, api_key: str | None, allowed_hosts: tuple[str, ...],
                  model_name: str | None, max_tokens: int | None, max_queued: int | None, knowledge: str | None,
                  engine: str, retrieval: RetrievalSettings) -> None:
    """Serve RUN over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models)."""
    from .serve.app import serve

    overrides = {k: v for k, v in (("max_tokens", max_tokens), ("max_queued", max_queued)) if v is not None}
    if max_tokens is not None:
        overrides["default_max_tokens"] = min(ServeLimits.default_max_tokens, max_tokens)
    serve(run, host, port, api_key, ServeLimits(**overrides), allowed_hosts, model_name, knowledge, engine, retrieval)


@main.command("compare")
@click.option("--run", "run", required=True, type=click.Path(exists=True, file_okay=False), help="A finished run.")
@click.option("--knowledge", help=f"The {KNOWLEDGE_HELP} to retrieve from; a training-format file gives its answers "
                                  "(pkg:PACKAGE/path for packaged data). Default: a RAFT run's retrieval.knowledge.")
@click.option("--eval", "eval_data", help="Held-out questions (default: the run's own validation split).")
@click.option("--limit", type=click.IntRange(min=1), default=CompareSettings.limit, show_default=True,
              help="Held-out questions answered.")
@click.option("--seen", type=click.IntRange(min=0), default=CompareSettings.seen, show_default=True,
              help="Training questions answered (the 'facts seen in training' split).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=CompareSettings.max_new_tokens, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=CompareSettings.batch_size, show_default=True,
              help="Prompts decoded together (1: one unpadded prompt at a time).")
@click.option("--no-cache", is_flag=True, help="Recompute the base model's answers.")
@click.option("--json", "as_json", is_flag=True, help="Print compare.json to stdout instead of the tables.")
@retrieval_options
@engine_option
def compare_command(run: str, knowledge: str | None, eval_data: str | None, limit: int, seen: int, max_new_tokens: int,
                    batch_size: int, no_cache: bool, as_json: bool, engine: str, retrieval: RetrievalSettings) -> None:
    """Base, base+RAG, tuned and tuned+RAG on held-out questions; writes RUN/compare.json."""
    from .commands.compare import compare_run, result_lines

    settings = CompareSettings(limit=limit, seen=seen, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               retrieval=retrieval)
    result = compare_run(run, knowledge, eval_data, settings, log=lambda m: console.print(f"[dim]{escape(m)}[/]"),
                         use_cache=not no_cache, engine=engine)
    if not _print_json(result, as_json):
        Console(highlight=False).print("\n".join(result_lines(result, run)))


@main.command("curve")
@click.argument("source", type=click.Path())
@click.option("--fractions", help="Shares of the training split, one run each, increasing (default "
                                  f"{','.join(f'{f:g}' for f in CurveSettings.fractions)}).")
@click.option("--output", help="The curve's folder (default <config output>-curve, else runs/<data-name>-curve).")
@click.option("--generate", is_flag=True, help="Also score answer token F1 / ROUGE-L on a fixed held-out sample.")
@config_options("model", "method", "epochs", "max_steps", "lr", "seed", "eval", "batch_size",
                hidden=("max_steps",),  # refused, with the reason, by curve_root
                helps={"epochs": "Passes over each share (default: from the full data's size, for all).",
                       "seed": f"Seeds the split, the shares and training (default {TrainConfig.seed}).",
                       "eval": "Held-out file (default: a val_fraction split of DATA)."})
@click.option("--overwrite", is_flag=True, help="Train every point afresh instead of reusing finished ones.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
@click.option("--json", "as_json", is_flag=True, help="Print curve.json to stdout instead of the summary.")
def curve_command(source: str, fractions: str | None, output: str | None, generate: bool, overrides: dict[str, Any],
                  overwrite: bool, no_progress: bool, as_json: bool) -> None:
    """Learning curve: train SOURCE (data or CONFIG.yaml) on nested shares of its data; do I have enough?"""
    from .commands.curve import curve, print_summary

    result = curve(_load_source(source, overrides), CurveSettings.parse_fractions(fractions)
                   if fractions else None, output, generate, overwrite, console, show_progress=not no_progress)
    if not _print_json(result.report, as_json):
        print_summary(result, click.echo)


@main.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print eval.json to stdout instead of the summary.")
@click.option("--full", is_flag=True, help="The larger probe and task samples (minutes, not one).")
@click.option("--no-cache", is_flag=True, help="Recompute the base model's probe results.")
@click.option("--lm-eval", "lm_eval_tasks",
              help="Comma-separated lm-eval tasks (needs lm-eval installed and a network).")
def eval_command(run: str, as_json: bool, full: bool, no_cache: bool, lm_eval_tasks: str | None) -> None:
    """Base vs tuned on the task and general probes; writes RUN/eval.json and RUN/report.html."""
    from .commands.evaluate import evaluate_run, print_verdict

    tasks = [t.strip() for t in (lm_eval_tasks or "").split(",") if t.strip()]
    result = evaluate_run(run, full=full, log=lambda m: console.print(f"[dim]{escape(m)}[/]"),
                          use_cache=not no_cache, lm_eval_tasks=tasks)
    if not _print_json(result, as_json):
        print_verdict(result, run, Console())


@main.command("tune")
@click.argument("source", type=click.Path())
@click.option("--trials", type=click.IntRange(min=1), help="Trials to finish (default: tune.trials, 8).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Wall-time limit (default: tune.minutes).")
# for every trial; --lr, --epochs and --max-steps take their setting out of the search
@config_options(*RUN_KEYS, "output",
                helps={"output": "The search's folder (default runs/<data-name>-tune); the same one continues it."})
@click.option("--no-eval", is_flag=True, help="Skip `tunesmith eval` of the chosen run at the end.")
@click.option("--overwrite", is_flag=True, help="Replace the output folder instead of continuing its search.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def tune_command(source: str, trials: int | None, minutes: float | None, overrides: dict[str, Any], no_eval: bool,
                 overwrite: bool, no_progress: bool) -> None:
    """Search settings on SOURCE (data, or a CONFIG.yaml with a `tune:` section) for the best model within budget."""
    from .commands.tune import load_tune, result_lines, tune

    config, settings, fixed = load_tune(source, overrides)
    result = tune(config, settings, fixed, trials=trials, minutes=minutes, evaluate=not no_eval, overwrite=overwrite,
                  console=console, show_progress=not no_progress)
    if not result.interrupted:  # soft wrap: paths and the reason stay whole in a log
        Console(highlight=False, soft_wrap=True).print("\n".join(result_lines(result)))


# the service commands live in cli_server.py, grade in cli_grade.py (each its own flags and output)
for command in (server_command, jobs_group, ui_command, grade_command):
    main.add_command(command)

if __name__ == "__main__":
    main()
