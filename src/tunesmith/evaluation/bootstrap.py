"""Paired bootstrap confidence intervals for base-vs-tuned differences of ratio-of-sums metrics.

Every metric here is `transform(sum(value) / sum(weight))` over examples: perplexity is
exp(total NLL / total tokens), accuracy is correct / items (weight 1), mean KL is KL sum / tokens.
Resampling examples (not tokens) keeps each example's tokens together, as they are correlated.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

N_RESAMPLES = 2000
"""Bootstrap resamples: 2,000 puts the 2.5th/97.5th percentiles within ~0.1 standard error."""


def ratio_metric(values: np.ndarray, weights: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] = np.asarray
                 ) -> float:
    """transform(sum(values) / sum(weights)) for one set of examples."""
    return float(transform(np.asarray(values, float).sum() / max(np.asarray(weights, float).sum(), 1e-12)))


def paired_bootstrap_ci(base: np.ndarray, tuned: np.ndarray, weights: np.ndarray,
                        transform: Callable[[np.ndarray], np.ndarray] = np.asarray,
                        n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of metric(tuned) - metric(base), resampling the same examples for both.

    base, tuned: (n,) per-example value sums; weights: (n,) per-example weights (shared, since
    both models see the same examples). Pairing removes the between-example variance that the
    two models share, which is most of it.
    """
    base, tuned, weights = (np.asarray(a, float) for a in (base, tuned, weights))
    n = len(base)
    if n == 0:
        return (math.nan, math.nan)
    idx = resample_indices(n, n_resamples, seed)
    w = np.maximum(weights[idx].sum(axis=1), 1e-12)  # (B,)
    diff = transform(tuned[idx].sum(axis=1) / w) - transform(base[idx].sum(axis=1) / w)  # (B,)
    return _percentiles(diff, level)


def bootstrap_ci(values: np.ndarray, weights: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of one ratio-of-sums metric sum(values) / sum(weights), resampling examples."""
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    if len(values) == 0:
        return (math.nan, math.nan)
    idx = resample_indices(len(values), n_resamples, seed)
    return _percentiles(values[idx].sum(axis=1) / np.maximum(weights[idx].sum(axis=1), 1e-12), level)


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, n) example indices, drawn with replacement, one row per resample."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def paired_summary(base: np.ndarray, tuned: np.ndarray, weights: np.ndarray,
                   transform: Callable[[np.ndarray], np.ndarray] = np.asarray,
                   seed: int = 0) -> dict[str, float | list[float]]:
    """{"base", "tuned", "delta", "ci95": [lo, hi], "n"} of a ratio-of-sums metric on paired examples."""
    b, t = ratio_metric(base, weights, transform), ratio_metric(tuned, weights, transform)
    lo, hi = paired_bootstrap_ci(base, tuned, weights, transform, seed=seed)
    return {"base": b, "tuned": t, "delta": t - b, "ci95": [lo, hi], "n": int(len(base))}
