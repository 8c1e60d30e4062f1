"""SADM inference on one preprocessed volume, slice by slice along the plan's slice axis.

For every t of the ensemble (250, 500, 750) and every batch of brain slices: noise the model-space slice to t,
predict x̂₀ with the diffusion model (one step), and the anomaly probability with the Siamese U-Net from (x, x − x̂₀).
Reconstructions and probabilities are averaged over t. Maps (0 outside the brain):
- "probability": the averaged stage-2 probability (the map of plans that name none, and below 10 validation scans);
- "ssim": median3D_k(1 − SSIM(x, x̂)) with an 11-px Gaussian window (σ 1) on each slice (MONAI
  compute_ssim_and_cs, data range 1 in model space), 3-D median filter of size 5 (scipy);
- "sum": probability + ssim (the authors' combined map).
The plan's `anomaly_map` picks the one that is calibrated and segmented ("auto": the one calibration chose on the
healthy validation scans, map_choice.py); all three are in `InferenceResult.maps`.
Slices are padded in-plane to a multiple of the networks' divisor (the volume is already cropped to the brain), so
no brain voxel is cut. The noise of slice s at t is seeded by (noise_seed, t, s): a volume's map is reproducible."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs
from scipy import ndimage

from itermask_auto.inference.result import InferenceResult, finish
from itermask_auto.inference.sliding_window import autocast_context
from itermask_auto.methods.sadm.training import noised, to_model_space

MAPS = ("probability", "ssim", "sum")
AUTO = "auto"   # calibration chooses (map_choice.py)
MAP_CHOICES = MAPS + (AUTO,)


def ssim_error(x: torch.Tensor, recon: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """(N, H, W) 1 − SSIM of (N, C, H, W) slices (mean over channels), full size (reflect-padded input)."""
    pad = window // 2
    xp = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    rp = torch.nn.functional.pad(recon, (pad,) * 4, mode="reflect")
    ssim, _ = compute_ssim_and_cs(rp, xp, spatial_dims=2, kernel_size=(window, window), kernel_sigma=(sigma, sigma),
                                  data_range=1.0)
    return 1 - ssim.mean(1)


def _padded(u: np.ndarray, divisor: int) -> Tuple[np.ndarray, Tuple[slice, slice]]:
    """(S, C, A, B) -> padded with 0 (model-space background) up to multiples of `divisor`; the crop back."""
    size = [int(math.ceil(n / divisor) * divisor) for n in u.shape[2:]]
    starts = [(s - n) // 2 for s, n in zip(size, u.shape[2:])]
    out = np.zeros(u.shape[:2] + tuple(size), np.float32)
    crop = tuple(slice(a, a + n) for a, n in zip(starts, u.shape[2:]))
    out[(slice(None), slice(None)) + crop] = u
    return out, crop


def slice_noise_rngs(plan: Dict, t: int, indices) -> list:
    return [np.random.default_rng([int(plan["noise_seed"]), int(t), int(s)]) for s in indices]


@torch.inference_mode()
def ensemble(predictor, plan: Dict, data: np.ndarray, brain: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model-space image (S, C, A, B), reconstruction x̂ (S, C, A, B), probability (S, A, B)), slices first along
    the slice axis, averaged over the ensemble's t; slices without brain keep x̂ = x and probability 0."""
    diffusion, delineation = predictor.networks["diffusion"], predictor.networks["delineation"]
    device = predictor.device
    u = np.moveaxis(to_model_space(data.astype(np.float32), plan), predictor.config.slice_axis + 1, 0)
    todo = np.flatnonzero(np.moveaxis(brain.astype(bool), predictor.config.slice_axis, 0).any(axis=(1, 2)))
    divisor = int(np.lcm(2 ** (len(plan["diffusion_channels"]) - 1), delineation.divisor))
    padded, crop = _padded(u, divisor)
    recon = torch.from_numpy(padded.copy())
    prob = torch.zeros((padded.shape[0],) + padded.shape[2:])
    ts = [int(t) for t in plan["ensemble_t"]]
    batch = max(1, int(plan["inference_batch_slices"]))
    amp = autocast_context(device, predictor.amp)
    for k, t in enumerate(ts):
        for b in range(0, todo.size, batch):
            idx = todo[b:b + batch]
            x = torch.from_numpy(padded[idx]).to(device)
            steps = torch.full((idx.size,), t, dtype=torch.long, device=device)
            with amp:
                x_hat = diffusion(noised(x, steps, slice_noise_rngs(plan, t, idx), plan), steps).float()
                logits = delineation(x, x - x_hat).float()
            recon[idx] = x_hat.cpu() if k == 0 else recon[idx] + x_hat.cpu()
            prob[idx] += torch.sigmoid(logits[:, 0]).cpu()
        if predictor.on_pass is not None:
            predictor.on_pass(k + 1)
    recon[todo] /= len(ts)
    prob /= len(ts)
    cut = (slice(None), slice(None)) + crop
    return u, recon.numpy()[cut], prob.numpy()[(slice(None),) + crop]


