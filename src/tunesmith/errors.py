"""The errors a user can fix: one base class, one CLI handler, documented exit codes.

Every error here carries a message that says what is wrong and how to fix it; the CLI prints it
without a traceback and exits with the class's `exit_code`. Anything else is a bug and keeps its
traceback. Each class keeps the built-in base it had before (ValueError, RuntimeError), so code
that caught those still does.

Exit codes of every command: 0 success, 1 a problem with the data, run, model or result (the
classes below), 2 a usage problem (a bad flag, config key or value), 130 interrupted at once by a
second Ctrl-C.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class TunesmithError(Exception):
    """Something the user can fix; the message names the file, key or step and the fix."""

    exit_code = EXIT_ERROR
    label = "error"
    """How the CLI introduces the message ("error: ...")."""


class ConfigError(TunesmithError, ValueError):
    """A config file or flag that cannot be used; the message says where and how to fix it."""

    exit_code = EXIT_USAGE


class ModelError(TunesmithError, RuntimeError):
    """A model or tokenizer that cannot be loaded, with the reason and what to do."""


class TemplateError(TunesmithError, ValueError):
    """A conversation the chat template cannot render (or a model without a template)."""


class RunDirError(TunesmithError, RuntimeError):
    """A run directory that cannot be created, opened or resumed as asked."""


class CheckpointError(TunesmithError, RuntimeError):
    """A checkpoint that is incomplete, unsafe (pickles) or does not match the model."""


class NonFiniteLossError(TunesmithError, RuntimeError):
    """A NaN or infinite loss or gradient norm; the message names the step and the batch's rows."""


class StoppedBeforeTraining(TunesmithError):
    """SIGTERM or Ctrl-C during setup or the base evaluation: nothing worth keeping was made."""

    exit_code = EXIT_INTERRUPTED
    label = "stopped"


class ProbeDataError(TunesmithError, RuntimeError):
    """A probe source that cannot be read; the message says which package to install."""


class ExportError(TunesmithError, RuntimeError):
    """An export that failed its check or cannot be made; nothing was written."""


def require(ok: bool, key: str, message: str) -> None:
    """The check of one config or settings value: a ConfigError naming the key when `ok` is false."""
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")


class GraderError(TunesmithError, ValueError):
    """A grader (OpenAI's JSON format) that cannot be used; the message names its JSON path and the fix."""

    exit_code = EXIT_USAGE
