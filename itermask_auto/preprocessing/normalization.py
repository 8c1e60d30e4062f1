"""Per-channel intensity normalisation inside the brain (statistics from the brain only)."""
from __future__ import annotations

from typing import Dict

import numpy as np

from itermask_auto.experiment_planning.plans import NormalizationPlan


def normalize_channel(image: np.ndarray, brain_mask: np.ndarray, plan: NormalizationPlan) -> tuple[np.ndarray, Dict]:
    """Clip to the brain's percentiles, z-score with the brain's mean/std, set the background to a constant.

    Per case on purpose: scanners and sequences differ in scale, and the anomaly map must not depend on them."""
    if plan.scheme != "zscore_brain":
        raise ValueError(f"unknown normalisation scheme '{plan.scheme}' (known: zscore_brain)")
    brain = image[brain_mask].astype(np.float64)
    lo, hi = np.percentile(brain, plan.clip_percentiles)
    clipped = np.clip(brain, lo, hi)
    mean, std = float(clipped.mean()), float(clipped.std())
    std = std if std > 1e-8 else 1.0
    out = np.full(image.shape, plan.background_value, dtype=np.float32)
    out[brain_mask] = ((clipped - mean) / std).astype(np.float32)
    return out, {"clip_low": float(lo), "clip_high": float(hi), "mean": mean, "std": std}
