"""Resample arrays between spacings (skimage resize; in-plane only on strongly anisotropic data)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from skimage.transform import resize

ANISOTROPY_THRESHOLD = 3.0


def target_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> list[int]:
    return [max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing)]


def anisotropic_axis(spacing: Sequence[float]) -> Optional[int]:
    """The low-resolution axis when max/min spacing exceeds the threshold (nnU-Net's rule), else None."""
    spacing = np.asarray(spacing, dtype=float)
    return int(np.argmax(spacing)) if spacing.max() / spacing.min() > ANISOTROPY_THRESHOLD else None


def resample(array: np.ndarray, new_shape: Sequence[int], order: int, lowres_axis: Optional[int] = None) -> np.ndarray:
    """Resize the spatial axes of a (Z, Y, X) array to new_shape. order 0 = nearest (masks), 1 linear, 3 cubic.

    With `lowres_axis`, slices are resized in-plane with `order` and the low-resolution axis with nearest
    neighbour, so that thick slices are not blurred into each other."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(array.shape) == new_shape:
        return array.copy()
    dtype = np.float32 if order > 0 else array.dtype
    kwargs = dict(mode="edge", anti_aliasing=False, preserve_range=True)
    if lowres_axis is None or array.shape[lowres_axis] == new_shape[lowres_axis] and order == 0:
        return resize(array.astype(np.float32), new_shape, order=order, **kwargs).astype(dtype)
    moved = np.moveaxis(array.astype(np.float32), lowres_axis, 0)
    inplane = tuple(n for i, n in enumerate(new_shape) if i != lowres_axis)
    slices = np.stack([resize(s, inplane, order=order, **kwargs) for s in moved])
    full = resize(slices, (new_shape[lowres_axis],) + inplane, order=0, **kwargs)
    return np.moveaxis(full, 0, lowres_axis).astype(dtype)
