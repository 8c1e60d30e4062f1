"""Stripe masks of MMCCD: one band of the condition image A replaced by noise.

Training (authors: start 2·U{0..63} of 128 px, width 16 px, horizontal or vertical at random, one mask per batch):
here every sample draws its own orientation and band centre from its seed, the centre uniform over the patch, so
bands are cut by either border alike. Test: `positions` bands per orientation, centres evenly spread over the
slice's brain extent along that axis (authors: 64 starts every 2 px over the whole 128 px image)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

HORIZONTAL, VERTICAL = 0, 1      # a horizontal band spans whole rows (axis 0 of the slice), a vertical one columns


@dataclass(frozen=True)
class Stripe:
    orientation: int             # HORIZONTAL | VERTICAL
    start: int                   # first row/column of the band (may be < 0: cut by the border)
    width: int                   # pixels


def stripe_width_px(width_mm: float, spacing_inplane: Sequence[float]) -> Tuple[int, int]:
    """Band width in pixels across rows (horizontal bands) and across columns (vertical bands), at least 1."""
    return tuple(max(1, int(round(width_mm / float(s)))) for s in spacing_inplane)   # type: ignore[return-value]


def stripe_mask(stripe: Stripe, shape: Sequence[int]) -> np.ndarray:
    """(H, W) bool: True inside the band."""
    mask = np.zeros(tuple(shape), bool)
    lo, hi = max(stripe.start, 0), max(min(stripe.start + stripe.width, shape[stripe.orientation]), 0)
    if stripe.orientation == HORIZONTAL:
        mask[lo:hi, :] = True
    else:
        mask[:, lo:hi] = True
    return mask


def training_stripes(seeds: torch.Tensor, shape: Sequence[int], widths: Sequence[int],
                     salt: int = 3) -> torch.Tensor:
    """(B, 1, H, W) float {0, 1}: per sample (from its seed) a random orientation and a band centred uniformly in
    the patch."""
    from itermask_auto.methods.base import sample_generators
    masks = []
    for g in sample_generators(seeds, salt):
        orientation = int(torch.randint(2, (1,), generator=g))
        centre = float(torch.rand(1, generator=g)) * shape[orientation]
        width = int(widths[orientation])
        masks.append(stripe_mask(Stripe(orientation, int(np.floor(centre - width / 2)), width), shape))
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def schedule_stripes(brain_slice: np.ndarray, positions: int, widths: Sequence[int]) -> List[Stripe]:
    """2 × `positions` bands for one slice: for each orientation, centres at (k + ½)/positions of the brain's
    extent along that axis, so with positions·width >= extent every brain pixel lies in a band of each orientation."""
    stripes = []
    for orientation in (HORIZONTAL, VERTICAL):
        other = 1 - orientation
        rows = np.flatnonzero(brain_slice.any(axis=other))
        lo, hi = (int(rows.min()), int(rows.max()) + 1) if rows.size else (0, brain_slice.shape[orientation])
        width = int(widths[orientation])
        for k in range(int(positions)):
            centre = lo + (hi - lo) * (k + 0.5) / positions
            stripes.append(Stripe(orientation, int(np.floor(centre - width / 2)), width))
    return stripes


def eroded_brain(brain: np.ndarray, slice_axis: int, radius_mm: float, spacing_inplane: Sequence[float]) -> np.ndarray:
    """The brain mask eroded slice by slice with an in-plane disc of `radius_mm` (authors: disk(4) at 1.875 mm)."""
    ry, rx = (radius_mm / float(s) for s in spacing_inplane)
    ny, nx = int(np.floor(ry)), int(np.floor(rx))
    yy, xx = np.mgrid[-ny:ny + 1, -nx:nx + 1]
    disc = (yy / max(ry, 1e-6)) ** 2 + (xx / max(rx, 1e-6)) ** 2 <= 1.0
    slices = np.moveaxis(brain.astype(bool), slice_axis, 0)
    out = np.stack([ndimage.binary_erosion(s, disc) if s.any() else s for s in slices])
    return np.moveaxis(out, 0, slice_axis)