def sadm_maps(predictor, plan: Dict, data: np.ndarray, brain: np.ndarray) -> Tuple[Dict[str, np.ndarray], int]:
    """({"probability", "ssim", "sum"}: volumes, 0 outside the brain; the number of brain slices inferred)."""
    axis = predictor.config.slice_axis
    brain = brain.astype(bool)
    u, recon, prob = ensemble(predictor, plan, data, brain)
    ssim = np.zeros_like(prob)
    todo = np.flatnonzero(np.moveaxis(brain, axis, 0).any(axis=(1, 2)))
    batch = max(1, int(plan["inference_batch_slices"]))
    for b in range(0, todo.size, batch):
        idx = todo[b:b + batch]
        ssim[idx] = ssim_error(torch.from_numpy(u[idx]), torch.from_numpy(recon[idx]), int(plan["ssim_window"]),
                               float(plan["ssim_sigma"])).numpy()
    maps = {}
    for name, values in (("probability", prob), ("ssim", ssim)):
        volume = np.moveaxis(values, 0, axis).astype(np.float32)
        if name == "ssim" and int(plan["median_filter"]) > 1:
            volume = ndimage.median_filter(volume, size=int(plan["median_filter"]))
        volume[~brain] = 0
        maps[name] = volume
    maps["sum"] = maps["probability"] + maps["ssim"]
    return maps, int(todo.size)


def chosen_map(plan: Dict, calibration: Optional[Dict]) -> str:
    """The map that is calibrated and segmented: the plan's, or with "auto" the one calibration chose (probability
    before calibration). A fold calibrated for another map than the plan now names is refused: its threshold
    belongs to that map."""
    choice, calibrated = plan["anomaly_map"], (calibration or {}).get("anomaly_map")
    if choice == AUTO:
        choice = calibrated or "probability"
    elif calibrated is not None and calibrated != choice:
        raise ValueError(f"this sadm fold was calibrated for anomaly_map '{calibrated}' but its plan now says "
                         f"'{choice}': recalibrate it (itermask_train ... -m sadm --calibrate_only)")
    if choice not in MAPS:
        raise ValueError(f"unknown sadm anomaly_map '{choice}' ({' | '.join(MAP_CHOICES)})")
    return choice


def sadm_result(maps: Dict[str, np.ndarray], brain_slices: int, plan: Dict, brain: np.ndarray,
                calibration: Optional[Dict]) -> InferenceResult:
    """The InferenceResult of a volume's maps under the plan's (or calibration's) map and threshold."""
    brain = brain.astype(bool)
    choice = chosen_map(plan, calibration)
    threshold = (calibration or {}).get("voxel_threshold")
    if threshold is None:   # uncalibrated: the stage-2 decision itself
        final, tau = (maps["probability"] > 0.5) & brain, 0.5
    else:
        final, tau = (maps[choice] > threshold) & brain, float(threshold)
    ts = [int(t) for t in plan["ensemble_t"]]
    return finish(InferenceResult(
        anomaly_map=maps[choice], final_mask=final, tau=tau, procedure="sadm", passes=2 * len(ts),
        windows=brain_slices * len(ts), maps=maps,
        fit={"method": "sadm", "anomaly_map": choice, "ensemble_t": ts, "calibrated": threshold is not None}),
        brain)


def sadm_infer(predictor, plan: Dict, data: np.ndarray, brain: np.ndarray) -> InferenceResult:
    maps, brain_slices = sadm_maps(predictor, plan, data, brain)
    return sadm_result(maps, brain_slices, plan, brain, predictor.calibration)
