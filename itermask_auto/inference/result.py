"""What every method's inference returns, and the volume scores the engine calibrates detection on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

TOP_FRACTION = 0.01


@dataclass
class InferenceResult:
    anomaly_map: np.ndarray          # (Z,Y,X) float32, 0 outside the brain; per volume, never normalised across volumes
    final_mask: np.ndarray           # (Z,Y,X) bool: the procedure's own segmentation (e.g. {map > τ})
    tau: float                       # the threshold behind final_mask (nan where the method has none)
    procedure: str
    passes: int                      # network passes in total
    windows: int = 0                 # network windows (sliding-window tiles or slices) run in total
    first_error: Optional[np.ndarray] = None   # error of the first pass (IterMask: whole brain masked)
    fit: Optional[Dict[str, Any]] = None
    sweep_i: List[float] = field(default_factory=list)
    sweep_t: List[float] = field(default_factory=list)
    shrink_iterations: int = 0
    masks: List[np.ndarray] = field(default_factory=list)
    scores: Dict[str, float] = field(default_factory=dict)
    maps: Dict[str, np.ndarray] = field(default_factory=dict)   # other maps a method offers (e.g. sadm's SSIM map)


def volume_scores(anomaly_map: np.ndarray, final_mask: np.ndarray, brain: np.ndarray) -> Dict[str, float]:
    """"top1_mean": mean of the top 1 % of the map in the brain (continuous, defined for every method; the final
    mask fraction is 0 for most healthy scans, so it ties); "mask_fraction": final mask / brain."""
    values = anomaly_map[brain]
    n_top = max(1, int(round(TOP_FRACTION * values.size)))
    top = float(np.mean(np.partition(values, values.size - n_top)[-n_top:])) if values.size else 0.0
    return {"top1_mean": top, "mask_fraction": float(final_mask.sum() / max(int(brain.sum()), 1))}


def finish(result: InferenceResult, brain: np.ndarray) -> InferenceResult:
    """Add the standard volume scores (keeping any the method set itself)."""
    result.scores = {**volume_scores(result.anomaly_map, result.final_mask, brain), **result.scores}
    return result
