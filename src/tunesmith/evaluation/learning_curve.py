"""A learning curve's fit and its reading, without a model: held-out loss against training examples
fitted by a saturating power law (log-linear with too few points), intervals from resampling the
held-out examples, the leave-largest-out check, and the verdict by fixed rules.

The power law is loss(n) = a + b * n^-c with a >= 0 (the floor), b >= 0, c in [0.01, 4]: for each
c on a grid, a and b are a linear least-squares fit, the grid is refined around the best c
(Hernandez et al. 2021, "Scaling Laws for Transfer", fit this form to fine-tuning curves). It needs
3 points; with 2 the fit is loss(n) = a + b * ln(n), which has no floor, and the verdict says so.

Intervals: every held-out example's loss at every point is resampled together (the same examples
for all points, as they were measured), each resample refitted; percentiles of the refits give the
95% intervals. They cover the noise of a finite held-out set, not that of training (another seed).

The verdict's rules (`verdict`), with CurveSettings' numbers:
1. "more data of this kind would still help" when doubling the data lowers the fitted loss by at
   least `flat_relative_gain` of it (1%) and the 95% interval of that gain is above zero;
2. otherwise "the curve has flattened", and when the largest subset did no better than the
   smallest, that more data did not lower the loss over the range measured.
Then the fit's figures, the smallest fraction reaching `gain_share` (90%) of the full data's gain
over the base model, the leave-largest-out check, and the points over the forgetting budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Sequence

import numpy as np

from ..settings import CurveSettings
from .bootstrap import bootstrap_ci, resample_indices

FitKind = Literal["power_law", "log_linear"]
MIN_POWER_LAW_POINTS = 3
"""A power law has three parameters, so three points determine it (exactly); with two, log-linear."""
EXPONENTS = np.geomspace(0.01, 4.0, 400)
"""The exponents c searched first (1.5% apart); the best one is then refined between its neighbours.
Transfer curves measure c between about 0.1 and 1; 4 is a curve that is flat past its first point."""
REFINE_POINTS = 41
"""Exponents tried between the best grid point's neighbours: c to within ~0.08%."""
BAND_POINTS = 60
"""Training sizes, log-spaced from the smallest point to 4x the largest, at which the band is drawn."""


@dataclass(frozen=True)
class CurveFit:
    """One fitted curve of held-out loss in the number of training examples n."""

    kind: FitKind
    """power_law: loss = a + b * n^-c; log_linear: loss = a + b * ln(n)."""
    a: float
    """Power law: the floor, the loss with unlimited data of this kind; log-linear: the loss at n = 1."""
    b: float
    """Power law: the scale of the falling part (>= 0); log-linear: the change per e-fold of n."""
    c: float | None
    """Power law: the exponent (larger falls faster, then flattens sooner); None for log-linear."""

    def predict(self, n: float | np.ndarray) -> np.ndarray:
        n = np.asarray(n, float)
        return self.a + self.b * (n ** -self.c if self.kind == "power_law" else np.log(n))


@dataclass(frozen=True)
class Estimate:
    """A figure from the fit and its 95% bootstrap interval."""

    value: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": list(self.ci95)}


@dataclass(frozen=True)
class LargestPointCheck:
    """The curve fitted on every point but the largest, predicting the largest: how far to trust an
    extrapolation of one doubling."""

    kind: FitKind
    """The fit used on the smaller points (log-linear when they are only two)."""
    n: int
    """Training examples of the largest point."""
    predicted: Estimate
    """Its held-out loss as the smaller points' fit predicts it."""
    measured: float
    error: float
    """predicted - measured (positive: the fit was too pessimistic)."""
    inside: bool
    """Whether the measured loss lies inside the prediction's 95% interval."""


@dataclass(frozen=True)
class CurveAnalysis:
    """Everything curve.json says about the fit, and the verdict worded from it."""

    fit: CurveFit
    note: str
    """Why the fit is not a power law (too few points), or empty."""
    at_2x: Estimate
    """Predicted held-out loss with twice the largest point's training examples."""
    at_4x: Estimate
    gain_at_2x: Estimate
    """fit(n) - fit(2n) at the largest n: what doubling the data is predicted to take off the loss."""
    floor: Estimate | None
    """The power law's `a`; None for a log-linear fit, which has none."""
    gain_share_fraction: float | None
    """The smallest fraction whose gain over the base reached `gain_share` of the full data's; None
    when the full data did not improve on the base."""
    check: LargestPointCheck | None
    """None with two points: one point left cannot be fitted."""
    band: list[tuple[float, float, float, float]]
    """(n, fitted loss, 2.5th, 97.5th percentile of the refits) from the smallest n to 4x the largest."""
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("at_2x", "at_4x", "gain_at_2x", "floor"):
            out[key] = getattr(self, key).to_dict() if getattr(self, key) is not None else None
        if self.check is not None:
            out["check"]["predicted"] = self.check.predicted.to_dict()
        return out


