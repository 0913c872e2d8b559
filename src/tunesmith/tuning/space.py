"""What `tunesmith tune` searches: the `tune:` config section (`TuneConfig`, every default of a search
lives here), the search space it gives for a method, and a trial's settings applied to a run's config."""

from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import dataclass, field, fields
from typing import Any, Collection, Literal, Union, get_args, get_origin, get_type_hints

from ..config import TrainConfig, default_lr
from ..errors import ConfigError, require

SEARCHABLE: tuple[str, ...] = ("lr", "epochs", "lora.r", "forgetting.replay_fraction")
"""The settings a search may vary, by their config keys; fixing one in the config or by a flag (or, for
`epochs`, setting `max_steps`, which wins over it) keeps it out of the search."""
ADAPTER_METHODS = ("lora", "dora", "qlora")
"""The methods with an adapter rank to search."""
LR_BELOW, LR_ABOVE = 4.0, 2.0
"""lr's default range: the method's default ÷ 4 to × 2. The demo measured LoRA at 2e-4 (-15% held-out
loss, +0.8% general perplexity) against 1e-3 (-23%, +8.9%): the trade-off lies below the default."""


@dataclass(frozen=True)
class TuneConfig:
    """A search's size, its ranges and its pruner (the `tune:` key in YAML; `tunesmith train` ignores it)."""

    trials: int = 8
    """Trials to finish (completed, pruned, or failed on their own, e.g. a non-finite loss); an interrupted
    trial does not count and is resumed. 8: four random ones, then four guided by them."""
    minutes: float | None = None
    """Wall-time limit of the search (its trials' minutes, across restarts): no trial starts after it, nor one
    that the median trial so far says would end after it; a running trial finishes. None: no limit."""
    lr: list[float] | None = None
    """[low, high] of the peak learning rate, searched on a log scale; None: the method's default ÷ 4 to × 2
    (LoRA 2.5e-4 to 2e-3 at its default 1e-3)."""
    epochs: list[float] = field(default_factory=lambda: [1.0, 3.0])
    """[low, high] of the passes over the data, in steps of 0.5; not searched when `max_steps` is set. One
    epoch of the demo's 453 rows gave -24.5% held-out loss; its data-size default is 3."""
    lora_r: list[int] = field(default_factory=lambda: [8, 16, 32])
    """Adapter ranks to choose from (config key `lora.r`; lora, dora and qlora). `lora.alpha` follows the rank
    at the config's alpha / r (2 by default), so a rank changes the adapter's capacity, not its update's scale."""
    replay_fraction: list[float] = field(default_factory=lambda: [0.0, 0.3])
    """[low, high] of the share of replayed general text (config key `forgetting.replay_fraction`); 0 is off."""
    startup_trials: int = 4
    """Trials drawn at random before the TPE sampler models the finished ones (Optuna's default is 10, more than
    a small search has)."""
    prune_after_trials: int = 2
    """Completed trials before any trial is pruned: the pruner compares a trial with them."""
    prune_warmup_evaluations: int = 1
    """Evaluations of a trial that are never pruned: the first one comes during the learning rate's warmup."""
    prune_percentile: float = 50.0
    """A trial is pruned at an evaluation when its best held-out loss within the budget so far is worse than
    this percentile of the completed trials' at the same evaluation (50: the median)."""

    def __post_init__(self) -> None:
        require(self.trials >= 1, "tune.trials", f"must be at least 1, got {self.trials}")
        require(self.minutes is None or self.minutes > 0, "tune.minutes", f"must be positive, got {self.minutes}")
        if self.lr is not None:
            _require_range(self.lr, "tune.lr", low_above=0.0)
        _require_range(self.epochs, "tune.epochs", low_above=0.0)
        require(len(self.lora_r) >= 1 and all(r >= 1 for r in self.lora_r)
                and len(set(self.lora_r)) == len(self.lora_r),
                "tune.lora_r", f"must be a list of distinct ranks of at least 1, got {self.lora_r}")
        _require_range(self.replay_fraction, "tune.replay_fraction", low_above=None)
        require(0.0 <= self.replay_fraction[0] and self.replay_fraction[1] < 1.0, "tune.replay_fraction",
                f"must lie in [0, 1), got {self.replay_fraction}")
        require(self.startup_trials >= 0, "tune.startup_trials", f"must be non-negative, got {self.startup_trials}")
        require(self.prune_after_trials >= 0, "tune.prune_after_trials",
                f"must be non-negative, got {self.prune_after_trials}")
        require(self.prune_warmup_evaluations >= 0, "tune.prune_warmup_evaluations",
                f"must be non-negative, got {self.prune_warmup_evaluations}")
        require(0.0 < self.prune_percentile <= 100.0, "tune.prune_percentile",
                f"must be in (0, 100], got {self.prune_percentile}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _require_range(values: list[float], key: str, low_above: float | None) -> None:
    require(len(values) == 2 and values[0] < values[1], key, f"must be [low, high] with low < high, got {values}")
    if low_above is not None:
        require(values[0] > low_above, key, f"must be above {low_above:g}, got {values}")


def tune_config_from_dict(raw: Any, source: str) -> TuneConfig:
    """The `tune:` mapping as a TuneConfig: unknown keys suggest the closest one, wrong types name the key."""
    names = [f.name for f in fields(TuneConfig)]
    if raw is None:
        return TuneConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'tune' must be a mapping ({', '.join(names)})")
    unknown = [f"'tune.{key}'{_suggestion(str(key), names)}" for key in raw if key not in names]
    if unknown:
        raise ConfigError(f"{source}: {len(unknown)} unknown config key(s): " + "; ".join(unknown))
    hints = get_type_hints(TuneConfig)
    return TuneConfig(**{key: _checked(value, hints[key], f"tune.{key}", source) for key, value in raw.items()})


def _suggestion(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f" (did you mean 'tune.{close[0]}'?)" if close else f" (valid keys: {', '.join('tune.' + n for n in names)})"


def _checked(value: Any, hint: Any, key: str, source: str) -> Any:
    """`value` as the field's type: ints for floats and YAML's '1e-4' strings accepted, anything else refused."""
    optional = get_origin(hint) in (Union, types.UnionType)
    kind = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    if value is None and optional:
        return None
    if get_origin(kind) is list and isinstance(value, list):
        items = [_scalar(v, get_args(kind)[0]) for v in value]
        if all(item is not None for item in items):
            return items
    elif get_origin(kind) is not list and (scalar := _scalar(value, kind)) is not None:
        return scalar
    wanted = f"a list of {get_args(kind)[0].__name__}s" if get_origin(kind) is list else kind.__name__
    raise ConfigError(f"{source}: config key '{key}' must be {wanted}{' or null' if optional else ''}, got {value!r}")


def _scalar(value: Any, kind: type) -> Any:
    """`value` as an int or float, or None when it is not one (a bool is not a number here)."""
    if isinstance(value, bool):
        return None
    if kind is int and isinstance(value, int):
        return value
    if kind is float and isinstance(value, (int, float)):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Dimension:
    """One searched setting."""

    name: str
    """Its config key (one of SEARCHABLE)."""
    kind: Literal["log", "float", "choice"]
    """How it is drawn: log-uniform, uniform (in `step`s when set), or one of `choices`."""
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    choices: tuple[int, ...] = ()


def search_space(config: TrainConfig, tune: TuneConfig, fixed: Collection[str] = ()) -> tuple[Dimension, ...]:
    """The settings a search of `config` varies: every SEARCHABLE one that applies to its method, less
    `fixed` (and `epochs` when `max_steps` is set)."""
    unknown = sorted(set(fixed) - set(SEARCHABLE))
    if unknown:
        raise ConfigError(f"fixed settings {unknown} are not searchable ones ({', '.join(SEARCHABLE)})")
    low, high = tune.lr or (default_lr(config.method) / LR_BELOW, default_lr(config.method) * LR_ABOVE)
    dims = [Dimension("lr", "log", low, high)]
    if config.max_steps is None:
        dims.append(Dimension("epochs", "float", tune.epochs[0], tune.epochs[1], step=0.5))
    if config.method in ADAPTER_METHODS:
        dims.append(Dimension("lora.r", "choice", choices=tuple(tune.lora_r)))
    dims.append(Dimension("forgetting.replay_fraction", "float", *tune.replay_fraction))
    return tuple(d for d in dims if d.name not in set(fixed))


def suggest(trial: Any, space: tuple[Dimension, ...]) -> dict[str, Any]:
    """A trial's settings, drawn by its sampler (or the ones it was enqueued with)."""
    settings: dict[str, Any] = {}
    for d in space:
        if d.kind == "choice":
            settings[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        else:
            settings[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.kind == "log", step=d.step)
    return settings


def apply_settings(config: TrainConfig, settings: dict[str, Any], output: str) -> TrainConfig:
    """`config` with a trial's settings and its run directory; `lora.alpha` keeps the config's alpha / r."""
    lora = config.lora
    if "lora.r" in settings:
        r = int(settings["lora.r"])
        lora = dataclasses.replace(lora, r=r, alpha=max(1, round(r * config.lora.alpha / config.lora.r)))
    forgetting = dataclasses.replace(
        config.forgetting,
        replay_fraction=settings.get("forgetting.replay_fraction", config.forgetting.replay_fraction))
    return dataclasses.replace(config, lr=settings.get("lr", config.lr), epochs=settings.get("epochs", config.epochs),
                               lora=lora, forgetting=forgetting, output=output)


def fixed_by(raw: dict[str, Any], flags: dict[str, Any]) -> set[str]:
    """The searchable settings that a config file's mapping `raw` or a flag sets: kept out of the search."""
    def given(key: str) -> bool:
        return flags.get(key) is not None or key in raw

    fixed = {"lr"} if given("lr") else set()
    if given("epochs") or given("max_steps"):
        fixed.add("epochs")
    if isinstance(raw.get("lora"), dict) and "r" in raw["lora"]:
        fixed.add("lora.r")
    if isinstance(raw.get("forgetting"), dict) and "replay_fraction" in raw["forgetting"]:
        fixed.add("forgetting.replay_fraction")
    return fixed
