"""Thresholds from healthy data (plain functions): the voxel threshold at a healthy false-positive rate α and the
detection threshold on per-volume scores."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def summarize(values: np.ndarray) -> Dict[str, float]:
    """Quantiles, mean, max and count of a 1-D array ({} when empty)."""
    values = np.asarray(values)
    if values.size == 0:
        return {}
    return {f"q{q}": float(np.quantile(values, q)) for q in SUMMARY_QUANTILES} | \
        {"mean": float(values.mean()), "max": float(values.max()), "n": int(values.size)}


def voxel_threshold(healthy_values: np.ndarray, alpha: float) -> float:
    """The (1 − α) quantile of the pooled healthy map values, taken at an observed value ('higher'), so that the
    fraction of healthy voxels above it is at most α."""
    return float(np.quantile(healthy_values, 1 - alpha, method="higher"))


def leave_one_out_fpr(healthy_values: Sequence[np.ndarray], alpha: float) -> np.ndarray:
    """Each healthy scan's voxel FPR at the α threshold of the OTHER scans' pooled values (`voxel_threshold`): what a
    new healthy scan meets when the threshold is calibrated without it."""
    out = []
    for i, held_out in enumerate(healthy_values):
        others = np.concatenate([v for j, v in enumerate(healthy_values) if j != i])
        out.append(float((np.asarray(held_out) > voxel_threshold(others, alpha)).mean()))
    return np.array(out)


def threshold_transfer_error(fpr: np.ndarray, alpha: float, floor: float = 1e-5) -> float:
    """Mean |log(FPR / α)| over held-out scans: 0 when every scan meets α exactly; a scan with no voxel above the
    threshold counts at `floor`."""
    return float(np.mean(np.abs(np.log(np.maximum(np.asarray(fpr, float), floor) / alpha))))


def detection_threshold(scores: np.ndarray, rule: str, quantile: float) -> float:
    if rule == "max_healthy_score":
        return float(scores.max())
    if rule == "quantile":
        return float(np.quantile(scores, quantile))
    raise ValueError(f"unknown calibration.detection_rule '{rule}' (max_healthy_score | quantile)")
