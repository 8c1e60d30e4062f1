"""Inference procedures over a `reconstruct(mask, needed=None) -> recon` callable (no network needed to test them).

- itermask3d: sweep (per-subject τ from the t(i) curve) then shrink.
- itermask2 mode: τ from calibration, shrink only (M starts as the whole brain; no first-iteration network in 3d).
- oneshot: whole brain masked, one pass.   - plain: nothing masked, one pass (plain autoencoder).

Channel rule: the voxel error is the MEAN over image channels of (x − x̂)², so thresholds keep their scale
whatever the number of channels (channels are normalised alike, z-score in the brain).
Anomaly map: per volume, never normalised across volumes. For the shrink, each brain voxel keeps its error in
the last pass in which it was still masked (the error that decided its fate), so final mask == {map > τ}.
Volume score (detection): mean of the top 1 % of the map in the brain ("top1_mean"): defined for every
procedure, continuous (the final mask fraction is 0 for most healthy scans, so it ties); the final mask
fraction is reported too."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.inference.threshold_fit import ThresholdFit, choose_threshold

logger = logging.getLogger(__name__)

Reconstruct = Callable[..., np.ndarray]  # (mask (Z,Y,X) bool, needed=None) -> recon (C,Z,Y,X) float32
REFERENCE_SWEEP = np.arange(1, 100, dtype=np.float64)  # reference: i = 1..99 (i = 100 would mask nothing)
TOP_FRACTION = 0.01


def squared_error(image: np.ndarray, recon: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Mean over channels of (x − x̂)² inside `region`, 0 outside (= compositing x̂ inside, x outside)."""
    e = np.mean((image.astype(np.float32) - recon.astype(np.float32)) ** 2, axis=0)
    return np.where(region, e, np.float32(0)).astype(np.float32)


def sweep_schedule(steps: int, max_percent: float = 99.0, spacing: str = "geometric") -> np.ndarray:
    """Sweep indices i (reference units). 'geometric': the masked fraction (100 − i) % shrinks by a constant
    factor per pass, from 99 % to (100 − max_percent) %, so points crowd where t(i) bends (i → 100);
    'uniform': evenly spaced 1..max_percent (steps=99, max=99 is the reference schedule)."""
    if steps < 1:
        raise ValueError("sweep_steps must be >= 1")
    if steps == 1:
        return np.array([float(max_percent)])
    k = np.arange(steps) / (steps - 1)
    if spacing == "uniform":
        return 1.0 + k * (max_percent - 1.0)
    if spacing == "geometric":  # rounded to the reference's integer i (the knee is read at integer i too)
        i = np.round(100.0 - 99.0 * ((100.0 - max_percent) / 99.0) ** k)
        return np.unique(np.clip(i, 1.0, max_percent))
    raise ValueError(f"unknown sweep spacing '{spacing}'")


@dataclass
class SweepResult:
    i: np.ndarray
    t: np.ndarray
    passes: int
    first_recon: np.ndarray          # reconstruction with M = brain (reused by the shrink's first pass)
    first_error: np.ndarray


def sweep(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, i_values: np.ndarray) -> SweepResult:
    """Record t(i): t_i leaves a fraction (1 − 0.01·i) of brain voxels with e > t_i; M = {e > t_i}; repeat.

    The error is composited (0 outside M), so the masks are nested; the pass after the last t is skipped."""
    recon = reconstruct(brain)
    first_recon = recon
    e = squared_error(image, recon, brain)
    first_error = e
    passes, ts = 1, []
    for k, iv in enumerate(i_values):
        ts.append(float(np.quantile(e[brain], 0.01 * iv)))
        if k == len(i_values) - 1:
            break
        mask = (e > ts[-1]) & brain
        if not mask.any():
            logger.info("sweep: mask empty after i=%.1f, stopping early", iv)
            break
        recon = reconstruct(mask)
        passes += 1
        e = squared_error(image, recon, mask)
    return SweepResult(np.asarray(i_values[:len(ts)], np.float64), np.asarray(ts), passes, first_recon, first_error)


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


@dataclass
class InferenceResult:
    anomaly_map: np.ndarray          # (Z,Y,X) float32, 0 outside the brain
    final_mask: np.ndarray           # (Z,Y,X) bool: the procedure's own segmentation ({map > τ})
    tau: float
    procedure: str
    passes: int                      # network passes in total
    first_error: Optional[np.ndarray] = None   # whole-brain-masked error (for calibration of itermask2 mode)
    fit: Optional[Dict[str, Any]] = None
    sweep_i: List[float] = field(default_factory=list)
    sweep_t: List[float] = field(default_factory=list)
    shrink_iterations: int = 0
    masks: List[np.ndarray] = field(default_factory=list)
    scores: Dict[str, float] = field(default_factory=dict)


