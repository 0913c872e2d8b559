"""The learning curve's fit and its reading, on synthetic points with known answers (no model)."""

import numpy as np
import pytest

from tunesmith.errors import ConfigError
from tunesmith.evaluation.learning_curve import (
    analyse_curve,
    fit_curve,
    gain_share_fraction,
    point_losses,
    resampled_losses,
)
from tunesmith.settings import CurveSettings

N = np.array([50, 100, 200, 400, 800])


def power_law(n, a=1.2, b=6.0, c=0.45):
    return a + b * np.asarray(n, float) ** -c


def held_out(losses, n_examples=60, seed=0, spread=0.3, jitter=0.0):
    """Per-example NLL (K, E) and tokens (E,) whose point losses are exactly `losses`: every
    example has its own difficulty, the same at every point (as real held-out examples do), plus
    `jitter` of its own at each point."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(20, 80, n_examples).astype(float)
    offset = rng.normal(0, spread, n_examples)
    rows = []
    for loss in losses:
        mine = offset + rng.normal(0, jitter, n_examples)
        mine -= (mine * tokens).sum() / tokens.sum()  # token-weighted mean 0: the losses stay exact
        rows.append((loss + mine) * tokens)
    return np.stack(rows), tokens


def test_the_fit_recovers_a_known_power_law():
    fit = fit_curve(N, power_law(N))
    assert fit.kind == "power_law"
    assert fit.c == pytest.approx(0.45, abs=1e-3)
    assert fit.a == pytest.approx(1.2, abs=1e-3)
    assert fit.b == pytest.approx(6.0, rel=1e-2)
    assert float(fit.predict(1600)) == pytest.approx(float(power_law(1600)), abs=1e-4)


def test_the_fit_recovers_the_exponent_from_noisy_points():
    noisy = power_law(N) + np.random.default_rng(0).normal(0, 0.005, len(N))
    fit = fit_curve(N, noisy)
    assert fit.c == pytest.approx(0.45, abs=0.05)
    assert fit.c == pytest.approx(0.4386, abs=1e-3)  # the value this noise gives, pinned


def test_the_constraints_hold_on_a_rising_curve():
    fit = fit_curve([100, 200, 400], [2.0, 2.1, 2.3])  # no fall: b = 0, the floor is the mean
    assert fit.b == 0.0 and fit.a == pytest.approx(2.1333, abs=1e-4)


def test_two_points_fall_back_to_log_linear_and_say_so():
    losses = [3.0, 3.0 - 0.2 * np.log(2)]  # loss = a - 0.2 ln n
    fit = fit_curve([100, 200], losses)
    assert fit.kind == "log_linear" and fit.c is None
    assert fit.b == pytest.approx(-0.2) and fit.a == pytest.approx(3.0 + 0.2 * np.log(100))
    nll, tokens = held_out(losses)
    analysis = analyse_curve([100, 200], [0.5, 1.0], nll, tokens, 3.5, [None, None])
    assert analysis.floor is None and analysis.check is None
    assert "log-linear fit: 2 points are too few for a power law" in analysis.note
    assert analysis.at_2x.value == pytest.approx(losses[1] - 0.2 * np.log(2))
    assert "log-linear" in analysis.verdict and "Check: with 2 points nothing is left" in analysis.verdict


def test_the_leave_largest_out_error_is_computed():
    n = [100, 200, 400, 800]
    exact = power_law(n)
    analysis = analyse_curve(n, [0.125, 0.25, 0.5, 1.0], *held_out(exact), 4.0, [None] * 4)
    check = analysis.check
    # Three points of a power law determine it: the prediction of the fourth is the truth.
    assert check.kind == "power_law" and check.n == 800
    assert check.predicted.value == pytest.approx(exact[-1], abs=2e-3)
    assert check.measured == pytest.approx(exact[-1]) and abs(check.error) < 2e-3

    worse = exact.copy()
    worse[-1] += 0.1  # the largest point measured 0.1 above the curve of the others
    check = analyse_curve(n, [0.125, 0.25, 0.5, 1.0], *held_out(worse), 4.0, [None] * 4).check
    assert check.error == pytest.approx(-0.1, abs=3e-3)
    assert check.inside is False and "OUTSIDE the interval" in _check_line(n, worse)


def _check_line(n, losses):
    verdict = analyse_curve(n, [0.125, 0.25, 0.5, 1.0], *held_out(losses), 4.0, [None] * 4).verdict
    return next(line for line in verdict.splitlines() if line.startswith("Check:"))


def test_the_bootstrap_resamples_the_same_examples_at_every_point():
    nll, tokens = held_out(power_law([100, 200, 400]))
    resampled = resampled_losses(nll, tokens, CurveSettings())
    assert resampled.shape == (1000, 3)
    assert np.allclose(point_losses(nll, tokens), power_law([100, 200, 400]))
    # Paired: a resample that drew hard examples is hard at every point, so the differences
    # between points vary far less than the points themselves.
    assert np.std(resampled[:, 0] - resampled[:, 2]) < 0.05 * np.std(resampled[:, 0])


def test_the_verdict_rules():
    n, fractions = [100, 200, 400, 800], [0.125, 0.25, 0.5, 1.0]
    # 20 * (800^-0.5 - 1600^-0.5) = 0.207 off a loss of 1.707 at 800 examples: 12.1%.
    steep = analyse_curve(n, fractions, *held_out(power_law(n, a=1.0, b=20.0, c=0.5), jitter=0.05), 4.0,
                          [True, True, False, None])
    assert steep.verdict.startswith("More data of this kind would still help: ~0.207 lower held-out loss at 2x "
                                    "the data (12.1%; 95% CI [")
    assert 0 < steep.gain_at_2x.ci95[0] < 0.207 < steep.gain_at_2x.ci95[1]
    assert "Forgetting: 1 of 4 points OVER the forgetting budget (fraction 0.5)" in steep.verdict

    flat = analyse_curve(n, fractions, *held_out(power_law(n, a=2.0, b=0.5, c=0.5), jitter=0.05), 4.0, [True] * 4)
    assert flat.gain_at_2x.value / 2.0 < 0.01  # doubling takes off under 1%
    assert flat.verdict.startswith("The curve has flattened: the next gains come from better data")
    assert "Forgetting: every point measured is within the forgetting budget." in flat.verdict

    rising = analyse_curve(n, fractions, *held_out([2.0, 2.05, 2.1, 2.2]), 4.0, [None] * 4)
    assert rising.verdict.startswith("The curve has flattened")
    assert "More data did not lower the held-out loss over the range measured (2.000 at 100 examples" in rising.verdict
    assert "Forgetting" not in rising.verdict  # not measured: nothing said


def test_the_smallest_fraction_reaching_90_percent_of_the_gain():
    fractions = [0.125, 0.25, 0.5, 1.0]
    # Full gain 3.0 - 1.4 = 1.6; 90% of it is 1.44: 0.25 gained 1.4, 0.5 gained 1.55.
    assert gain_share_fraction(fractions, [2.0, 1.6, 1.45, 1.4], 3.0, 0.9) == 0.5
    assert gain_share_fraction(fractions, [2.0, 1.6, 1.45, 1.4], 3.0, 0.7) == 0.25  # 1.4 >= 1.12, 1.0 is not
    assert gain_share_fraction(fractions, [3.2, 3.1, 3.05, 3.1], 3.0, 0.9) is None  # no gain at all


@pytest.mark.parametrize("fractions, message", [
    ((1.0,), "needs at least 2 fractions"),
    ((0.5, 0.25, 1.0), "must be distinct and increasing"),
    ((0.0, 1.0), "must each be in (0, 1]"),
    ((0.5, 1.5), "must each be in (0, 1]"),
])
def test_bad_fractions_are_refused(fractions, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        CurveSettings(fractions=fractions)


def test_a_floor_at_its_bound_is_called_so():
    """The FAQ's four points fell as a pure power law: every refit put the floor at 0, and the
    summary said "floor 0.000 (95% CI [0.000, 0.000])", which reads like a measured floor of zero."""
    n = [57, 113, 226, 453]
    pure = power_law(n, a=0.0, b=4.261, c=0.068)
    verdict = analyse_curve(n, [0.125, 0.25, 0.5, 1.0], *held_out(pure), 3.7, [None] * 4).verdict
    fit_line = next(line for line in verdict.splitlines() if line.startswith("Fit:"))
    assert "no saturation is in sight" in fit_line
    saturating = analyse_curve(N, [0.0625, 0.125, 0.25, 0.5, 1.0], *held_out(power_law(N)), 4.0, [None] * 5).verdict
    assert "floor 1.200" in saturating and "no saturation" not in saturating
