"""IterMask3D's inference over a `reconstruct(mask, needed=None) -> recon` callable (testable without a network):
sweep (per-subject τ from the t(i) curve) then shrink; with a calibrated τ (plan mode "itermask2") the sweep is
skipped and the mask shrinks from the whole brain.

Anomaly map: per volume, never normalised across volumes; final mask == {map > τ} for every readout
(`readout_map`, plan key `inference.map_readout`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.inference.result import InferenceResult, finish
from itermask_auto.methods.masked_reconstruction.threshold_fit import ThresholdFit, choose_threshold
from itermask_auto.methods.masked_reconstruction.procedures import Reconstruct, shrink, squared_error

logger = logging.getLogger(__name__)


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


# unit name -> (the quantile of the first-pass error it is, its name in calibration.json's rule strings)
ERROR_UNITS = {"median_error": (0.5, "median"), "q99_error": (0.99, "99th-percentile"),
               "hf_median_error": (0.5, "median high-pass")}


def highpass_squared_error(image: np.ndarray, recon: np.ndarray, brain: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """(x − x̂)² after removing the residual's local mean (Gaussian σ in voxels, normalised inside the brain), mean
    over channels, 0 outside the brain. The whole-brain-masked pass must guess each head's low-frequency intensity
    (bias field, overall level: the conditioning carries only high frequencies); that guess dominates the plain
    error's median and varies ~3x between healthy heads, while the shrink's later passes recover it from context."""
    from scipy import ndimage
    inside = brain.astype(np.float32)
    weight = np.maximum(ndimage.gaussian_filter(inside, sigma_voxels), 1e-3)
    out = np.zeros(brain.shape, np.float32)
    for x, xh in zip(image.astype(np.float32), recon.astype(np.float32)):
        residual = (x - xh) * inside
        out += (residual - ndimage.gaussian_filter(residual, sigma_voxels) / weight) ** 2
    return np.where(brain, out / max(len(image), 1), np.float32(0)).astype(np.float32)


def error_scale(image: np.ndarray, recon: np.ndarray, brain: np.ndarray, rule: str,
                plan: InferencePlan, key: str = "inference.knee_scale") -> float:
    """A case's unit of error from its whole-brain-masked pass (x̂ = recon), so that a threshold says how many units
    it is, whatever the model's or the scan's overall error level: 1 ("absolute"), the median ("median_error") or
    99th percentile ("q99_error": within one site it scatters about half as much from scan to scan as the median,
    benchmarks/tau_unit_spread.py) of its squared error in the brain, or the median of its high-pass squared error
    ("hf_median_error", `highpass_squared_error` with σ = `plan.unit_highpass_voxels`): the fine-scale error level
    the shrink's final passes work at, without the low-frequency guess that scatters the plain median."""
    if rule == "absolute":
        return 1.0
    if rule not in ERROR_UNITS:
        raise ValueError(f"unknown {key} '{rule}' (absolute | {' | '.join(ERROR_UNITS)})")
    if rule == "hf_median_error":
        values = highpass_squared_error(image, recon, brain, plan.unit_highpass_voxels)[brain]
    else:
        values = squared_error(image, recon, brain)[brain]
    return float(max(np.quantile(values, ERROR_UNITS[rule][0]), 1e-12)) if values.size else 1.0


MAP_READOUTS = ("last_pass", "final_over_first", "final_first_ranked")


