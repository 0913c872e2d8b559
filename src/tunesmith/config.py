"""Typed, frozen run configuration: every default of a run lives here (those of the commands that use a
run, in settings.py); YAML files and CLI flags only override."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from .config_file import placed, read_config_file
from .config_names import OTHER_TOOLS_NAMES, other_key_of
from .config_values import coerce_value
from .errors import ConfigError, require
from .grpo_config import VLLM_METHODS, GrpoConfig
from .settings import RetrievalTrainConfig

DEFAULT_MODEL = "smollm2-135m-instruct"
# Each choice is a Literal (the field's type) and the tuple of its values (click.Choice, checks).
Method = Literal["lora", "dora", "full", "qlora"]
METHODS: tuple[str, ...] = get_args(Method)
Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
Distributed = Literal["ddp", "fsdp"]
DISTRIBUTED: tuple[str, ...] = get_args(Distributed)
Objective = Literal["sft", "dpo", "orpo", "grpo"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
PREFERENCE_OBJECTIVES = ("dpo", "orpo")
"""The objectives that train on preference pairs (prompt, chosen, rejected) instead of answers."""
Tracker = Literal["tensorboard", "mlflow", "wandb", "trackio"]
TRACKERS: tuple[str, ...] = get_args(Tracker)
CPU_FORWARD_TOKENS = 1024  # a CPU matmul is as fast per token at 1,024 rows as at 2,000 (docs/benchmarks.md)


def cache_dir() -> Path:
    """tunesmith's cache (converted models, token cache, probe results, retrieval indexes):
    $TUNESMITH_CACHE_DIR when set, else tunesmith/ under the user's cache directory
    ($XDG_CACHE_HOME, or ~/.cache). Tests and CI point the setting at a temporary folder."""
    if os.environ.get("TUNESMITH_CACHE_DIR"):
        return Path(os.environ["TUNESMITH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tunesmith"


# Keys holding nested config sections, each built by its own function rather than coerced.
_NESTED_SECTIONS = ("lora", "forgetting", "budget", "preference", "retrieval", "grpo")


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapter settings (LoRA and DoRA)."""

    r: int = 16
    """Adapter rank: 16 learns a small task without touching most of the model."""
    alpha: int = 32
    """Scaling numerator; the update is scaled by alpha / r (2.0 with the defaults)."""
    dropout: float = 0.0
    """Dropout on the adapter input (peft's default, 0). On the CPU its Bernoulli masks over every
    adapter's input took half of a LoRA step on the 135M model (docs/benchmarks.md); overfitting on
    small data is caught by the validation-loss checkpoint choice instead. 0.05 is a common choice."""
    target_modules: str | list[str] = "all-linear"
    """Which layers get adapters; 'all-linear' is every linear projection of attention and MLP."""

    def __post_init__(self) -> None:
        require(self.r >= 1, "lora.r", f"must be at least 1, got {self.r}")
        require(self.alpha > 0, "lora.alpha", f"must be positive, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ForgettingBudget:
    """How much general ability a run may lose; checked on the general probes (docs/forgetting.md)."""

    max_ppl_increase: float = 0.10
    """Largest relative rise of general-text perplexity, tuned vs base (0.10 = +10%). The demo's
    LoRA at lr 1e-3 measured +8.9% after one epoch; 2e-4 measured +0.8%."""
    max_kl: float = 1.0
    """Largest mean per-token KL(base || tuned), in nats, on answers to general prompts. Learning a
    tone moves it too: the demo's LoRA measured 0.35 after 8 steps and 0.67 after one epoch, full
    fine-tuning at lr 2e-4 about 0.7 throughout; 1.0 flags general answers changed wholesale."""
    max_accuracy_drop: float = 0.10
    """Largest fall of knowledge accuracy (analogies, trivia, multiple-choice user probes), in
    absolute terms (0.10 = ten points). A drop counts only when its 95% interval excludes zero:
    one item of the fast probe set is 7 to 12 points, so a single unlucky item must not fail a run."""

    def __post_init__(self) -> None:
        require(self.max_ppl_increase >= 0, "forgetting.budget.max_ppl_increase",
               f"must be non-negative, got {self.max_ppl_increase}")
        require(self.max_kl >= 0, "forgetting.budget.max_kl", f"must be non-negative, got {self.max_kl}")
        require(0 <= self.max_accuracy_drop <= 1, "forgetting.budget.max_accuracy_drop",
               f"must be in [0, 1], got {self.max_accuracy_drop}")


@dataclass(frozen=True)
class ForgettingConfig:
    """Measure, bound and mitigate catastrophic forgetting (the `forgetting:` key in YAML)."""

    budget: ForgettingBudget = field(default_factory=ForgettingBudget)
    """Limits on general-ability loss; a run or checkpoint beyond any of them is over budget."""
    replay_fraction: float = 0.0
    """Share of trained tokens per step taken from general text (held-out Wikipedia articles);
    0 turns replay off."""
    kl_weight: float = 1.0
    """Weight of a KL(base || tuned) term on general text added to the loss; 0 turns it off. On by
    default: without it the demo lost 14-17 analogy points (the FAQ's "Sweden" leaking into general
    text, intervals clear of zero); with it, none, at the same task loss (docs/forgetting.md)."""
    kl_tokens: float = 0.25
    """General-text tokens the KL term reads per trained task token. Below 1 the term costs less
    (its base and tuned passes shrink with it) and its gradient is a noisier estimate of the same
    per-token mean; 0.25 kept the demo's task loss and forgetting figures of 1.0."""
    probes: list[str] = field(default_factory=list)
    """Extra general-probe files (JSONL: text / question+choices+answer / prompt rows)."""
    measure_during_training: bool = True
    """Run the fast probe subset at every evaluation (about 20 s on the 135M model on 2 cores) and
    keep, as the final adapter, the best checkpoint on the task among those within the budget."""

    def __post_init__(self) -> None:
        require(0.0 <= self.replay_fraction < 1.0, "forgetting.replay_fraction",
               f"must be in [0, 1), got {self.replay_fraction}")
        require(self.kl_weight >= 0, "forgetting.kl_weight", f"must be non-negative, got {self.kl_weight}")
        require(0 < self.kl_tokens <= 4, "forgetting.kl_tokens", f"must be in (0, 4], got {self.kl_tokens}")
        require(isinstance(self.probes, list) and all(isinstance(p, str) for p in self.probes),
               "forgetting.probes", f"must be a list of file paths, got {self.probes!r}")


@dataclass(frozen=True)
class PreferenceConfig:
    """The preference objectives' settings (the `preference:` key in YAML; read when `objective` is dpo
    or orpo). docs/preference.md has the losses."""

    beta: float = 0.1
    """DPO's beta: how far the tuned model may move from the reference (the base). The loss is
    -log sigmoid(beta x (chosen log-ratio - rejected log-ratio)); a smaller beta lets the model drift
    further to separate the pair. 0.1 is the DPO paper's and TRL's default."""
    orpo_lambda: float = 0.1
    """ORPO's lambda: the weight of the odds-ratio term beside the chosen answers' cross-entropy
    (ORPO needs no reference model). 0.1 is the ORPO paper's value for its 7B models and TRL's default."""

    def __post_init__(self) -> None:
        require(self.beta > 0, "preference.beta", f"must be positive, got {self.beta}")
        require(self.orpo_lambda >= 0, "preference.orpo_lambda", f"must be non-negative, got {self.orpo_lambda}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; `resolve()` fills the defaults that depend on the data."""

    data: str
    """Training data: a .jsonl/.txt/.md file in one of the supported formats."""
    eval: str | None = None
    """Validation data file; when absent a seeded `val_fraction` of `data` is held out."""
    columns: dict[str, str] | None = None
    """Your file's column (CSV) or key (JSON) for each of our fields, e.g. {prompt: customer_message,
    completion: agent_reply}: an export goes in with its own headers; other columns are ignored."""
    system_prompt: str | None = None
    """A system turn for every conversation that has none, e.g. a brand's style guide: the text, or a
    .txt/.md file (relative to the config file). Trained as context, never as a target; `generate`,
    `chat` and `serve` of the run use it too."""
    model: str = DEFAULT_MODEL
    """A local Hugging Face directory, a hub id, or 'smollm2-135m-instruct' (bundled, offline)."""
    method: Method = "lora"
    """lora (default), dora (weight-decomposed LoRA), full (every weight trained), or qlora (LoRA on a
    4-bit base through bitsandbytes; CUDA only)."""
    objective: Objective = "sft"
    """What the run learns from: sft (answers: cross-entropy on the assistant turns), dpo (preference
    pairs against the base as reference: the same model with adapters disabled, or with method full a
    frozen copy), orpo (preference pairs, reference-free: the chosen answers' cross-entropy plus an
    odds-ratio term), or grpo (reinforcement: prompts answered by sampling, the answers scored by
    `grader`; docs/rft.md). `method` stays the kind of weights trained."""
    grader: str | dict[str, Any] | None = None
    """objective grpo: the grader that scores each sampled answer, in OpenAI's JSON format (docs/graders.md):
    a .json file, or the grader itself as a mapping. The run's saved config holds it inline."""
    init_from: str | None = None
    """A finished run whose adapter this run's adapter starts from instead of zero (lora, dora, qlora):
    e.g. GRPO after an SFT run taught the answer's form (docs/rft.md). Its model, method family and
    adapter shape must be this run's; the base of the probes, the budget and DPO/GRPO's reference stays
    `model` itself, so forgetting counts from the untuned model. Relative to the config file."""
    output: str | None = None
    """Run directory; None gives runs/<data-name>-<timestamp>."""
    epochs: float | None = None
    """Passes over the training data; None derives it from the data size (see `default_epochs`)."""
    max_steps: int | None = None
    """Optimizer steps; when set it wins over `epochs`."""
    lr: float | None = None
    """Peak learning rate; None takes the method's default (see `default_lr`)."""
    seed: int = 0
    """Seeds the split, the data order, adapter init and dropout."""
    max_seq_tokens: int = 1024
    """Longest example in tokens; longer ones are truncated (and reported)."""
    batch_size: int = 8
    """Examples per micro-batch (packed into one row, no padding)."""
    batch_tokens: int | None = None
    """Instead of `batch_size` examples, fill each micro-batch to at most this many tokens
    (best-fit decreasing packing): steady memory and step time when lengths vary. At least
    `max_seq_tokens`, so that every example fits."""
    forward_tokens: int | None = None
    """Most tokens in one forward and backward pass: a longer micro-batch runs as pieces of whole
    examples (an example longer than this is a piece alone), with the same gradients and a memory
    peak set by the piece instead of the batch. None: 1024 on CPU, where bigger pieces are no
    faster, and whole micro-batches on GPUs, where they are; 0: always whole."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step; the loss is normalised by trained tokens across them."""
    warmup_ratio: float = 0.05
    """Fraction of steps spent warming the learning rate up linearly from zero."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio rather than zero."""
    weight_decay: float = 0.0
    """AdamW weight decay; zero because adapters are tiny and runs are short."""
    grad_clip: float = 1.0
    """Clip the global gradient norm at this value; 0 disables clipping."""
    eval_every: int | None = None
    """Evaluate every N optimizer steps; None gives about four evaluations per run."""
    save_every: int | None = None
    """Write a resumable checkpoint every N optimizer steps (and at the end); None: at every evaluation."""
    keep_last: int = 2
    """Complete checkpoints kept besides the best and the newest; older ones are deleted."""
    skip_nonfinite: bool = False
    """On a NaN/inf loss or gradient: False stops the run naming the step; True skips that step and counts it."""
    val_fraction: float = 0.1
    """Share of `data` held out for validation when no `eval` file is given."""
    train_fraction: float = 1.0
    """Train on this seeded share of the training split (after the validation split is taken, so
    the held-out examples are the same whatever the share). Shares drawn with one seed are nested:
    the examples of 0.25 are among those of 0.5. `tunesmith curve` trains at several shares."""
    precision: Precision = "auto"
    """auto uses bf16 autocast where the hardware has it (AVX-512 BF16/AMX CPUs, modern GPUs)."""
    chat_template: str | None = None
    """Override the model's chat template: a name ('chatml') or a Jinja string."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: about a third more compute for much less memory."""
    compile: bool = False
    """torch.compile each decoder layer (inductor): fused kernels after a compilation at the first
    step. On a 2-core CPU: 14% less peak memory and no faster than eager since eager's own memory
    and cast work, for 17-55 s of compiling (docs/benchmarks.md); off by default because short
    runs lose that time and it needs a C++ compiler."""
    distributed: Distributed = "ddp"
    """How several processes (torchrun / accelerate launch) share the work: ddp replicates the model,
    fsdp shards parameters, gradients and optimizer state (torch FSDP2, on GPUs and on CPU processes over
    gloo; not with qlora). One process has nothing to shard and trains the same either way."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub model; off unless you trust its author."""
    report_to: list[Tracker] = field(default_factory=list)
    """Experiment trackers that log the run: tensorboard (RUN/tensorboard/), mlflow (mlflow.db beside
    the run, or MLFLOW_TRACKING_URI), wandb, trackio; each needs its package. Empty: no files outside the run."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter settings, used by the lora and dora methods."""
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)
    """Forgetting budget, mitigations and extra general probes."""
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    """beta and orpo_lambda of the dpo and orpo objectives."""
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    """Sampling, advantages and the clipped loss of objective grpo (grpo_config.py)."""
    retrieval: RetrievalTrainConfig | None = None
    """Train on prompts that carry retrieved passages (RAFT) and hand off when they lack the answer;
    None trains on the questions alone. docs/raft.md."""

    def forward_token_limit(self, device_type: str) -> int | None:
        """`forward_tokens` resolved for a device: the piece size, or None for whole micro-batches."""
        if self.forward_tokens is None:
            return CPU_FORWARD_TOKENS if device_type == "cpu" else None
        return self.forward_tokens or None

    def __post_init__(self) -> None:
        require(bool(self.data), "data", "is required: the training data file")
        home = other_key_of("method", self.method)  # method: dpo, as TRL names its trainers
        require(home is None, "method", f"is the kind of weights trained; for {self.method} set {home}: {self.method}")
        require(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        require(self.objective in OBJECTIVES, "objective",
               f"must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        require(self.objective == "sft" or self.forgetting.replay_fraction == 0, "forgetting.replay_fraction",
               f"must be 0 with objective {self.objective}: replayed text has "
               f"{'no grader to score it' if self.objective == 'grpo' else 'no rejected side to compare'}")
        require(self.init_from is None or self.method in ("lora", "dora", "qlora"), "init_from",
                f"starts an adapter from a run's adapter, and method is {self.method}: use method lora or dora, or "
                "for full fine-tuning set model to the run's merged model (tunesmith export RUN --format merged)")
        require(self.grpo.sampler != "vllm" or self.method in VLLM_METHODS, "grpo.sampler",
                f"vllm takes the policy as a LoRA adapter, and method is {self.method}: use method lora, or "
                "grpo.sampler: transformers")
        require(self.objective != "grpo" or self.grader is not None, "grader",
                "is required with objective grpo: the OpenAI-format grader that scores the sampled answers "
                "(grader: GRADER.json in the config, or --grader GRADER.json)")
        require(self.objective == "grpo" or self.grader is None, "grader",
                f"is read by objective grpo only, and objective is {self.objective}: set objective: grpo to "
                "train on the grader's rewards, or remove grader")
        require(self.grader is None or isinstance(self.grader, (str, dict)), "grader",
                f"must be a grader .json file or the grader as a mapping, got {self.grader!r}")
        require(self.objective != "grpo" or self.grpo.num_iterations == 1, "grpo.num_iterations",
                f"must be 1 in train for now (each step samples afresh), got {self.grpo.num_iterations}")
        require(self.objective != "grpo" or self.retrieval is None, "retrieval",
                "is not available with objective grpo yet: train RAFT with objective sft")
        require(self.epochs is None or self.epochs > 0, "epochs", f"must be positive, got {self.epochs}")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be at least 1, got {self.max_steps}")
        require(self.lr is None or self.lr > 0, "lr", f"must be positive, got {self.lr}")
        require(self.max_seq_tokens >= 8, "max_seq_tokens", f"must be at least 8, got {self.max_seq_tokens}")
        require(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        require(self.batch_tokens is None or self.batch_tokens >= self.max_seq_tokens, "batch_tokens",
               f"must be at least max_seq_tokens ({self.max_seq_tokens}) so that every example fits, "
               f"got {self.batch_tokens}")
        require(self.forward_tokens is None or self.forward_tokens >= 0, "forward_tokens",
               f"must be 0 (never split) or a token count, got {self.forward_tokens}")
        require(self.grad_accum_steps >= 1, "grad_accum_steps", f"must be at least 1, got {self.grad_accum_steps}")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        require(self.weight_decay >= 0, "weight_decay", f"must be non-negative, got {self.weight_decay}")
        require(self.grad_clip >= 0, "grad_clip", f"must be non-negative, got {self.grad_clip}")
        require(self.eval_every is None or self.eval_every >= 1, "eval_every",
                f"must be at least 1, got {self.eval_every}")
        require(self.save_every is None or self.save_every >= 1, "save_every",
                f"must be at least 1, got {self.save_every}")
        require(self.keep_last >= 0, "keep_last", f"must be non-negative, got {self.keep_last}")
        require(0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        require(0.0 < self.train_fraction <= 1.0, "train_fraction", f"must be in (0, 1], got {self.train_fraction}")
        require(self.distributed in DISTRIBUTED, "distributed",
               f"must be one of {', '.join(DISTRIBUTED)}, got {self.distributed!r}")
        require(not (self.distributed == "fsdp" and self.method == "qlora"), "distributed",
                "fsdp does not take method: qlora (4-bit weights cannot be sharded as DTensors here); use "
                "distributed: ddp, which QLoRA's small adapters suit")
        require(isinstance(self.report_to, list) and all(t in TRACKERS for t in self.report_to)
                and len(set(self.report_to)) == len(self.report_to), "report_to",
                f"must be a list of distinct trackers from {', '.join(TRACKERS)}, got {self.report_to!r}")
        require(self.precision in PRECISIONS, "precision",
                f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def resolve(self, n_train_examples: int) -> TrainConfig:
        """Fill `epochs` and `lr` from the data size and method, so the saved config is complete."""
        return dataclasses.replace(
            self,
            epochs=self.epochs if self.epochs is not None else default_epochs(n_train_examples),
            lr=self.lr if self.lr is not None else default_lr(self.method, self.objective),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_lr(method: str, objective: str = "sft") -> float:
    """Peak learning rate per method and objective.

    Measured on SmolLM2-135M and the bundled FAQ (docs/benchmarks.md): adapters need a rate near
    1e-3 to learn a small task in a few epochs; full fine-tuning moves every weight and wants 1e-4
    at most before general-text perplexity climbs. The preference objectives take a tenth: their
    gradient does not fade as the pair separates the way cross-entropy's does near a fitted answer,
    and TRL's DPO recipes use 5e-6 (full) to 5e-5 (LoRA) on 7B models (not yet measured here). GRPO
    takes the same tenth: its advantage-weighted gradient has no fitted answer to fade at either, and
    each step's samples are noisy (not yet measured here).
    """
    rate = 5e-5 if method == "full" else 1e-3  # every other method trains an adapter
    return rate / 10 if objective in (*PREFERENCE_OBJECTIVES, "grpo") else rate


EXAMPLES_SEEN = 400
"""`default_epochs` aims at about this many examples seen in all."""
MAX_DEFAULT_EPOCHS = 3
"""... and never more passes than this (docs/forgetting.md, "Defaults"): 32 brand-voice posts
reached their best held-out loss near 2.5 epochs and rose above the base model's by 10."""


def default_epochs(n_train_examples: int) -> float:
    """Small data sets get more passes: about EXAMPLES_SEEN examples seen, between 1 and
    MAX_DEFAULT_EPOCHS epochs (the bundled FAQ's 453 rows: 1 epoch; 32 posts: 3)."""
    return float(min(MAX_DEFAULT_EPOCHS, max(1, math.ceil(EXAMPLES_SEEN / max(1, n_train_examples)))))



COMMAND_SECTIONS = ("tune",)
"""Top-level sections that configure a command around runs (`tune:`, read by `tunesmith tune`), not a
run: `load_config` drops them, so one YAML serves `tune` and `train` and a run's config never holds one."""


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (or none), apply non-None overrides, and build a checked TrainConfig."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        raw = {k: v for k, v in read_config_file(path).items() if k not in COMMAND_SECTIONS}
        # Relative data paths in a config file are relative to the file, so configs can travel.
        raw.update({key: _beside(path, raw[key]) for key in ("data", "eval", "system_prompt", "grader", "init_from")
                    if key in raw})
        for name, key in (("forgetting", "probes"), ("retrieval", "knowledge")):
            section = raw.get(name)
            if isinstance(section, dict) and key in section:
                value = section[key]
                section[key] = [_beside(path, v) for v in value] if isinstance(value, list) else _beside(path, value)
    overridden = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        return config_from_dict({**raw, **overridden}, source=str(path) if path else "command line")
    except ConfigError as exc:
        raise (exc if path is None else placed(exc, path, overridden)) from None


def _beside(config_path: Path, value: Any) -> Any:
    """A relative path of a config file made relative to the file, when a file is there."""
    if isinstance(value, str) and not Path(value).is_absolute() and (config_path.parent / value).exists():
        return str(config_path.parent / value)
    return value


def config_from_dict(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from plain data; unknown keys are errors that suggest the closest key,
    all of them in one message."""
    unknown = unknown_keys(raw)
    if unknown:
        raise ConfigError(f"{source}: {len(unknown)} unknown config key(s): " + "; ".join(unknown))
    raw = dict(raw)
    lora = _section(LoraConfig, raw.pop("lora", None) or {}, source, "lora")
    forgetting = forgetting_from_dict(raw.pop("forgetting", None) or {}, source)
    preference = _section(PreferenceConfig, raw.pop("preference", None) or {}, source, "preference")
    grpo = _section(GrpoConfig, raw.pop("grpo", None) or {}, source, "grpo")
    grader = raw.pop("grader", None)
    retrieval_raw = raw.pop("retrieval", None)
    retrieval = None if retrieval_raw is None else _section(RetrievalTrainConfig, retrieval_raw, source, "retrieval")
    kwargs = _typed_kwargs(TrainConfig, raw, source, prefix="")
    if "data" not in kwargs:
        raise ConfigError(f"{source}: config key 'data' is required: the training data file")
    return TrainConfig(**kwargs, lora=lora, forgetting=forgetting, preference=preference, grpo=grpo,
                       grader=grader, retrieval=retrieval)


def _section(cls: type, raw: Any, source: str, key: str) -> Any:
    """A nested section built from its mapping (its keys checked by `unknown_keys`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{key}' must be a mapping ({', '.join(f.name for f in fields(cls))})")
    return cls(**_typed_kwargs(cls, raw, source, prefix=f"{key}."))


def forgetting_from_dict(raw: Any, source: str) -> ForgettingConfig:
    """The `forgetting:` mapping, with its nested `budget:` mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'forgetting' must be a mapping (budget, replay_fraction, kl_weight, probes)")
    raw = dict(raw)
    budget = _section(ForgettingBudget, raw.pop("budget", None) or {}, source, "forgetting.budget")
    return ForgettingConfig(budget=budget, **_typed_kwargs(ForgettingConfig, raw, source, prefix="forgetting."))


_SECTIONS: dict[str, type] = {"": TrainConfig, "lora.": LoraConfig, "forgetting.": ForgettingConfig,
                               "forgetting.budget.": ForgettingBudget, "preference.": PreferenceConfig,
                               "retrieval.": RetrievalTrainConfig, "grpo.": GrpoConfig}


def unknown_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Every key of `raw` (and of its nested sections) that is not a config key, each with the
    closest key or the name another tool gives it ('learning_rate' -> 'lr', 'lora.rank' -> 'lora.r')."""
    cls = _SECTIONS[prefix]
    names = [f.name for f in fields(cls)]
    found = []
    for key, value in raw.items():
        if key in _NESTED_SECTIONS and key in names and isinstance(value, dict):
            found += unknown_keys(value, f"{prefix}{key}.")
        elif key not in names:
            found.append(f"'{prefix}{key}'{_suggestion(key, prefix, names)}")
    return found


def _suggestion(key: str, prefix: str, names: list[str]) -> str:
    aliases = {k.removeprefix(prefix): v for k, v in OTHER_TOOLS_NAMES.items() if k.startswith(prefix)} if prefix \
        else {k: v for k, v in OTHER_TOOLS_NAMES.items() if "." not in k}
    close = difflib.get_close_matches(key, names + list(aliases), n=1, cutoff=0.7)
    if close:
        return f" (did you mean '{aliases.get(close[0], prefix + close[0])}'?)"
    return f" (valid keys: {', '.join(prefix + n for n in names)})"


def _typed_kwargs(cls: type, raw: dict[str, Any], source: str, prefix: str) -> dict[str, Any]:
    """The section's values coerced to its fields' types (its keys are known: see `unknown_keys`)."""
    hints = get_type_hints(cls)
    return {key: coerce_value(value, hints[key], f"{prefix}{key}", source) for key, value in raw.items()
            if key not in _NESTED_SECTIONS and not (prefix == "" and key == "grader")}


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML, in field order, loadable by `load_config`."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def dotted(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict's nested sections flattened to dotted keys: {"lora": {"r": 8}} -> {"lora.r": 8}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(dotted(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {prefix + key: value})
    return out
