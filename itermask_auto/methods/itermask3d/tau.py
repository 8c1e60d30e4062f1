"""IterMask3D's plan mode "itermask2": one τ for every scan, calibrated on the healthy validation cases.

Two targets (`calibration.itermask2_tau_target`):
- "first_pass_quantile" (plans made before it): the (1 − α) quantile of the healthy whole-brain-masked errors.
  The shrink then unmasks context, the errors fall, and healthy final masks end far below α (IXI fold 0: 0.06 %
  against α = 1 %).
- "final_mask_fraction": the τ whose shrink leaves α of the healthy validation brains masked (pooled voxels), found
  by bracketing, then a safeguarded secant on log fraction against log τ, with one shrink per case per step (6–10
  min per step for 58 IXI scans on 2 cores, hence the secant: a plain bisection runs all 6 steps). The search
  stops once the fraction lies within `FRACTION_TOLERANCE` of α from below. The first pass (whole brain masked)
  does not depend on τ and is run once per case. When calibration scores the fold a second time inside a chosen
  brain-rim margin, the search starts at the τ found without it and brackets by `WARM_START_FACTOR`.

A smaller τ keeps more voxels masked in every pass, so the masked fraction falls as τ grows; the search assumes
this and returns the largest fraction it saw at or under α (a τ at the upper end of its last bracket)."""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, List, Tuple

import numpy as np

logger = logging.getLogger(__name__)

TAU_TARGETS = ("first_pass_quantile", "final_mask_fraction")
MAX_BRACKET_STEPS = 12     # steps up / down by the bracketing factor before the search gives up widening
FRACTION_TOLERANCE = 0.1   # a fraction in [0.9 α, α] is close enough: the search stops there
SAFEGUARD = 0.1            # a secant step lands inside the middle 80 % of the bracket (in log τ), so it always shrinks
# bracketing factor when the search starts from a τ calibrated before on nearly the same maps (a second scoring of
# the fold with a brain-rim margin): the answer is near, so a small step brackets it in one or two evaluations
WARM_START_FACTOR = 1.25


def search_tau(fraction_at: Callable[[float], float], start: float, alpha: float,
               bisection_steps: int = 6, factor: float = 2.0) -> Tuple[float, List[Dict[str, float]]]:
    """τ whose masked fraction `fraction_at(τ)` is at most α and as close to it as the search gets.

    Brackets α by multiplying / dividing τ by `factor` (> 1) from `start`, then narrows the bracket at most
    `bisection_steps` times (a secant on log fraction vs log τ, kept inside the bracket; the geometric midpoint when a
    fraction is 0), stopping early once the fraction is within FRACTION_TOLERANCE of α from below. Returns (τ, every
    evaluation as {"tau", "fraction"} in the order run). When even the largest bracket τ masks more than α, that τ is
    returned (and a warning logged)."""
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"the τ search needs a positive finite start, got {start}")
    if not factor > 1:
        raise ValueError(f"the τ search's bracketing factor must exceed 1, got {factor}")
    table: List[Dict[str, float]] = []

    def evaluate(tau: float) -> float:
        f = float(fraction_at(tau))
        table.append({"tau": tau, "fraction": f})
        return f

    close_enough = (1.0 - FRACTION_TOLERANCE) * alpha
    hi, f_hi, grew = start, evaluate(start), False
    if close_enough <= f_hi <= alpha:          # a warm start may already be the answer
        return hi, table
    f_lo = f_hi
    for _ in range(MAX_BRACKET_STEPS):         # hi must mask at most α
        if f_hi <= alpha:
            break
        f_lo = f_hi
        hi, f_hi, grew = hi * factor, evaluate(hi * factor), True
    if f_hi > alpha:
        logger.warning("tau search: tau %.4g still masks %.3g%% of the healthy brains (alpha %.3g%%)",
                       hi, 100 * f_hi, 100 * alpha)
        return hi, table
    lo = hi / factor                           # after growing: the τ tried before, known to mask more than α (f_lo)
    if not grew:
        for _ in range(MAX_BRACKET_STEPS):     # lo must mask more than α
            f_lo = evaluate(lo)
            if f_lo > alpha:
                break
            hi, f_hi, lo = lo, f_lo, lo / factor
            if f_hi >= close_enough:           # within tolerance while still bracketing: no need for a lower end
                return hi, table
        else:
            return hi, table                   # every τ tried masks at most α: the smallest one is the closest
    target = (1.0 - FRACTION_TOLERANCE / 2) * alpha   # aim inside [0.9 α, α], not at its edge
    previous_side, midpoint_next = None, False
    for _ in range(bisection_steps):
        if f_hi >= close_enough:
            break
        mid = math.sqrt(lo * hi) if midpoint_next else _secant(lo, f_lo, hi, f_hi, target)
        f_mid = evaluate(mid)
        side = f_mid <= alpha                  # True: hi moved
        if side:
            hi, f_hi = mid, f_mid
        else:
            lo, f_lo = mid, f_mid
        # the same end moved twice running: a midpoint next, so the bracket shrinks at least as fast as bisection's
        midpoint_next = side == previous_side and not midpoint_next
        previous_side = side
    return hi, table


def _secant(lo: float, f_lo: float, hi: float, f_hi: float, alpha: float) -> float:
    """The τ where the line through (log lo, log f_lo) and (log hi, log f_hi) reaches log α, kept in the middle of
    the bracket; the geometric midpoint when a fraction is 0 (no logarithm)."""
    a, b = math.log(lo), math.log(hi)
    if f_hi <= 0 or f_lo <= 0 or f_lo == f_hi:
        return math.sqrt(lo * hi)
    x = a + (math.log(alpha) - math.log(f_lo)) * (b - a) / (math.log(f_hi) - math.log(f_lo))
    if not math.isfinite(x):
        return math.sqrt(lo * hi)
    return math.exp(min(max(x, a + SAFEGUARD * (b - a)), b - SAFEGUARD * (b - a)))


def pooled_fraction(masked_and_scored: Dict[str, Tuple[int, int]]) -> float:
    """Pooled masked fraction over cases: Σ masked voxels / Σ scored brain voxels."""
    masked = sum(int(m) for m, _ in masked_and_scored.values())
    scored = sum(int(s) for _, s in masked_and_scored.values())
    return masked / scored if scored else 0.0


def first_pass_quantile(first_errors: List[np.ndarray], alpha: float) -> float:
    """(1 − α) quantile of the pooled healthy whole-brain-masked errors (the other target, and the search's start)."""
    values = np.concatenate([e.ravel() for e in first_errors]) if first_errors else np.zeros(0, np.float32)
    return float(np.quantile(values, 1 - alpha, method="higher")) if values.size else 0.0
