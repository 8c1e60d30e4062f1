"""Gaussian-weighted sliding-window reconstruction of a whole volume (nnU-Net style), any number of spatial axes.

The network input `[x·(1−M) + ε·M, hf]` is built once for the whole volume per pass (seeded noise → the
same input gives the same output), then cut into overlapping patches. Windows that hold no voxel of the
`needed` mask are skipped: after compositing (x̂ inside M, x outside) their output would be thrown away.
Voxels covered by no computed window get the input image as their reconstruction."""
from __future__ import annotations

import contextlib
import itertools
import logging
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from itermask_auto.training.schedule import autocast_dtype
from itermask_auto.utilities.masking import masked_network_input

logger = logging.getLogger(__name__)

SIGMA_SCALE = 1.0 / 8  # nnU-Net: sigma of the importance map = patch / 8


@lru_cache(maxsize=8)
def _gaussian_np(patch_size: Tuple[int, ...]) -> np.ndarray:
    impulse = np.zeros(patch_size, dtype=np.float64)
    impulse[tuple(s // 2 for s in patch_size)] = 1
    g = gaussian_filter(impulse, [s * SIGMA_SCALE for s in patch_size], mode="constant", cval=0)
    g = g / g.max()
    g[g == 0] = g[g > 0].min()  # no zero weights: every voxel of a window counts a little
    return g.astype(np.float32)


def gaussian_importance_map(patch_size: Sequence[int]) -> np.ndarray:
    return _gaussian_np(tuple(int(s) for s in patch_size)).copy()


def window_starts(image_size: Sequence[int], patch_size: Sequence[int], step: float) -> List[List[int]]:
    """Start indices per axis, evenly spread so the first window starts at 0 and the last ends at the border."""
    if not 0 < step <= 1:
        raise ValueError(f"tile step size must be in (0, 1], got {step}")
    starts = []
    for size, patch in zip(image_size, patch_size):
        if size < patch:
            raise ValueError(f"image size {tuple(image_size)} smaller than patch {tuple(patch_size)}: pad first")
        n = int(np.ceil((size - patch) / (patch * step))) + 1
        span = size - patch
        starts.append([int(np.round(span * k / (n - 1))) if n > 1 else 0 for k in range(n)])
    return starts


def autocast_context(device: torch.device, amp: str):
    """amp: 'fp32' | 'bf16' | 'fp16' | 'auto', with training's rule (training.schedule.autocast_dtype): 'auto' is
    bf16 on CPUs with native bf16 (AVX512-BF16/AMX; emulated bf16 is slower than fp32), bf16/fp16 on CUDA."""
    dtype = autocast_dtype(device, amp)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def _pad_to(array: torch.Tensor, patch_size: Sequence[int], values: Sequence[float]) -> Tuple[torch.Tensor, list]:
    """Pad the trailing spatial axes of (C, *spatial) symmetrically up to the patch; per-channel constant."""
    spatial = array.shape[1:]
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(spatial, patch_size)]
    if not any(a or b for a, b in pads):
        return array, pads
    out = torch.empty((array.shape[0],) + tuple(s + a + b for s, (a, b) in zip(spatial, pads)),
                      dtype=array.dtype, device=array.device)
    for c, v in enumerate(values):
        out[c] = v
    out[(slice(None),) + tuple(slice(a, a + s) for s, (a, _) in zip(spatial, pads))] = array
    return out, pads


def _as_tensor(a, dtype=torch.float32) -> torch.Tensor:
    return a.to(dtype) if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


@torch.inference_mode()
def reconstruct_volume(network: torch.nn.Module, image, hf, mask, patch_size: Sequence[int], step: float = 0.5,
                       batch_size: int = 1, device: str | torch.device = "cpu", amp: str = "auto",
                       generator: Optional[torch.Generator] = None, needed=None) -> Tuple[np.ndarray, int]:
    """Reconstruct `image` (C, *spatial) with the mask `mask` (*spatial, bool) filled with noise.

    hf: (C, *spatial). needed: voxels whose reconstruction is wanted (default: the mask itself).
    Returns (reconstruction (C, *spatial) float32, number of windows run)."""
    device = torch.device(device)
    image_t, hf_t = _as_tensor(image), _as_tensor(hf)
    mask_t = _as_tensor(mask, torch.bool)
    needed_t = mask_t if needed is None else _as_tensor(needed, torch.bool)
    n_ch, spatial = image_t.shape[0], tuple(image_t.shape[1:])
    patch_size = tuple(int(p) for p in patch_size)
    if len(patch_size) != len(spatial) or hf_t.shape != image_t.shape or tuple(mask_t.shape) != spatial:
        raise ValueError(f"shapes: image {tuple(image_t.shape)}, hf {tuple(hf_t.shape)}, mask "
                         f"{tuple(mask_t.shape)}, patch {patch_size}")

    net_in = masked_network_input(image_t[None], hf_t[None], mask_t[None], generator)[0]
    pad_values = [float(image_t[c].min()) for c in range(n_ch)] + [0.0] * hf_t.shape[0]
    net_in, pads = _pad_to(net_in, patch_size, pad_values)
    needed_p, _ = _pad_to(needed_t[None].float(), patch_size, [0.0])
    padded = tuple(net_in.shape[1:])

    slicers = [tuple(slice(s, s + p) for s, p in zip(starts, patch_size))
               for starts in itertools.product(*window_starts(padded, patch_size, step))]
    slicers = [sl for sl in slicers if bool(needed_p[(0,) + sl].any())]
    recon = torch.zeros((n_ch,) + padded, dtype=torch.float32, device=device)
    weight = torch.zeros(padded, dtype=torch.float32, device=device)
    gauss = torch.from_numpy(_gaussian_np(patch_size)).to(device)
    ctx = autocast_context(device, amp)
    for b in range(0, len(slicers), batch_size):
        batch_sl = slicers[b:b + batch_size]
        x = torch.stack([net_in[(slice(None),) + sl] for sl in batch_sl]).to(device, non_blocking=True)
        with ctx:
            pred = network(x)
        pred = pred.float()
        for k, sl in enumerate(batch_sl):
            recon[(slice(None),) + sl] += pred[k, :n_ch] * gauss
            weight[sl] += gauss

    unpad = tuple(slice(a, a + s) for s, (a, _) in zip(spatial, pads))
    recon, weight = recon[(slice(None),) + unpad].cpu(), weight[unpad].cpu()
    covered = weight > 0
    out = image_t.clone()
    out[:, covered] = recon[:, covered] / weight[covered]
    return out.numpy(), len(slicers)
