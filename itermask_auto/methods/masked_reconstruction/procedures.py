"""Procedures over a `reconstruct(mask, needed=None) -> recon` callable, shared by the masked-reconstruction
methods (no network needed to test them): the composited squared error, the shrinking mask, and the one-pass
procedures of the ablations (`oneshot`: whole brain masked; `plain`: nothing masked, the autoencoder).

Channel rule: the voxel error is the MEAN over image channels of (x − x̂)², so thresholds keep their scale
whatever the number of channels (channels are normalised alike, z-score in the brain).
For the shrink, each brain voxel keeps its error in the last pass in which it was still masked (the error that
decided its fate), so final mask == {map > τ}; itermask3d exports the readout its plan names
(methods/itermask3d/procedure.py `readout_map`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.inference.result import InferenceResult, finish
from itermask_auto.methods.masked_reconstruction.threshold_fit import choose_threshold

logger = logging.getLogger(__name__)

Reconstruct = Callable[..., np.ndarray]  # (mask (Z,Y,X) bool, needed=None) -> recon (C,Z,Y,X) float32
REFERENCE_SWEEP = np.arange(1, 100, dtype=np.float64)  # reference: i = 1..99 (i = 100 would mask nothing)


def squared_error(image: np.ndarray, recon: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Mean over channels of (x − x̂)² inside `region`, 0 outside (= compositing x̂ inside, x outside)."""
    e = np.mean((image.astype(np.float32) - recon.astype(np.float32)) ** 2, axis=0)
    return np.where(region, e, np.float32(0)).astype(np.float32)


@dataclass
class ShrinkResult:
    mask: np.ndarray
    anomaly_map: np.ndarray
    iterations: int                  # shrink iterations (the first may reuse the sweep's pass)
    passes: int                      # network passes actually run
    masks: List[np.ndarray] = field(default_factory=list)
    first_error: Optional[np.ndarray] = None   # error of the first pass (M = brain)


def shrink(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, tau: float, tolerance: float,
           max_passes: int, first_recon: Optional[np.ndarray] = None, keep_masks: bool = False) -> ShrinkResult:
    """From M = brain: reconstruct, e (composited), M ← {e > τ} ∩ M until |M| changes by < tolerance·|M|."""
    mask = brain.copy()
    amap = np.zeros(brain.shape, np.float32)
    masks, passes, it, first_error = [], 0, 0, None
    for it in range(1, max(1, max_passes) + 1):
        if keep_masks:
            masks.append(mask.copy())
        if it == 1 and first_recon is not None:
            recon = first_recon
        else:
            recon = reconstruct(mask)
            passes += 1
        e = squared_error(image, recon, mask)
        first_error = e if first_error is None else first_error
        amap[mask] = e[mask]
        new = (e > tau) & mask
        change = (mask.sum() - new.sum()) / max(int(mask.sum()), 1)
        mask = new
        if change < tolerance or not mask.any():
            break
    if keep_masks:
        masks.append(mask.copy())
    return ShrinkResult(mask, amap, it, passes, masks, first_error)


def _one_pass(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan, mask: np.ndarray,
              procedure: str, tau: Optional[float]) -> InferenceResult:
    recon = reconstruct(mask, needed=brain)
    amap = squared_error(image, recon, brain)
    fit = None
    if tau is None:  # per-subject knee of the error's own quantile curve: no extra pass
        t = np.quantile(amap[brain], 0.01 * REFERENCE_SWEEP) if brain.any() else np.zeros(0)
        fit = choose_threshold(REFERENCE_SWEEP[:len(t)], t, plan.gamma, plan.fit_max_threshold, plan.fit_min_r2)
        tau = fit.tau
    return finish(InferenceResult(anomaly_map=amap, final_mask=(amap > tau) & brain, tau=float(tau),
                                  procedure=procedure, passes=1, first_error=amap,
                                  fit=fit.to_dict() if fit else None), brain)


def oneshot(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan,
            tau: Optional[float] = None) -> InferenceResult:
    """The whole brain masked, one pass."""
    brain = brain.astype(bool)
    return _one_pass(reconstruct, image, brain, plan, brain, "oneshot", tau)


def plain(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan,
          tau: Optional[float] = None) -> InferenceResult:
    """Nothing masked, one pass (the plain autoencoder)."""
    brain = brain.astype(bool)
    return _one_pass(reconstruct, image, brain, plan, np.zeros_like(brain), "plain", tau)