# --- fitting, vectorised over rows: one curve per row of `losses` (a fit, or every bootstrap refit)

def _least_squares(x: np.ndarray, y: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """(a, b, squared error) of y ~ a + b * x^-c with a, b >= 0 for each row and each exponent.

    x: (K,) sizes; y: (R, K) losses; c: (R or 1, G) exponents. Returns (R, G) arrays."""
    z = x[None, None, :] ** -c[..., None]  # (R|1, G, K)
    yy = y[:, None, :]  # (R, 1, K)
    z_mean, y_mean = z.mean(-1), yy.mean(-1)  # (R|1, G), (R, 1)
    dz = z - z_mean[..., None]
    b = ((dz * (yy - y_mean[..., None])).sum(-1)) / np.maximum((dz ** 2).sum(-1), 1e-300)
    a = y_mean - b * z_mean
    # The constraints, each the exact least-squares answer on its boundary: no fall (b = 0: the
    # mean), or no floor below zero (a = 0: b through the origin; a loss is never negative).
    flat = b < 0
    a, b = np.where(flat, y_mean, a), np.where(flat, 0.0, b)
    through_zero = a < 0
    b = np.where(through_zero, (z * yy).sum(-1) / (z ** 2).sum(-1), b)
    a = np.where(through_zero, 0.0, a)
    error = ((yy - a[..., None] - b[..., None] * z) ** 2).sum(-1)
    return a, b, error


def _power_law_rows(n: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c), each (R,), of the power law fitted to each row of losses (R, K)."""
    x = n / n.max()  # conditioning: x^-c stays within [1, 2^(4 log2 ratio)]
    a, b, err = _least_squares(x, losses, EXPONENTS[None, :])
    best = err.argmin(1)  # (R,)
    lo = EXPONENTS[np.maximum(best - 1, 0)]
    hi = EXPONENTS[np.minimum(best + 1, len(EXPONENTS) - 1)]
    fine = np.geomspace(lo, hi, REFINE_POINTS, axis=1)  # (R, F)
    a, b, err = _least_squares(x, losses, fine)
    pick = err.argmin(1)
    rows = np.arange(len(losses))
    c = fine[rows, pick]
    return a[rows, pick], b[rows, pick] * n.max() ** c, c  # b back in units of examples


def _log_linear_rows(n: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (R,), of loss = a + b ln(n) fitted to each row by least squares."""
    t = np.log(n)
    dt = t - t.mean()
    b = (losses - losses.mean(1, keepdims=True)) @ dt / (dt ** 2).sum()
    return losses.mean(1) - b * t.mean(), b


def fit_kind(n_points: int) -> FitKind:
    if n_points < 2:
        raise ValueError(f"a learning curve needs at least 2 points, got {n_points}")
    return "power_law" if n_points >= MIN_POWER_LAW_POINTS else "log_linear"


def fit_rows(n: Sequence[float], losses: np.ndarray, kind: FitKind) -> list[CurveFit]:
    """One fit per row of losses (R, K) at the sizes n (K,)."""
    n_arr, losses = np.asarray(n, float), np.atleast_2d(np.asarray(losses, float))
    if kind == "power_law":
        a, b, c = _power_law_rows(n_arr, losses)
        return [CurveFit(kind, float(ai), float(bi), float(ci)) for ai, bi, ci in zip(a, b, c)]
    a, b = _log_linear_rows(n_arr, losses)
    return [CurveFit(kind, float(ai), float(bi), None) for ai, bi in zip(a, b)]


def fit_curve(n: Sequence[float], losses: Sequence[float]) -> CurveFit:
    """The curve through the points: a power law from 3 points on, else log-linear."""
    return fit_rows(n, np.asarray(losses, float)[None, :], fit_kind(len(n)))[0]


# --- the bootstrap over held-out examples

def point_losses(nll: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(K,) held-out loss per point: total NLL / total target tokens. nll: (K, E) per example; tokens: (E,)."""
    return nll.sum(1) / tokens.sum()


def resampled_losses(nll: np.ndarray, tokens: np.ndarray, settings: CurveSettings) -> np.ndarray:
    """(B, K) held-out losses of every point, each row on one resample of the held-out examples,
    the same examples for every point (they were measured on the same ones)."""
    idx = resample_indices(nll.shape[1], settings.resamples, settings.seed)  # (B, E)
    return np.stack([row[idx].sum(1) for row in nll], axis=1) / tokens[idx].sum(1)[:, None]


def point_interval(nll_row: np.ndarray, tokens: np.ndarray, settings: CurveSettings) -> tuple[float, float]:
    """95% interval of one point's held-out loss (evaluation/bootstrap.py's ratio-of-sums CI)."""
    return bootstrap_ci(nll_row, tokens, n_resamples=settings.resamples, seed=settings.seed)


def _estimate(value: float, samples: np.ndarray) -> Estimate:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return Estimate(float(value), (float(lo), float(hi)))


def check_largest(n: Sequence[int], losses: np.ndarray, resampled: np.ndarray) -> LargestPointCheck | None:
    """Fit every point but the largest (and each resample of them), predict the largest."""
    if len(n) < 3:
        return None
    kind = fit_kind(len(n) - 1)
    fit = fit_rows(n[:-1], losses[None, :-1], kind)[0]
    refits = fit_rows(n[:-1], resampled[:, :-1], kind)
    predicted = _estimate(float(fit.predict(n[-1])), np.array([f.predict(n[-1]) for f in refits]))
    measured = float(losses[-1])
    lo, hi = predicted.ci95
    return LargestPointCheck(kind, int(n[-1]), predicted, measured, predicted.value - measured, lo <= measured <= hi)


def gain_share_fraction(fractions: Sequence[float], losses: Sequence[float], base_loss: float,
                        share: float) -> float | None:
    """The smallest fraction whose measured gain over the base reached `share` of the full data's."""
    full_gain = base_loss - losses[-1]
    if full_gain <= 0:
        return None
    return next(f for f, loss in zip(fractions, losses) if base_loss - loss >= share * full_gain - 1e-12)


def analyse_curve(n: Sequence[int], fractions: Sequence[float], nll: np.ndarray, tokens: np.ndarray,
                  base_loss: float, within_budget: Sequence[bool | None],
                  settings: CurveSettings | None = None) -> CurveAnalysis:
    """The fit, its intervals, the check and the verdict, from per-example held-out NLL.

    n: (K,) training examples per point, increasing; nll: (K, E) summed NLL of each held-out example
    at each point; tokens: (E,) its target tokens; base_loss: the untrained model's held-out loss."""
    settings = settings or CurveSettings()
    nll, tokens = np.asarray(nll, float), np.asarray(tokens, float)
    losses = point_losses(nll, tokens)
    resampled = resampled_losses(nll, tokens, settings)  # (B, K)
    kind = fit_kind(len(n))
    fit = fit_rows(n, losses[None, :], kind)[0]
    refits = fit_rows(n, resampled, kind)
    top = float(n[-1])
    grid = np.geomspace(float(n[0]), 4 * top, BAND_POINTS)
    curves = np.stack([f.predict(grid) for f in refits])  # (B, BAND_POINTS)
    lo, hi = np.quantile(curves, [0.025, 0.975], axis=0)
    at = {k: _estimate(float(fit.predict(k * top)), np.array([f.predict(k * top) for f in refits])) for k in (2, 4)}
    gain = _estimate(float(fit.predict(top) - fit.predict(2 * top)),
                     np.array([f.predict(top) - f.predict(2 * top) for f in refits]))
    floor = _estimate(fit.a, np.array([f.a for f in refits])) if kind == "power_law" else None
    note = "" if kind == "power_law" else (
        f"log-linear fit: {len(n)} points are too few for a power law (it needs {MIN_POWER_LAW_POINTS}), "
        "so there is no floor and the extrapolation assumes the same fall per doubling")
    analysis = CurveAnalysis(
        fit=fit, note=note, at_2x=at[2], at_4x=at[4], gain_at_2x=gain, floor=floor,
        gain_share_fraction=gain_share_fraction(fractions, list(losses), base_loss, settings.gain_share),
        check=check_largest(list(n), losses, resampled),
        band=[(float(g), float(f), float(a), float(b)) for g, f, a, b in zip(grid, fit.predict(grid), lo, hi)],
        verdict="")
    text = verdict(analysis, n, fractions, losses, within_budget, settings)
    return replace(analysis, verdict=text)


# --- the verdict, by the rules of the module docstring

FLOOR_AT_BOUND = 1e-9
"""A floor interval reaching down to this reaches the fit's bound (a >= 0): no floor is resolved."""


def _ci(e: Estimate) -> str:
    return f"95% CI [{e.ci95[0]:.3f}, {e.ci95[1]:.3f}]"


def _fit_sentence(a: CurveAnalysis, n_points: int, top: int) -> str:
    f = a.fit
    if f.kind == "power_law":
        text = f"Fit: loss(n) = {f.a:.3f} + {f.b:.4g} * n^-{f.c:.3f} on {n_points} points; "
        text += f"floor {f.a:.3f} ({_ci(a.floor)}"
        if a.floor.ci95[0] <= FLOOR_AT_BOUND:  # the points may still fall as a pure power law
            text += ": its interval reaches the fit's bound, 0, so no saturation is in sight in the range measured"
        text += ")"
    else:
        text = f"Fit: loss(n) = {f.a:.3f} {f.b:+.4f} * ln(n) on {n_points} points ({a.note})"
    return (text + f"; predicted held-out loss at 2x ({2 * top:,} examples) {a.at_2x.value:.3f} ({_ci(a.at_2x)}), "
            f"at 4x {a.at_4x.value:.3f} ({_ci(a.at_4x)}).")


def _check_sentence(check: LargestPointCheck | None) -> str:
    if check is None:
        return "Check: with 2 points nothing is left to fit without the largest; add a fraction to check the fit."
    kind = "" if check.kind == "power_law" else " (log-linear: 2 points)"
    where = "inside" if check.inside else "OUTSIDE"
    return (f"Check: fitted without the largest point{kind}, the curve predicted {check.predicted.value:.3f} "
            f"({_ci(check.predicted)}) at {check.n:,} examples; measured {check.measured:.3f}, off by "
            f"{check.error:+.3f} ({check.error / check.measured:+.1%}), {where} the interval.")


def verdict(a: CurveAnalysis, n: Sequence[int], fractions: Sequence[float], losses: Sequence[float],
            within_budget: Sequence[bool | None], settings: CurveSettings) -> str:
    """Plain sentences, one per line: the call, the fit, the 90%-of-gain point, the check, forgetting."""
    top = int(n[-1])
    gain, now = a.gain_at_2x, float(a.fit.predict(top))
    relative = gain.value / now if now > 0 else 0.0
    if gain.ci95[0] > 0 and relative >= settings.flat_relative_gain:
        call = (f"More data of this kind would still help: ~{gain.value:.3f} lower held-out loss at 2x the data "
                f"({relative:.1%}; {_ci(gain)}).")
    else:
        call = ("The curve has flattened: the next gains come from better data, a larger model or retrieval, not "
                f"more rows (doubling the data is predicted to lower the held-out loss by {gain.value:.3f}, "
                f"{_ci(gain)}).")
        if losses[-1] >= losses[0]:
            call += (f" More data did not lower the held-out loss over the range measured ({losses[0]:.3f} at "
                     f"{int(n[0]):,} examples, {losses[-1]:.3f} at {top:,}).")
    lines = [call, _fit_sentence(a, len(n), top)]
    if a.gain_share_fraction is None:
        lines.append("The full data did not lower the held-out loss below the base model's.")
    else:
        k = list(fractions).index(a.gain_share_fraction)
        lines.append(f"{settings.gain_share:.0%} of the full data's gain over the base model was reached at fraction "
                     f"{a.gain_share_fraction:g} ({int(n[k]):,} examples).")
    lines.append(_check_sentence(a.check))
    over = [f"{f:g}" for f, ok in zip(fractions, within_budget) if ok is False]
    if over:
        lines.append(f"Forgetting: {len(over)} of {len(fractions)} points OVER the forgetting budget (fraction "
                     f"{', '.join(over)}): compare at a lower learning rate before buying data.")
    elif any(ok is not None for ok in within_budget):
        lines.append("Forgetting: every point measured is within the forgetting budget.")
    return "\n".join(lines)
