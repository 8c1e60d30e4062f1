"""IterMask2 (Liang et al., MICCAI 2024) over two reconstruct callables — testable without a network.

1. First iteration: the first_iter network reconstructs the image from its high-frequency channels only;
   e₀ = (x − x̂₀)² (mean over channels). M₁ = the `initial_mask_fraction` (0.6) of brain voxels with the
   highest e₀.
2. Shrink: reconstruct with the masked autoencoder under M, e composited (x̂ inside M, x outside, so e = 0
   outside M), M ← {e > τ} ∩ M; stop when |M| changes by < convergence_tolerance (1 %), the mask is empty, or
   after max_shrink_passes.
τ is the calibrated one (calibration.json `itermask2_tau`: the `itermask2_tau_percentile` (80th) percentile of
the masked error under random training masks on healthy validation cases, `calibration.py`).

Anomaly map: a voxel of M₁ keeps its error from the last pass in which it was still masked (as IterMask3D's
shrink), so the final mask == {map > τ}; a voxel left out of M₁ keeps min(e₀, τ) — ranked by the first
iteration, never above τ (it was never a candidate). The segmentation is the final mask."""
from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.inference.result import InferenceResult, finish
from itermask_auto.methods.masked_reconstruction.procedures import Reconstruct, shrink, squared_error

logger = logging.getLogger(__name__)

FirstIteration = Callable[..., np.ndarray]   # (mask (Z,Y,X) bool, needed=None) -> recon (C,Z,Y,X); mask unused


def initial_mask(first_error: np.ndarray, brain: np.ndarray, fraction: float) -> np.ndarray:
    """The `fraction` of brain voxels with the highest first-iteration error (ties broken by rank: exact count)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"initial_mask_fraction must be in (0, 1], got {fraction}")
    idx = np.flatnonzero(brain)
    n = int(round(fraction * idx.size))
    mask = np.zeros(brain.shape, bool)
    if n > 0:
        order = np.argsort(first_error.ravel()[idx], kind="stable")
        mask.ravel()[idx[order[idx.size - n:]]] = True
    return mask


def itermask2(reconstruct: Reconstruct, first_iteration: FirstIteration, image: np.ndarray, brain: np.ndarray,
              plan: InferencePlan, tau: Optional[float], keep_masks: bool = False) -> InferenceResult:
    brain = brain.astype(bool)
    recon0 = first_iteration(brain, needed=brain)
    e0 = squared_error(image, recon0, brain)
    m1 = initial_mask(e0, brain, plan.initial_mask_fraction)
    passes, calibrated = 1, tau is not None
    if tau is None:
        # no calibration.json: the percentile of this subject's own masked error (weaker; said in the log)
        recon = reconstruct(m1)
        passes += 1
        e1 = squared_error(image, recon, m1)
        tau = float(np.percentile(e1[m1], plan.itermask2_tau_percentile)) if m1.any() else 0.0
        logger.warning("itermask2 without calibration.json: tau = %.4g, the %g-th percentile of this case's own "
                       "masked error", tau, plan.itermask2_tau_percentile)
    sh = shrink(reconstruct, image, m1, float(tau), plan.convergence_tolerance, plan.max_shrink_passes,
                keep_masks=keep_masks)
    amap = np.where(m1, sh.anomaly_map, np.minimum(e0, np.float32(tau))).astype(np.float32)
    amap[~brain] = 0
    masks = ([brain.copy()] + sh.masks) if keep_masks else []
    return finish(InferenceResult(
        anomaly_map=amap, final_mask=sh.mask, tau=float(tau), procedure="itermask2", passes=passes + sh.passes,
        first_error=e0, shrink_iterations=sh.iterations, masks=masks,
        fit={"method": "itermask2", "initial_mask_fraction": plan.initial_mask_fraction,
             "initial_mask_voxels": int(m1.sum()), "calibrated": calibrated}), brain)
