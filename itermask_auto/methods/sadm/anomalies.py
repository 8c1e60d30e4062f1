"""Stage 2's synthetic anomalies, made on healthy training slices (model space: background 0, brain ~[0, 1]).

Kinds (plan `anomaly_kinds`: {kind: weight}; a kind left out is never drawn):
- "noise_blend" (DRAEM, as Behrendt et al.): mask = a single-scale simplex field (2^a cells across the slice per
  axis, a drawn per axis from `mask_cells`), rotated by U(−90°, 90°), > `mask_threshold`, kept inside the brain;
  source = the same field mapped to [0, 1] through `source_operations` (3) random photometric/affine operations
  (DRAEM's list without the colour ones); x' = x(1 − m) + β·source·m + (1 − β)·x·m, β ~ U(blend_beta);
- "lesion_blobs": the project's lesion-shaped intensity change (evaluation/synthetic_lesions.py): generated
  blobs (`blob_lesions`, an ellipsoid with a noisy boundary, cut through its centre) and its intensity rule
  (`apply_lesion_intensity`: the local mean goes to (1 + c)·W, W = the 90th percentile around the lesion) with
  c's sign from the channel name (T1: darker) or random ("both"). Only GENERATED shapes: the module's
  real-mask placement (`place_components`) reads lesion masks and is never used here.
Nothing here reads a file. `training_data_note` says so in the model folder."""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from itermask_auto.evaluation.synthetic_lesions import (apply_lesion_intensity, blob_lesions, channel_sign,
                                                        component_contrasts)
from itermask_auto.methods.sadm.noise import mask_bank, mask_field

KINDS = ("noise_blend", "lesion_blobs")


def _gamma(x, rng):
    return x ** rng.uniform(0.5, 2.0)


def _brightness(x, rng):
    return x * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30) / 255


def _sharpen(x, rng):
    return x + rng.uniform(0.0, 2.0) * (x - ndimage.gaussian_filter(x, 1.0))


def _solarize(x, rng):
    threshold = rng.uniform(32, 128) / 255
    return np.where(x >= threshold, 1 - x, x) if rng.random() < 0.5 else x


def _posterize(x, rng):
    levels = 2 ** int(rng.integers(1, 9))
    return np.floor(np.clip(x, 0, 1) * (levels - 1) + 0.5) / (levels - 1)


def _invert(x, rng):
    return 1 - x


def _autocontrast(x, rng):
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else x


def _equalize(x, rng):
    ranks = np.argsort(np.argsort(x, axis=None), kind="stable").reshape(x.shape)
    return ranks / max(x.size - 1, 1)


def _rotate(x, rng):
    return ndimage.rotate(x, rng.uniform(-45, 45), reshape=False, order=1, mode="reflect")


SOURCE_OPERATIONS: Tuple[Callable, ...] = (_gamma, _brightness, _sharpen, _solarize, _posterize, _invert,
                                           _autocontrast, _equalize, _rotate)


def noise_blend(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                plan: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """DRAEM-style blend on (C, H, W) model-space `image`; returns (image', mask (H, W) bool)."""
    cells = [float(c) for c in plan["mask_cells"]]
    field = mask_field(image.shape[1:], (cells[int(rng.integers(len(cells)))], cells[int(rng.integers(len(cells)))]),
                       rng.uniform(-90, 90), rng, mask_bank(plan))
    mask = (field > float(plan["mask_threshold"])) & brain
    source = np.clip((field + 1) / 2, 0, 1)
    ops = rng.choice(len(SOURCE_OPERATIONS), size=min(int(plan["source_operations"]), len(SOURCE_OPERATIONS)),
                     replace=False)
    for k in ops:   # each operation maps [0, 1] images to [0, 1]
        source = np.clip(SOURCE_OPERATIONS[int(k)](source, rng), 0, 1)
    source = source.astype(np.float32)
    beta = np.float32(rng.uniform(*plan["blend_beta"]))
    m = mask.astype(np.float32)
    out = image * (1 - m) + beta * source * m + (1 - beta) * image * m
    return out.astype(np.float32), mask


def lesion_blobs(image: np.ndarray, brain: np.ndarray, spacing: Sequence[float], channel_names: Sequence[str],
                 rng: np.random.Generator, plan: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """Generated blobs with the project's intensity rule, on one (C, H, W) slice (as a one-slice volume)."""
    spacing_3d = (float(max(spacing)), *map(float, spacing))     # the blob is cut through its centre
    n = int(rng.integers(plan["lesion_count"][0], plan["lesion_count"][1] + 1))
    label, _ = blob_lesions(brain[None], spacing_3d, rng, n, radius_mm=tuple(plan["lesion_radius_mm"]))
    if not label.any():
        return image, label[0]
    magnitudes = component_contrasts(label, rng, plan["lesion_contrast"])
    n_comp = len(magnitudes)
    out = image.copy()
    for c, name in enumerate(channel_names):
        if plan["lesion_sign"] == "channel":
            signs = np.full(n_comp, channel_sign(name))
        elif plan["lesion_sign"] == "both":
            signs = rng.choice([-1.0, 1.0], size=n_comp)
        else:
            raise ValueError(f"unknown sadm lesion_sign '{plan['lesion_sign']}' (channel | both)")
        changed, _ = apply_lesion_intensity(image[c][None], label, brain[None], spacing_3d, (signs * magnitudes))
        out[c] = changed[0]
    return out, label[0]


def synthetic_anomaly(image: np.ndarray, brain: np.ndarray, spacing: Sequence[float], channel_names: Sequence[str],
                      rng: np.random.Generator, plan: Dict) -> Tuple[np.ndarray, np.ndarray, str]:
    """(image', mask (H, W) bool, kind) for one healthy (C, H, W) slice: with probability p_anomaly one anomaly
    of a kind drawn by `anomaly_kinds`' weights, else the slice unchanged ("none")."""
    kinds: Dict[str, float] = dict(plan["anomaly_kinds"])
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds or sum(kinds.values()) <= 0:
        raise ValueError(f"sadm anomaly_kinds {kinds}: weights > 0 for some of {list(KINDS)}")
    if rng.random() >= float(plan["p_anomaly"]):
        return image, np.zeros(brain.shape, bool), "none"
    names = sorted(kinds)
    weights = np.asarray([kinds[k] for k in names], float)
    kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    if kind == "noise_blend":
        out, mask = noise_blend(image, brain, rng, plan)
    else:
        out, mask = lesion_blobs(image, brain, spacing, channel_names, rng, plan)
    out = np.where(brain[None], out, image).astype(np.float32)     # nothing changes outside the brain
    return out, mask & brain, kind


def synthetic_batch(images: np.ndarray, brains: np.ndarray, spacing: Sequence[float],
                    channel_names: Sequence[str], rngs: Sequence[np.random.Generator],
                    plan: Dict) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Per-sample `synthetic_anomaly` over a (B, C, H, W) batch: (images', masks (B, H, W) bool, kinds)."""
    out, masks, kinds = [], [], []
    for image, brain, rng in zip(images, brains, rngs):
        x, m, k = synthetic_anomaly(image, brain, spacing, channel_names, rng, plan)
        out.append(x)
        masks.append(m)
        kinds.append(k)
    return np.stack(out), np.stack(masks), kinds
