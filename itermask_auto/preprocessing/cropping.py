"""Crop to the brain's bounding box (with a margin) and remember where the crop sits."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np


def brain_bbox(brain_mask: np.ndarray, margin_voxels: Sequence[int]) -> List[List[int]]:
    """[[start, stop), ...] per axis around the mask, widened by the margin and clipped to the array."""
    coords = np.nonzero(brain_mask)
    return [[max(0, int(c.min()) - m), min(n, int(c.max()) + 1 + m)]
            for c, m, n in zip(coords, margin_voxels, brain_mask.shape)]


def crop(array: np.ndarray, bbox: Sequence[Sequence[int]]) -> np.ndarray:
    """Crop the last len(bbox) axes."""
    lead = (slice(None),) * (array.ndim - len(bbox))
    return array[lead + tuple(slice(a, b) for a, b in bbox)]


def uncrop(array: np.ndarray, bbox: Sequence[Sequence[int]], full_shape: Tuple[int, ...],
           fill: float = 0) -> np.ndarray:
    out = np.full(tuple(array.shape[:array.ndim - len(bbox)]) + tuple(full_shape), fill, dtype=array.dtype)
    lead = (slice(None),) * (array.ndim - len(bbox))
    out[lead + tuple(slice(a, b) for a, b in bbox)] = array
    return out
