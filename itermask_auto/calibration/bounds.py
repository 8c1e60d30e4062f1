"""Bounds on a NEW healthy scan's false-positive rates, from the healthy validation cases (split conformal
prediction: the validation cases and a new healthy scan are exchangeable when they come from the same source and
are preprocessed the same way — which is why calibration scores the brain-mask source prediction will use)."""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np


def detection_fpr_bound(scores: np.ndarray, threshold: float) -> float:
    """P(a new healthy score > threshold) <= (n + 1 - k) / (n + 1), k = #validation scores <= threshold."""
    scores = np.asarray(scores, np.float64)
    k = int(np.sum(scores <= threshold))
    return (scores.size + 1 - k) / (scores.size + 1)


def conformal_upper(values: np.ndarray, confidence: float) -> Optional[float]:
    """The ceil((n + 1)·confidence)-th smallest value: a new exchangeable value is <= it with probability >=
    `confidence`; None when n is too small to say so."""
    values = np.sort(np.asarray(values, np.float64))
    k = math.ceil((values.size + 1) * confidence)
    return float(values[k - 1]) if 1 <= k <= values.size else None


def healthy_bounds(scores: np.ndarray, detection: float, voxel_fpr_per_case: np.ndarray,
                   confidence: float) -> Dict[str, Optional[float]]:
    """calibration.json keys stating what a new healthy scan should see."""
    return {"detection_fpr_bound": detection_fpr_bound(scores, detection),
            "voxel_fpr_per_case_mean": float(np.mean(voxel_fpr_per_case)) if len(voxel_fpr_per_case) else None,
            "voxel_fpr_bound": conformal_upper(voxel_fpr_per_case, confidence),
            "bound_confidence": confidence,
            "bound_cases": int(len(voxel_fpr_per_case))}
