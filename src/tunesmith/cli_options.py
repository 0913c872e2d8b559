"""Flags that several commands of cli.py share: the parsed --columns and --report-to values, the
repetition controls of generate and chat, the retrieval of chat, serve and compare, where serve and
server listen (a run's settings are built from the config in cli_config.py)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from .inference.engines import DEFAULT_ENGINE, ENGINES
from .settings import RETRIEVERS, UNREADABLE_POLICIES, RetrievalSettings, Sampling


def columns_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, str] | None:
    """--columns prompt=customer_message,completion=agent_reply as the `columns` mapping."""
    if value is None:
        return None
    from .data.columns import parse_columns

    return parse_columns(value)


def report_to_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """--report-to tensorboard,mlflow as the `report_to` list; 'none' turns a config's trackers off."""
    if value is None:
        return None
    return [] if value.strip().lower() == "none" else [name.strip() for name in value.split(",") if name.strip()]


COLUMNS_HELP = ("Your file's columns for our fields, e.g. prompt=customer_message,completion=agent_reply "
                 "(config: columns).")
SYSTEM_PROMPT_HELP = "A system turn for rows without one: text or a .txt/.md file (config: system_prompt)."


def repetition_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--repetition-penalty and --no-repeat-ngram-size, with Sampling's defaults (off)."""
    command = click.option("--no-repeat-ngram-size", type=click.IntRange(min=0), default=Sampling.no_repeat_ngram_size,
                           show_default=True, help="Never repeat an n-gram of this many tokens; 0 is off.")(command)
    return click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True),
                        default=Sampling.repetition_penalty, show_default=True,
                        help="Penalise tokens already said (1.0 is off; 1.1-1.3 stops an answer that loops).")(command)


engine_option = click.option(
    "--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
    help="What decodes the tuned model: transformers (the reference), llama.cpp (the run's GGUF export, CPU) "
         "or vllm (GPU).")


KNOWLEDGE_HELP = "folder or .txt/.md/.pdf/.docx/.html/.jsonl file"
"""What --knowledge takes, in each command's help."""


def retrieval_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--top-k, --retriever and --unreadable-documents (RetrievalSettings' defaults), given to the
    command as one `retrieval: RetrievalSettings` argument."""
    @functools.wraps(command)
    def with_settings(*args: Any, top_k: int, retriever: Any, unreadable_documents: Any, **kwargs: Any) -> Any:
        settings = RetrievalSettings(top_k=top_k, retriever=retriever, unreadable_documents=unreadable_documents)
        return command(*args, retrieval=settings, **kwargs)

    options = [
        click.option("--top-k", type=click.IntRange(min=1), default=RetrievalSettings.top_k, show_default=True,
                     help="Passages retrieved per question."),
        click.option("--retriever", type=click.Choice(RETRIEVERS), default=RetrievalSettings.retriever,
                     show_default=True, help="How passages are found: dense (MiniLM embeddings), bm25 (shared "
                     "words) or hybrid (both, rank-fused)."),
        click.option("--unreadable-documents", type=click.Choice(UNREADABLE_POLICIES),
                     default=RetrievalSettings.unreadable_documents, show_default=True,
                     help="A knowledge PDF/DOCX/HTML file that cannot be read whole (corrupt, encrypted, scanned "
                     "without text): refuse to start, or skip it and name it."),
    ]
    for option in reversed(options):  # the first listed comes first in --help
        with_settings = option(with_settings)
    return with_settings


def listen_options(api_key_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--host, --port, --api-key and --allowed-host: where `serve` and `server` (and `ui`) listen and whom
    they answer; `api_key_help` says what the command does without a key."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed((
            click.option("--host", default="127.0.0.1", show_default=True,
                         help="Address to bind; loopback by default."),
            click.option("--port", type=int, default=8000, show_default=True),
            click.option("--api-key", envvar="TUNESMITH_API_KEY", help=api_key_help),
            click.option("--allowed-host", "allowed_hosts", multiple=True,
                         help="Extra Host header name to accept (repeatable)."),
        )):  # the first listed comes first in --help
            command = option(command)
        return command

    return decorate
