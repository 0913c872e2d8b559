"""The `tunesmith` command line: one function per command, each a thin layer over the Python API."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from .config import ConfigError, load_config
from .data import DataError, TemplateError
from .models import ModelError
from .rundir import RunDirError

# Errors a user can fix: printed as one clear message, no traceback.
USER_ERRORS = (ConfigError, DataError, ModelError, RunDirError, TemplateError, FileNotFoundError)
console = Console(stderr=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("transformers", "accelerate", "peft", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _fail(exc: Exception) -> None:
    kind = "data error" if isinstance(exc, DataError) else "error"
    console.print(f"[bold red]{kind}:[/] {exc}", markup=True, highlight=False)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tunesmith")
def main() -> None:
    """Fine-tune open language models on small, focused data, and prove they did not forget."""
    _quiet_libraries()


@main.command("train")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--model", help="Local model directory, hub id, or smollm2-135m-instruct (default).")
@click.option("--method", type=click.Choice(["lora", "dora", "full"]), help="Fine-tuning method (default lora).")
@click.option("--output", help="Run directory (default runs/<data-name>-<timestamp>).")
@click.option("--epochs", type=float, help="Passes over the data (default: from the data size).")
@click.option("--max-steps", type=int, help="Optimizer steps; wins over --epochs.")
@click.option("--lr", type=float, help="Peak learning rate (default: per method).")
@click.option("--seed", type=int, help="Random seed (default 0).")
@click.option("--eval", "eval_data", help="Validation data file (default: a val_fraction split of DATA).")
@click.option("--max-seq-tokens", type=int, help="Longest example in tokens (default 1024).")
@click.option("--batch-size", type=int, help="Examples per micro-batch (default 8).")
@click.option("--overwrite", is_flag=True, help="Replace an existing non-empty output directory.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def train_command(source: str, overwrite: bool, no_progress: bool, eval_data: str | None, **flags: Any) -> None:
    """Fine-tune on SOURCE: a data file (.jsonl/.txt/.md) or a CONFIG.yaml."""
    from .train import train

    flags["eval"] = eval_data
    try:
        if Path(source).suffix.lower() in (".yaml", ".yml"):
            config = load_config(source, flags)
        else:
            config = load_config(None, {**flags, "data": source})
        result = train(config, overwrite=overwrite, console=console, show_progress=not no_progress)
    except USER_ERRORS as exc:
        _fail(exc)
        return
    change = (result.final_val_loss - result.base_val_loss) / result.base_val_loss
    out = Console()
    out.print()
    out.print("[bold]tunesmith: run finished[/]")
    out.print(f"  validation loss   base {result.base_val_loss:.4f} -> tuned {result.final_val_loss:.4f} "
              f"({change:+.1%})")
    out.print(f"  tokens trained    {result.train_tokens:,} in {result.steps} steps")
    out.print(f"  wall time         {result.wall_seconds:.0f} s")
    out.print(f"  run directory     {result.run_dir}")
    out.print(f"  try it            tunesmith generate {result.run_dir} --prompt \"...\"")


@main.command("generate")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", required=True, help="The user message.")
@click.option("--system", help="A system prompt (default: the chat template's own).")
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 is greedy.")
def generate_command(run: str, prompt: str, system: str | None, max_new_tokens: int, temperature: float) -> None:
    """Answer one prompt with the tuned model of RUN."""
    from .generate import generate, load_run

    try:
        model, tokenizer = load_run(run)
    except USER_ERRORS as exc:
        _fail(exc)
        return
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    click.echo(generate(model, tokenizer, messages, max_new_tokens=max_new_tokens, temperature=temperature))



@main.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print eval.json to stdout instead of the summary.")
@click.option("--full", is_flag=True, help="The larger probe and task samples (minutes, not one).")
@click.option("--no-cache", is_flag=True, help="Recompute the base model's probe results.")
@click.option("--lm-eval", "lm_eval_tasks", help="Comma-separated lm-eval tasks (needs lm-eval installed and a network).")
def eval_command(run: str, as_json: bool, full: bool, no_cache: bool, lm_eval_tasks: str | None) -> None:
    """Base vs tuned on the task and general probes; writes RUN/eval.json and RUN/report.html."""
    import json

    from .evaluate import evaluate_run
    from .forgetting import ProbeDataError

    try:
        tasks = [t.strip() for t in (lm_eval_tasks or "").split(",") if t.strip()]
        result = evaluate_run(run, full=full, log=lambda m: console.print(f"[dim]{m}[/]"), use_cache=not no_cache,
                              lm_eval_tasks=tasks)
    except (*USER_ERRORS, ProbeDataError) as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    out = Console()
    out.print()
    out.print(f"[bold]tunesmith eval: {'within' if result['within_budget'] else '[red]OVER[/]'} the forgetting budget[/]")
    for line in result["verdict"].splitlines():
        out.print(f"  {line}", highlight=False)
    out.print(f"  report            {Path(run) / 'report.html'}")


if __name__ == "__main__":
    main()
