"""Run flags built from TrainConfig: a command names the config keys it takes, and each key's flag
(--max-steps for max_steps) gets its type and choices from the field's annotation and its help from
the field's docstring, unless a hand-written help is given. The command receives the parsed flags as
one `overrides` dict, None for a flag not given, so that a CONFIG.yaml's value stands."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import click

from .cli_options import COLUMNS_HELP, SYSTEM_PROMPT_HELP, columns_flag, report_to_flag
from .config import DEFAULT_MODEL, TrainConfig
from .config_names import other_key_of
from .field_docs import field_docs

RUN_KEYS = ("model", "method", "objective", "epochs", "max_steps", "lr", "seed", "eval", "columns", "system_prompt",
            "max_seq_tokens", "batch_size")
"""A run's settings, as train takes them and tune takes them for every trial."""

FLAG_HELP = {
    "model": f"Local model directory, hub id, or {DEFAULT_MODEL} (default).",
    "method": f"Fine-tuning method (default {TrainConfig.method}).",
    "objective": f"What the run learns from: sft (answers), dpo or orpo (preference pairs), grpo (rewards from "
                 f"--grader) (default {TrainConfig.objective}).",
    "grader": "objective grpo: the OpenAI-format grader (JSON file) that scores the sampled answers.",
    "epochs": "Passes over the data (default: from the data size).",
    "max_steps": "Optimizer steps; wins over --epochs.",
    "lr": "Peak learning rate (default: per method).",
    "seed": f"Random seed (default {TrainConfig.seed}).",
    "eval": "Validation data file (default: a val_fraction split of DATA).",
    "columns": COLUMNS_HELP,
    "system_prompt": SYSTEM_PROMPT_HELP,
    "max_seq_tokens": f"Longest example in tokens (default {TrainConfig.max_seq_tokens}).",
    "batch_size": f"Examples per micro-batch (default {TrainConfig.batch_size}).",
    "save_every": "Checkpoint every N steps (default: at every evaluation).",
    "report_to": "Experiment trackers, comma-separated: tensorboard, mlflow, wandb, trackio; none for none "
                 "(default none; config: report_to).",
}
"""Hand-written helps, which state the default; a key without one is helped by its field's docstring."""

CALLBACKS = {"columns": columns_flag, "report_to": report_to_flag}
"""Keys whose flag is text parsed into the field's type (a mapping, a list)."""


class ConfigChoice(click.Choice):
    """A Literal field's values; a value that belongs to another key says which (--method dpo)."""

    def __init__(self, key: str, choices: tuple[str, ...]) -> None:
        super().__init__(choices)
        self.key = key

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        home = other_key_of(self.key, value) if value not in self.choices else None
        if home is not None:
            article = "an" if home[0] in "aeiou" else "a"
            self.fail(f"{value} is {article} {home}: use --{home.replace('_', '-')} {value}", param, ctx)
        return super().convert(value, param, ctx)


def _flag_type(key: str, hint: Any) -> dict[str, Any]:
    """click's type (or callback) for the field's annotation, its None left out."""
    if key in CALLBACKS:
        return {"callback": CALLBACKS[key]}
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is Literal:
        return {"type": ConfigChoice(key, get_args(hint))}
    if hint in (int, float, str):
        return {"type": hint}
    raise TypeError(f"config key {key!r} ({hint}) has no flag type: give it a callback in CALLBACKS")


def config_option(key: str, help: str | None = None, hidden: bool = False) -> Callable[..., Any]:
    """The click option of TrainConfig's field `key`, None unless given."""
    text = help or FLAG_HELP.get(key) or field_docs(TrainConfig)[key]
    return click.option("--" + key.replace("_", "-"), key, default=None, hidden=hidden, help=None if hidden else text,
                        **_flag_type(key, _field_types()[key]))


@functools.cache
def _field_types() -> dict[str, Any]:
    return get_type_hints(TrainConfig)


def config_options(*keys: str, helps: dict[str, str] | None = None,
                   hidden: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The flags of `keys`, in that order in --help, given to the command as `overrides` ({key: value or None});
    `helps` replaces a key's help for this command, `hidden` keys take no place in --help."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def with_overrides(*args: Any, **kwargs: Any) -> Any:
            return command(*args, overrides={key: kwargs.pop(key) for key in keys}, **kwargs)

        for key in reversed(keys):  # the first listed comes first in --help
            with_overrides = config_option(key, (helps or {}).get(key), key in hidden)(with_overrides)
        return with_overrides

    return decorate
