"""The paired bootstrap on distributions whose answer is known."""

import numpy as np
import pytest

from tunesmith.evaluation.bootstrap import paired_bootstrap_ci, paired_summary, ratio_metric


def test_coverage_of_a_known_mean_is_near_95_percent():
    rng = np.random.default_rng(1)
    true_shift, n, trials, covered = 0.3, 60, 200, 0
    for trial in range(trials):
        base = rng.normal(0, 1, n)
        tuned = base + rng.normal(true_shift, 1, n)
        lo, hi = paired_bootstrap_ci(base, tuned, np.ones(n), n_resamples=500, seed=trial)
        covered += lo <= true_shift <= hi
    assert 0.88 <= covered / trials <= 0.99


def test_width_matches_the_normal_theory():
    rng = np.random.default_rng(2)
    n = 400
    diff = rng.normal(1.0, 1.0, n)
    lo, hi = paired_bootstrap_ci(np.zeros(n), diff, np.ones(n))
    expected = 2 * 1.96 * diff.std(ddof=1) / np.sqrt(n)  # ~0.196
    assert hi - lo == pytest.approx(expected, rel=0.15)
    assert lo < diff.mean() < hi


def test_pairing_removes_the_shared_variance():
    # Every example moves by exactly 0.1: a paired CI is exactly [0.1, 0.1] however noisy the
    # examples are; an unpaired bootstrap would be about 1.8 wide here.
    base = np.random.default_rng(3).normal(0, 10, 100)
    lo, hi = paired_bootstrap_ci(base, base + 0.1, np.ones(100))
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)


def test_identical_models_give_a_zero_interval():
    values = np.random.default_rng(4).random(50)
    assert paired_bootstrap_ci(values, values, np.ones(50), np.exp) == (0.0, 0.0)


def test_ratio_of_sums_weights_by_tokens():
    # Two texts: 10 tokens at NLL sum 20 and 30 tokens at 30: perplexity exp(50 / 40), not the mean.
    assert ratio_metric(np.array([20.0, 30.0]), np.array([10, 30]), np.exp) == pytest.approx(np.exp(1.25))
    summary = paired_summary(np.array([20.0, 30.0]), np.array([10.0, 30.0]), np.array([10, 30]), np.exp)
    assert summary["delta"] == pytest.approx(np.exp(1.0) - np.exp(1.25))
    assert summary["ci95"][0] <= summary["delta"] <= summary["ci95"][1]