def volume_scores(anomaly_map: np.ndarray, final_mask: np.ndarray, brain: np.ndarray) -> Dict[str, float]:
    values = anomaly_map[brain]
    n_top = max(1, int(round(TOP_FRACTION * values.size)))
    top = float(np.mean(np.partition(values, values.size - n_top)[-n_top:])) if values.size else 0.0
    return {"top1_mean": top, "mask_fraction": float(final_mask.sum() / max(int(brain.sum()), 1))}


def _finish(res: InferenceResult, brain: np.ndarray) -> InferenceResult:
    res.scores = volume_scores(res.anomaly_map, res.final_mask, brain)
    return res


def itermask3d(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan,
               tau: Optional[float] = None, i_values: Optional[np.ndarray] = None,
               keep_masks: bool = False, sweep_result: Optional[SweepResult] = None) -> InferenceResult:
    """Sweep → τ → shrink; with `tau` given (itermask2 mode / calibrated) the sweep is skipped; with
    `sweep_result` (calibration re-uses its sweeps for a new γ) its passes are not run (nor counted) again."""
    brain = brain.astype(bool)
    fit: Optional[ThresholdFit] = None
    first_recon = None
    sweep_passes, s = 0, None
    if tau is None:
        i_values = sweep_schedule(plan.sweep_steps, plan.sweep_max_percent) if i_values is None else i_values
        s = sweep_result or sweep(reconstruct, image, brain, np.asarray(i_values, np.float64))
        fit = choose_threshold(s.i, s.t, plan.gamma, plan.fit_max_threshold, plan.fit_min_r2)
        tau, first_recon, sweep_passes = fit.tau, s.first_recon, s.passes
    sh = shrink(reconstruct, image, brain, float(tau), plan.convergence_tolerance, plan.max_shrink_passes,
                first_recon=first_recon, keep_masks=keep_masks)
    return _finish(InferenceResult(
        anomaly_map=sh.anomaly_map, final_mask=sh.mask, tau=float(tau),
        procedure="itermask3d" if fit is not None else "itermask2", passes=sweep_passes + sh.passes,
        first_error=sh.first_error, fit=fit.to_dict() if fit else None,
        sweep_i=[float(x) for x in s.i] if s else [], sweep_t=[float(x) for x in s.t] if s else [],
        shrink_iterations=sh.iterations, masks=sh.masks), brain)


def _one_pass(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan, mask: np.ndarray,
              procedure: str, tau: Optional[float]) -> InferenceResult:
    recon = reconstruct(mask, needed=brain)
    amap = squared_error(image, recon, brain)
    fit = None
    if tau is None:  # per-subject knee of the error's own quantile curve: no extra pass
        t = np.quantile(amap[brain], 0.01 * REFERENCE_SWEEP) if brain.any() else np.zeros(0)
        fit = choose_threshold(REFERENCE_SWEEP[:len(t)], t, plan.gamma, plan.fit_max_threshold, plan.fit_min_r2)
        tau = fit.tau
    return _finish(InferenceResult(anomaly_map=amap, final_mask=(amap > tau) & brain, tau=float(tau),
                                   procedure=procedure, passes=1, first_error=amap,
                                   fit=fit.to_dict() if fit else None), brain)


def oneshot(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan,
            tau: Optional[float] = None) -> InferenceResult:
    brain = brain.astype(bool)
    return _one_pass(reconstruct, image, brain, plan, brain, "oneshot", tau)


def plain(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan,
          tau: Optional[float] = None) -> InferenceResult:
    brain = brain.astype(bool)
    return _one_pass(reconstruct, image, brain, plan, np.zeros_like(brain), "plain", tau)


def run_inference(procedure: str, reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray,
                  plan: InferencePlan, calibrated_tau: Optional[float] = None,
                  keep_masks: bool = False) -> InferenceResult:
    """Dispatch on MethodSpec.inference ('iterative' | 'oneshot' | 'plain') and plan.mode."""
    if procedure == "iterative":
        tau = None
        if plan.mode == "itermask2":
            if calibrated_tau is None:
                logger.warning("itermask2 mode needs calibration.json: falling back to the per-subject sweep")
            tau = calibrated_tau
        elif plan.mode != "itermask3d":
            raise ValueError(f"unknown inference mode '{plan.mode}' (itermask3d | itermask2)")
        return itermask3d(reconstruct, image, brain, plan, tau=tau, keep_masks=keep_masks)
    if procedure == "oneshot":
        return oneshot(reconstruct, image, brain, plan)
    if procedure == "plain":
        return plain(reconstruct, image, brain, plan)
    raise ValueError(f"unknown inference procedure '{procedure}' (iterative | oneshot | plain)")