def readout_map(last_pass: np.ndarray, first_error: np.ndarray, final_mask: np.ndarray, tau: float,
                readout: str) -> np.ndarray:
    """The exported map from one shrink (`inference.map_readout`); each keeps final mask == {map > τ}.

    "last_pass": each voxel's error in the last pass in which it was still masked. A voxel unmasked in pass k keeps
    pass k's error, just under τ, so below τ the map ranks voxels by when they dropped out rather than by how
    abnormal they looked. "final_over_first": the last pass's error inside the final mask; elsewhere the first
    (whole-brain-masked) pass's error e mapped monotonically below τ, τ·e/(e + τ), which keeps the first pass's
    order there. "final_first_ranked": the final mask on top (τ + e), every voxel in the first pass's order.
    Chosen on lesions drawn into the healthy validation scans (benchmarks/readout_choice.py)."""
    if readout == "last_pass":
        return last_pass
    if readout not in MAP_READOUTS:
        raise ValueError(f"unknown inference.map_readout '{readout}' ({' | '.join(MAP_READOUTS)})")
    first = first_error.astype(np.float32)   # squared errors: >= 0
    below = np.float32(tau) * first / np.maximum(first + np.float32(tau), np.float32(1e-12))
    inside = last_pass if readout == "final_over_first" else np.float32(tau) + first
    return np.where(final_mask, inside, below).astype(np.float32)


def knee_scale(image: np.ndarray, recon: np.ndarray, brain: np.ndarray, plan: InferencePlan) -> float:
    """The unit the knee is read in (`inference.knee_scale`, see `error_scale`)."""
    return error_scale(image, recon, brain, plan.knee_scale, plan)


def itermask3d(reconstruct: Reconstruct, image: np.ndarray, brain: np.ndarray, plan: InferencePlan,
               tau: Optional[float] = None, i_values: Optional[np.ndarray] = None,
               keep_masks: bool = False, sweep_result: Optional[SweepResult] = None) -> InferenceResult:
    """Sweep → τ → shrink; with `tau` given (itermask2 mode / calibrated) the sweep is skipped (and τ is in units
    of `error_scale(image, first pass, plan.tau_scale)`: 1 when the plan says "absolute"); with
    `sweep_result` (calibration re-uses its sweeps for a new γ, or its first pass for a calibrated τ) those passes
    are not run again (but counted: the passes a prediction would run)."""
    brain = brain.astype(bool)
    fit: Optional[ThresholdFit] = None
    first_recon = None
    sweep_passes, s = 0, None
    if tau is None:
        i_values = sweep_schedule(plan.sweep_steps, plan.sweep_max_percent) if i_values is None else i_values
        s = sweep_result or sweep(reconstruct, image, brain, np.asarray(i_values, np.float64))
        scale = knee_scale(image, s.first_recon, brain, plan)
        fit = choose_threshold(s.i, s.t / scale, plan.gamma, plan.fit_max_threshold, plan.fit_min_r2)
        fit.tau, fit.scale = fit.tau * scale, scale
        tau, first_recon, sweep_passes = fit.tau, s.first_recon, s.passes
    else:   # a calibrated τ: the first pass (whole brain masked) starts the shrink
        if sweep_result is not None:
            first_recon, sweep_passes = sweep_result.first_recon, 1
        elif plan.tau_scale != "absolute":   # the τ's unit is read from the first pass: run it here, once
            first_recon, sweep_passes = reconstruct(brain), 1
        if plan.tau_scale != "absolute":
            tau = float(tau) * error_scale(image, first_recon, brain, plan.tau_scale, plan, "inference.tau_scale")
    sh = shrink(reconstruct, image, brain, float(tau), plan.convergence_tolerance, plan.max_shrink_passes,
                first_recon=first_recon, keep_masks=keep_masks)
    return finish(InferenceResult(
        anomaly_map=readout_map(sh.anomaly_map, sh.first_error, sh.mask, float(tau), plan.map_readout),
        final_mask=sh.mask, tau=float(tau),
        procedure="itermask3d" if fit is not None else "itermask2", passes=sweep_passes + sh.passes,
        first_error=sh.first_error, fit=fit.to_dict() if fit else None,
        sweep_i=[float(x) for x in s.i] if s else [], sweep_t=[float(x) for x in s.t] if s else [],
        shrink_iterations=sh.iterations, masks=sh.masks), brain)
