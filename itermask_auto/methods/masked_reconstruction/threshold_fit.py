"""IterMask3D threshold from the sweep curve t(i): fit t ≈ a·tan(b·i), k* = first i with dt/di > γ, τ = t(k*).

i is in the reference's percent units (1..100: the sweep step that leaves (100 − i) % of the brain masked),
whatever the planned sampling of i, so γ keeps the reference's meaning.
τ: from the fitted curve when the fit is accepted (it is smooth and defined between sparse sweep points),
else from the piecewise-linear interpolation of the measured points."""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import curve_fit

logger = logging.getLogger(__name__)

SMOOTHING_WINDOW = 5  # points of the moving average used by the finite-difference fallback


def tan_curve(i: np.ndarray, a: float, b: float) -> np.ndarray:
    return a * np.tan(b * i)


@dataclass
class ThresholdFit:
    tau: float
    k_star: float
    method: str                 # "tan_fit" | "finite_differences" | "degenerate"
    a: Optional[float] = None
    b: Optional[float] = None
    r2: Optional[float] = None
    n_fit_points: int = 0
    note: str = ""
    scale: float = 1.0          # the unit t was divided by before the knee was read (τ is in error units)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def coverage_weights(i: np.ndarray) -> np.ndarray:
    """Weight of each point = the stretch of i it stands for (trapezoid widths), so a sparse sweep is fitted
    as if its points were spread uniformly like the reference's i = 1, 2, ... (the reference fits all of them)."""
    if len(i) < 2:
        return np.ones_like(i)
    edges = np.r_[i[0], (i[1:] + i[:-1]) / 2, i[-1]]
    w = np.diff(edges)
    w[0] += 0.5
    w[-1] += 0.5
    return w / w.mean()


def fit_tan(i: Sequence[float], t: Sequence[float], weighted: bool = True) -> Tuple[float, float, float]:
    """Weighted least-squares a, b of t ≈ a·tan(b·i), b·max(i) < π/2; returns (a, b, weighted R²).

    Raises RuntimeError when no start converges."""
    i, t = np.asarray(i, np.float64), np.asarray(t, np.float64)
    if len(i) < 3 or not np.all(np.isfinite(t)):
        raise RuntimeError(f"need >= 3 finite points, got {len(i)}")
    w = coverage_weights(i) if weighted else np.ones_like(i)
    sigma = 1.0 / np.sqrt(w)
    b_max = (math.pi / 2) / i.max() * (1 - 1e-6)
    best = None
    for frac in (0.5, 0.8, 0.95, 0.99):  # several starts: the optimum is often near the pole
        b0 = frac * b_max
        a0 = max(float(np.median(t / np.tan(b0 * i))), 1e-12)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                (a, b), _ = curve_fit(tan_curve, i, t, p0=(a0, b0), sigma=sigma, bounds=([0.0, 1e-9], [np.inf, b_max]),
                                      maxfev=5000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum(w * (tan_curve(i, a, b) - t) ** 2))
        if best is None or sse < best[2]:
            best = (float(a), float(b), sse)
    if best is None:
        raise RuntimeError("curve_fit did not converge from any start")
    sst = float(np.sum(w * (t - np.average(t, weights=w)) ** 2))
    r2 = 1.0 - best[2] / sst if sst > 0 else 0.0
    return best[0], best[1], r2


def _interp(i: np.ndarray, t: np.ndarray, x: float) -> float:
    return float(np.interp(x, i, t))


