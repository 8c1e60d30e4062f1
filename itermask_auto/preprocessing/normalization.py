"""Per-channel intensity normalisation inside the brain (statistics from the brain only)."""
from __future__ import annotations

from typing import Dict

import numpy as np

from itermask_auto.experiment_planning.plans import NormalizationPlan


def normalize_channel(image: np.ndarray, brain_mask: np.ndarray, plan: NormalizationPlan) -> tuple[np.ndarray, Dict]:
    """z-score inside the brain with robust statistics; background set to a constant.

    Mean and std come from the brain voxels between the plan's percentiles, so a lesion does not shift them; the
    voxels themselves are only clipped at ±output_clip standard deviations, so lesion contrast survives.
    Per case on purpose: scanners and sequences differ in scale, and the anomaly map must not depend on them."""
    if plan.scheme != "zscore_brain":
        raise ValueError(f"unknown normalisation scheme '{plan.scheme}' (known: zscore_brain)")
    brain = image[brain_mask].astype(np.float64)
    lo, hi = np.percentile(brain, plan.clip_percentiles)
    core = brain[(brain >= lo) & (brain <= hi)]
    mean, std = float(core.mean()), float(core.std())
    std = std if std > 1e-8 else 1.0
    out = np.full(image.shape, plan.background_value, dtype=np.float32)
    out[brain_mask] = np.clip((brain - mean) / std, -plan.output_clip, plan.output_clip).astype(np.float32)
    return out, {"percentile_low": float(lo), "percentile_high": float(hi), "mean": mean, "std": std}
