"""IterMask3D's knee slope γ from healthy validation sweeps.

Per case: the smallest γ whose knee τ reaches the case's target (the (1 − α) quantile of its whole-brain-masked
error); γ = the `case_quantile` of those per-case values, so that most healthy cases end with small final masks."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.methods.masked_reconstruction.threshold_fit import gamma_for_tau, prepare_curve

GAMMA_GRID = np.logspace(-4, 3, 141)  # 20 per decade; τ(γ) is a step function, finer grids change nothing


def calibrate_gamma(curves: Dict[str, Dict[str, Any]], plan: InferencePlan,
                    case_quantile: float) -> Tuple[float, Dict[str, float]]:
    """curves: {case: {"i": [...], "t": [...], "target": τ target}} -> (γ, per-case γ)."""
    per_case = {}
    for case, c in sorted(curves.items()):
        curve = prepare_curve(c["i"], c["t"], plan.fit_max_threshold, plan.fit_min_r2)
        per_case[case] = gamma_for_tau(curve, c["target"], GAMMA_GRID)
    return float(np.quantile(list(per_case.values()), case_quantile)), per_case
