"""Base vs tuned on every general probe, the same examples for both, with paired bootstrap CIs.

The base side (per-example scores and the base model's continuations for the KL probe) is cached
per model and probe set; the KL probe always recomputes base logits, batch by batch, because
storing full distributions would take gigabytes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..data.render import end_of_turn_ids, pad_id
from ..evaluation.bootstrap import paired_summary
from ..inference.decode import generate_batch
from ..model.base import BaseView, base_view, cached_base
from .probes import PROBE_SIZES, Probe, ProbeSizes, build_probes, probe_fingerprint
from .scoring import choice_correct, continuation_example, kl_sums, prompt_ids, target_logprobs, text_example


@dataclass(frozen=True)
class ProbeScore:
    """One probe, base vs tuned. For perplexity lower is better; for accuracy higher; KL has base 0."""

    name: str
    kind: str
    metric: str
    base: float
    tuned: float
    delta: float
    ci95: tuple[float, float]
    n: int
    relative_delta: float | None = None
    """(tuned - base) / base, for perplexity probes."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci95": list(self.ci95)}


@dataclass(frozen=True)
class ForgettingResult:
    probes: dict[str, ProbeScore]
    probe_set: str
    fingerprint: str
    seconds: float
    base_cached: bool = False
    descriptions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {name: {**score.to_dict(), "description": self.descriptions.get(name, "")}
                for name, score in self.probes.items()}


def probe_values(model: Any, tokenizer: Any, probe: Probe, sizes: ProbeSizes) -> np.ndarray:
    """(n, 2) per-example [value, weight] for a perplexity or choice probe.

    perplexity: [summed NLL in nats, predicted tokens]; choice: [correct 0/1, 1].
    """
    if probe.kind == "perplexity":
        examples = [text_example(item, tokenizer, sizes.wiki_max_tokens) for item in probe.items]
        logps = target_logprobs(model, examples)
        return np.array([[-float(lp.sum()), lp.size] for lp in logps])
    if probe.kind == "choice":
        correct = choice_correct(model, probe.items, tokenizer)
        return np.stack([correct, np.ones_like(correct)], axis=1)
    raise ValueError(f"probe {probe.name}: kind {probe.kind} has no per-model values")


def continuations(model: Any, tokenizer: Any, probe: Probe, sizes: ProbeSizes) -> list[list[int]]:
    """The model's greedy answers to a KL probe's prompts (what the KL is measured on)."""
    prompts = [prompt_ids(tokenizer, item.prompt) for item in probe.items]
    eos = sorted(end_of_turn_ids(tokenizer))
    pad = pad_id(tokenizer)
    return generate_batch(model, prompts, sizes.kl_new_tokens, eos, pad)


def score_probe(probe: Probe, base: np.ndarray, tuned: np.ndarray, seed: int = 0) -> ProbeScore:
    """Headline numbers and the paired-bootstrap CI of the difference for one probe.

    base, tuned: (n, 2) per-example [value, weight]; the weights are the same for both models.
    """
    transform = np.exp if probe.kind == "perplexity" else np.asarray
    s = paired_summary(base[:, 0], tuned[:, 0], base[:, 1], transform, seed=seed)
    metric = {"perplexity": "perplexity", "choice": "accuracy", "kl": "kl_per_token"}[probe.kind]
    relative = s["delta"] / s["base"] if probe.kind == "perplexity" else None
    return ProbeScore(probe.name, probe.kind, metric, s["base"], s["tuned"], s["delta"], tuple(s["ci95"]), s["n"],
                      relative)


def measure_probes(model: Any, tokenizer: Any, model_name: str, sizes: ProbeSizes | str = "standard",
                   user_probes: Sequence[str] = (), base_model: Any | None = None, use_cache: bool = True,
                   log: Callable[[str], None] | None = None) -> ForgettingResult:
    """Every general probe on the base and the tuned model.

    model: the tuned model (a peft model unless `base_model` is given); model_name: the config's
    `model` (names the cache entry); sizes: "train", "standard", "full" or a ProbeSizes.
    """
    sizes = PROBE_SIZES[sizes] if isinstance(sizes, str) else sizes
    started = time.perf_counter()
    probes = build_probes(sizes, user_probes)
    fingerprint = probe_fingerprint(probes, sizes)
    view = base_view(model, base_model)
    was_training = model.training
    model.eval()
    try:
        cached, base_cached = cached_base(model_name, tokenizer, fingerprint,
                                          lambda: _base_results(view, tokenizer, probes, sizes, log), use_cache)
        scores = {}
        for probe in probes:
            if log:
                log(f"tuned model: probe {probe.name}")
            if probe.kind == "kl":
                examples = [continuation_example(prompt_ids(tokenizer, item.prompt), cont, item.source)
                            for item, cont in zip(probe.items, cached[probe.name]["continuations"]) if cont]
                tuned = kl_sums(view, model, examples)
                base = np.stack([np.zeros(len(tuned)), tuned[:, 1]], axis=1)
            else:
                base = np.array(cached[probe.name]["values"])
                tuned = probe_values(model, tokenizer, probe, sizes)
            scores[probe.name] = score_probe(probe, base, tuned)
    finally:
        model.train(was_training)
    return ForgettingResult(scores, sizes.name, fingerprint, time.perf_counter() - started, base_cached,
                            {p.name: p.description for p in probes})


def _base_results(view: BaseView, tokenizer: Any, probes: Sequence[Probe], sizes: ProbeSizes,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    """What the cache keeps of the base model: per-example values, or a KL probe's continuations."""
    results: dict[str, Any] = {}
    with view() as base:
        for probe in probes:
            if log:
                log(f"base model: probe {probe.name} ({len(probe.items)} items)")
            if probe.kind == "kl":
                results[probe.name] = {"continuations": continuations(base, tokenizer, probe, sizes)}
            else:
                results[probe.name] = {"values": probe_values(base, tokenizer, probe, sizes).tolist()}
    return results


def measure_probes_fast(model: Any, tokenizer: Any, model_name: str, user_probes: Sequence[str] = (),
                        base_model: Any | None = None) -> ForgettingResult:
    """The small "train" probe set, for an evaluation during training (a few seconds on the 135M model)."""
    return measure_probes(model, tokenizer, model_name, "train", user_probes, base_model)


def probe_metrics_row(step: int, result: ForgettingResult, within: bool) -> dict[str, Any]:
    """The metrics.jsonl row for probes measured during training (read by the report's trade-off plot)."""
    return {
        "step": step,
        "probes": {name: {"metric": s.metric, "base": s.base, "tuned": s.tuned, "delta": s.delta,
                          "relative_delta": s.relative_delta, "ci95": list(s.ci95)}
                   for name, s in result.probes.items()},
        "within_budget": within,
    }