def _finite_difference_knee(i: np.ndarray, t: np.ndarray, gamma: float) -> Tuple[float, str]:
    w = min(SMOOTHING_WINDOW, len(t))
    if w >= 3:
        kernel = np.ones(w) / w
        padded = np.pad(t, (w // 2, w - 1 - w // 2), mode="edge")
        t_s = np.convolve(padded, kernel, mode="valid")
    else:
        t_s = t
    slope = np.gradient(t_s, i) if len(i) >= 2 else np.zeros_like(t)
    above = np.nonzero(slope > gamma)[0]
    if len(above) == 0:
        return float(i[-1]), "no slope above gamma: largest i"
    return float(i[above[0]]), ""


@dataclass
class SweepCurve:
    """A sweep curve prepared once for any γ: monotone points plus the tan fit when it is accepted."""
    i: np.ndarray
    t: np.ndarray
    n_fit: int = 0
    a: Optional[float] = None
    b: Optional[float] = None
    r2: Optional[float] = None
    accepted: bool = False
    note: str = ""
    degenerate: Optional[ThresholdFit] = None


def prepare_curve(i: Sequence[float], t: Sequence[float], fit_max_threshold: float = 10.0,
                  fit_min_r2: float = 0.85) -> SweepCurve:
    """Clean the points and fit a·tan(b·i) once (the fit does not depend on γ)."""
    i, t = np.asarray(i, np.float64), np.asarray(t, np.float64)
    finite = np.isfinite(t)
    i, t = i[finite], t[finite]
    if len(i) == 0:
        return SweepCurve(i, t, degenerate=ThresholdFit(tau=0.0, k_star=0.0, method="degenerate",
                                                        note="no finite sweep point"))
    if len(i) == 1 or np.ptp(t) <= 0:
        return SweepCurve(i, t, degenerate=ThresholdFit(tau=float(t[-1]), k_star=float(i[-1]), method="degenerate",
                                                        note="flat or single-point curve: largest i"))
    t = np.maximum.accumulate(t)  # quantiles of a shrinking mask; enforce the monotone shape the rule assumes
    over = np.nonzero(t > fit_max_threshold)[0]
    n_fit = int(over[0]) if len(over) else len(i)  # points until t first exceeds the limit
    curve = SweepCurve(i, t, n_fit=n_fit)
    if n_fit < 3:
        curve.note = f"only {n_fit} point(s) below {fit_max_threshold}"
        return curve
    try:
        curve.a, curve.b, curve.r2 = fit_tan(i[:n_fit], t[:n_fit])
    except RuntimeError as e:
        curve.note = f"tan fit failed ({e})"
        return curve
    curve.accepted = curve.r2 >= fit_min_r2 and curve.a > 0
    if not curve.accepted:
        curve.note = f"tan fit R²={curve.r2:.3f} < {fit_min_r2}"
    return curve


def tau_at_gamma(curve: SweepCurve, gamma: float) -> ThresholdFit:
    """k* = first i with dt/di > γ (fitted curve if accepted, else smoothed finite differences); τ = t(k*)."""
    if curve.degenerate is not None:
        return curve.degenerate
    i, t = curve.i, curve.t
    if curve.accepted:
        a, b = curve.a, curve.b
        # dt/di = a·b·(1 + tan²(b·i)) > γ  <=>  tan²(b·i) > γ/(a·b) − 1
        ratio = gamma / (a * b) - 1.0
        k = 0.0 if ratio <= 0 else math.atan(math.sqrt(ratio)) / b
        k_star = float(min(max(math.ceil(k - 1e-9), i[0]), i[-1]))
        return ThresholdFit(tau=value_at(curve, k_star), k_star=k_star, method="tan_fit", a=a, b=b, r2=curve.r2,
                            n_fit_points=curve.n_fit)
    k_star, extra = _finite_difference_knee(i, t, gamma)
    return ThresholdFit(tau=_interp(i, t, k_star), k_star=k_star, method="finite_differences",
                        n_fit_points=curve.n_fit, note="; ".join(x for x in (curve.note, extra) if x))


def value_at(curve: SweepCurve, k: float) -> float:
    """The curve's threshold at sweep index k, as the knee rule reads it: the fitted a·tan(b·k) inside the fitted
    range when the fit is accepted, else the piecewise-linear interpolation of the measured points."""
    if curve.degenerate is not None:
        return curve.degenerate.tau
    i, t = curve.i, curve.t
    if curve.accepted and k <= i[curve.n_fit - 1]:
        return float(tan_curve(np.array(k), curve.a, curve.b))
    return _interp(i, t, k)


def choose_threshold(i: Sequence[float], t: Sequence[float], gamma: float, fit_max_threshold: float = 10.0,
                     fit_min_r2: float = 0.85) -> ThresholdFit:
    """τ from the sweep points (i ascending, reference units). Never raises on degenerate curves."""
    return tau_at_gamma(prepare_curve(i, t, fit_max_threshold, fit_min_r2), gamma)


def gamma_for_tau(curve: SweepCurve, target_tau: float, gammas: np.ndarray) -> float:
    """The smallest γ of the ascending grid `gammas` whose τ reaches `target_tau` (the last one if none does):
    τ(γ) is non-decreasing in γ, so this inverts the knee rule for one subject."""
    lo, hi = 0, len(gammas) - 1
    if tau_at_gamma(curve, float(gammas[hi])).tau < target_tau:
        return float(gammas[hi])
    while lo < hi:  # bisection on the grid
        mid = (lo + hi) // 2
        if tau_at_gamma(curve, float(gammas[mid])).tau >= target_tau:
            hi = mid
        else:
            lo = mid + 1
    return float(gammas[lo])
