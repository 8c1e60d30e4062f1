"""Connected components of a segmentation: the largest one's size, and a mask without the smaller ones.

Healthy scans' false positives at a calibrated threshold are mostly specks (on the demo's phantoms every
component of a healthy head's final mask held ≤ 26 voxels, the lesions 116–221), so a segmentation without the
components below the largest one seen on the healthy validation scans keeps the lesions and loses most healthy
false positives; the size is chosen at calibration (inference.component_filter "healthy_validation",
calibration/components.py) and prediction drops what falls under it (Predictor.segment). Dropping can only lower
a scan's marked voxels, so the healthy rate the voxel calibration promises stays an upper bound. Components are
face-connected (6 neighbours in 3-D, 4 in 2-D)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

COMPONENT_FILTERS = ("off", "healthy_validation")


def check_component_filter(name: str) -> None:
    """Refuse, in one line, an inference.component_filter this code does not know."""
    if name not in COMPONENT_FILTERS:
        raise ValueError(f"unknown inference.component_filter '{name}' ({' | '.join(COMPONENT_FILTERS)})")


def largest_component_voxels(mask: np.ndarray) -> int:
    """Voxels in the largest face-connected component of `mask` (0 for an empty mask)."""
    labels, n = ndimage.label(np.asarray(mask, bool))
    return int(np.bincount(labels.ravel())[1:].max()) if n else 0


def drop_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """`mask` (same dtype) without its face-connected components of fewer than `min_voxels` voxels."""
    mask = np.asarray(mask)
    if min_voxels <= 1 or not mask.any():
        return mask
    labels, _ = ndimage.label(mask.astype(bool))
    keep = np.bincount(labels.ravel()) >= min_voxels
    keep[0] = False
    return np.where(keep[labels], mask, np.zeros((), mask.dtype)).astype(mask.dtype)
