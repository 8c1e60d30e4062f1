"""Attention maps of a trained constrained VAE over a preprocessed volume, slice by slice (configuration 2d).

Each slice along the plan's slice axis that holds brain is cut as in training (`slice_centre`): a window of the
planned slice size centred on the slice's brain bounding box; where that brain is larger than the window, more
windows cover it (overlaps averaged). The encoder alone runs (eval mode; Grad-CAM needs one extra backward to
the attention level). Region = the brain eroded in-plane by the planned block (the authors' 6×6 pixels at their
resolution); anomaly map = the (normalised) attention inside the region, 0 elsewhere."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from itermask_auto.methods.constrained.losses import erode_region, to_unit_range

NORMALISATIONS = ("slice_min_max", "volume_min_max", "none")


def _starts(lo: int, hi: int, size: int) -> List[int]:
    """Window starts along one axis covering the brain extent [lo, hi): one centred window when it fits, else
    windows from lo to hi − size at most size/2 apart."""
    extent = hi - lo
    if extent <= size:
        return [(lo + hi) // 2 - size // 2]
    n = int(np.ceil((extent - size) / (size / 2))) + 1
    return [int(round(v)) for v in np.linspace(lo, hi - size, n)]


def slice_windows(brain_slice: np.ndarray, size: Sequence[int]) -> List[Tuple[int, int]]:
    """Top-left corners (may be negative or past the edge: padded) of the windows of one slice."""
    idx = np.nonzero(brain_slice)
    ys = _starts(int(idx[0].min()), int(idx[0].max()) + 1, int(size[0]))
    xs = _starts(int(idx[1].min()), int(idx[1].max()) + 1, int(size[1]))
    return [(y, x) for y in ys for x in xs]


def _crop(image: np.ndarray, y: int, x: int, size: Sequence[int]) -> np.ndarray:
    """(C, h, w) window of (C, H, W) at (y, x), zero-padded outside (0 = background in the unit range)."""
    out = np.zeros((image.shape[0], int(size[0]), int(size[1])), np.float32)
    H, W = image.shape[1:]
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + size[0], H), min(x + size[1], W)
    if y1 > y0 and x1 > x0:
        out[:, y0 - y:y1 - y, x0 - x:x1 - x] = image[:, y0:y1, x0:x1]
    return out


def attention_volume(network: torch.nn.Module, data: np.ndarray, brain: np.ndarray, slice_axis: int,
                     intensity_range: Sequence[float], batch_size: int, device: torch.device,
                     on_batch: Optional[Callable[[], None]] = None) -> Tuple[np.ndarray, int]:
    """(raw attention (Z, Y, X) float32 — 0 where no window ran —, windows run) of data (C, Z, Y, X)."""
    size = network.slice_size
    unit = to_unit_range(torch.from_numpy(np.ascontiguousarray(data)), intensity_range).numpy()
    unit_s, brain_s = np.moveaxis(unit, slice_axis + 1, 1), np.moveaxis(brain, slice_axis, 0)
    total = np.zeros(brain_s.shape, np.float64)
    count = np.zeros(brain_s.shape, np.float64)
    todo = [(k, y, x) for k in range(brain_s.shape[0]) if brain_s[k].any()
            for (y, x) in slice_windows(brain_s[k], size)]
    for b in range(0, len(todo), max(1, batch_size)):
        chunk = todo[b:b + max(1, batch_size)]
        x = torch.from_numpy(np.stack([_crop(unit_s[:, k], y, xx, size) for k, y, xx in chunk])).to(device)
        with torch.no_grad():
            att = network(x, decode=False).attention.float().cpu().numpy()
        for a, (k, y, xx) in zip(att, chunk):
            H, W = brain_s.shape[1:]
            y0, x0, y1, x1 = max(y, 0), max(xx, 0), min(y + size[0], H), min(xx + size[1], W)
            total[k, y0:y1, x0:x1] += a[y0 - y:y1 - y, x0 - xx:x1 - xx]
            count[k, y0:y1, x0:x1] += 1
        if on_batch is not None:
            on_batch()
    att = np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
    return np.moveaxis(att, 0, slice_axis), len(todo)


def eroded_region(brain: np.ndarray, slice_axis: int, block: Sequence[int]) -> np.ndarray:
    """The brain eroded in-plane, slice by slice (the same min-pool as in training)."""
    brain_s = torch.from_numpy(np.ascontiguousarray(np.moveaxis(brain.astype(bool), slice_axis, 0)))
    return np.moveaxis(erode_region(brain_s, block).numpy(), 0, slice_axis)


def normalise(attention: np.ndarray, region: np.ndarray, slice_axis: int, mode: str) -> np.ndarray:
    """The anomaly map: attention inside the region (0 outside), min-max normalised per slice, per volume or not."""
    if mode not in NORMALISATIONS:
        raise ValueError(f"unknown map_normalisation '{mode}' ({' | '.join(NORMALISATIONS)})")
    out = np.zeros(attention.shape, np.float32)
    if not region.any():
        return out
    if mode == "none":
        out[region] = attention[region]
        return out
    if mode == "volume_min_max":
        a = attention[region]
        out[region] = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
        return out
    att_s, reg_s, out_s = (np.moveaxis(v, slice_axis, 0) for v in (attention, region, out))
    for k in range(att_s.shape[0]):   # the authors: subtract the slice's min in the brain, divide by the max
        if reg_s[k].any():
            a = att_s[k][reg_s[k]]
            out_s[k][reg_s[k]] = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
    return out
