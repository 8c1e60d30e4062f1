"""IterMask3D's knee slope γ from healthy validation sweeps.

Per case: the smallest γ whose knee τ reaches the case's target; γ = the `case_quantile` of those per-case values,
so that most healthy cases end with final masks of about α of the brain. The target ("sweep_quantile") is the
case's own sweep curve read at i = 100·(1 − α): the threshold that leaves a fraction α of the brain above it once
the mask is small, which the knee can reach. Plans made before it used the (1 − α) quantile of the
whole-brain-masked error ("first_pass_quantile"), which lies above every late sweep point: γ then went to the
top of its grid for every case and τ became a fixed per-subject quantile."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.methods.masked_reconstruction.threshold_fit import gamma_for_tau, prepare_curve, value_at

GAMMA_GRID = np.logspace(-4, 3, 141)  # 20 per decade; τ(γ) is a step function, finer grids change nothing
GAMMA_TARGETS = {"first_pass_quantile": "per-case {q:g} quantile of whole-brain-masked error",
                 "sweep_quantile": "per-case sweep curve at the {q:g} quantile (i = 100·(1 − α))"}


def gamma_target(s, brain: np.ndarray, alpha: float, rule: str) -> Dict[str, float]:
    """What a healthy case's τ should reach, from its sweep `s` (procedure.SweepResult): {"target": τ in error
    units} or {"target_i": the sweep index whose threshold, read off the case's own curve, is the target}."""
    if rule == "first_pass_quantile":
        return {"target": float(np.quantile(s.first_error[brain], 1 - alpha))}
    if rule == "sweep_quantile":
        return {"target_i": 100.0 * (1 - alpha)}
    raise ValueError(f"unknown calibration.gamma_target '{rule}' ({' | '.join(GAMMA_TARGETS)})")


def calibrate_gamma(curves: Dict[str, Dict[str, Any]], plan: InferencePlan,
                    case_quantile: float) -> Tuple[float, Dict[str, float]]:
    """curves: {case: {"i": [...], "t": [...], and "target" (τ, in t's units) or "target_i"}} -> (γ, per-case γ)."""
    per_case = {}
    for case, c in sorted(curves.items()):
        curve = prepare_curve(c["i"], c["t"], plan.fit_max_threshold, plan.fit_min_r2)
        target = c["target"] if "target" in c else value_at(curve, c["target_i"])
        per_case[case] = gamma_for_tau(curve, target, GAMMA_GRID)
    return float(np.quantile(list(per_case.values()), case_quantile)), per_case
