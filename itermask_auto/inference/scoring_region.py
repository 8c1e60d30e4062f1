"""Where anomalies are scored: the brain mask, eroded by the planned (or calibrated) margin in mm.

Healthy scans make most of their large reconstruction errors on the brain's rim (partial volume with CSF and
the mask's own uncertainty); the authors of MMCCD and of the constrained-attention method erode the brain mask
for that reason. The network still sees the rim (it is never masked): only maps, thresholds and
segmentations are restricted."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)


def ball(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Ellipsoidal structuring element of a physical radius on an anisotropic grid."""
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    axes = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return sum(a ** 2 for a in axes) <= radius_mm ** 2 + 1e-9


def erode_brain(brain: np.ndarray, erosion_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """The brain mask eroded by `erosion_mm` (no change for 0); never empties a mask that was not empty."""
    brain = np.asarray(brain, bool)
    if erosion_mm <= 0 or not brain.any():
        return brain
    eroded = ndimage.binary_erosion(brain, structure=ball(erosion_mm, spacing), border_value=0)
    if not eroded.any():
        logger.warning("brain mask too small to erode by %.1f mm: scored whole", erosion_mm)
        return brain
    return eroded


def edge_distance_mm(brain: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) of every brain voxel to the nearest voxel outside the brain (0 outside)."""
    return ndimage.distance_transform_edt(np.asarray(brain, bool), sampling=list(spacing)).astype(np.float32)
