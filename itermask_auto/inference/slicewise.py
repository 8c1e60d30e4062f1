"""A 2-D network applied slice by slice to a 3-D volume (configuration `2d`).

The volume (C, Z, Y, X) is cut along the plan's `slice_axis`; each slice is reconstructed with the same
Gaussian-weighted sliding window as in 3-D (`sliding_window.py`), in-plane only. Windows of all slices go
through the network together in batches (a slice is usually one or a few windows), and slices — like windows —
that hold no voxel of `needed` are skipped. The network input `[x·(1−M) + ε·M, hf]` is built once for the
whole volume per pass (seeded noise), exactly as in 3-D, so the two configurations share every convention."""
from __future__ import annotations

import itertools
import logging
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from itermask_auto.inference.sliding_window import (_as_tensor, _gaussian_np, _pad_to, autocast_context,
                                                    window_starts)
from itermask_auto.utilities.masking import masked_network_input

logger = logging.getLogger(__name__)


@torch.inference_mode()
def reconstruct_slicewise(network: torch.nn.Module, image, hf, mask, patch_size: Sequence[int], slice_axis: int,
                          step: float = 0.5, batch_size: int = 1, device: str | torch.device = "cpu",
                          amp: str = "auto", generator: Optional[torch.Generator] = None,
                          needed=None) -> Tuple[np.ndarray, int]:
    """Reconstruct `image` (C, Z, Y, X) with a 2-D network, slices taken along `slice_axis` (0, 1 or 2).

    mask, needed: (Z, Y, X) bool (needed defaults to mask); patch_size: the 2 in-plane axes, in canonical order.
    Returns (reconstruction (C, Z, Y, X) float32 — the input image where nothing was computed —, windows run)."""
    device = torch.device(device)
    image_t, hf_t, mask_t = _as_tensor(image), _as_tensor(hf), _as_tensor(mask, torch.bool)
    needed_t = mask_t if needed is None else _as_tensor(needed, torch.bool)
    if image_t.dim() != 4 or hf_t.shape != image_t.shape or tuple(mask_t.shape) != tuple(image_t.shape[1:]) \
            or tuple(needed_t.shape) != tuple(mask_t.shape) or len(patch_size) != 2 or slice_axis not in (0, 1, 2):
        raise ValueError(f"shapes: image {tuple(image_t.shape)}, hf {tuple(hf_t.shape)}, mask {tuple(mask_t.shape)}, "
                         f"patch {tuple(patch_size)}, slice_axis {slice_axis}")
    n_ch = image_t.shape[0]
    # slices first: (C, S, A, B)
    image_s, hf_s = torch.movedim(image_t, slice_axis + 1, 1), torch.movedim(hf_t, slice_axis + 1, 1)
    mask_s, needed_s = torch.movedim(mask_t, slice_axis, 0), torch.movedim(needed_t, slice_axis, 0)
    n_slices, inplane = image_s.shape[1], tuple(image_s.shape[2:])
    patch = (1,) + tuple(int(p) for p in patch_size)  # no padding along the slice axis

    net_in = masked_network_input(image_s[None], hf_s[None], mask_s[None], generator)[0]
    pad_values = [float(image_t[c].min()) for c in range(n_ch)] + [0.0] * hf_t.shape[0]
    net_in, pads = _pad_to(net_in, patch, pad_values)
    needed_p, _ = _pad_to(needed_s[None].float(), patch, [0.0])
    needed_p = needed_p[0] > 0
    padded = tuple(net_in.shape[2:])

    windows = [tuple(slice(s, s + p) for s, p in zip(starts, patch[1:]))
               for starts in itertools.product(*window_starts(padded, patch[1:], step))]
    todo = [(z, sl) for z in range(n_slices) if bool(needed_p[z].any())
            for sl in windows if bool(needed_p[(z,) + sl].any())]
    recon = torch.zeros((n_ch, n_slices) + padded, dtype=torch.float32, device=device)
    weight = torch.zeros((n_slices,) + padded, dtype=torch.float32, device=device)
    gauss = torch.from_numpy(_gaussian_np(tuple(patch[1:]))).to(device)
    ctx = autocast_context(device, amp)
    for b in range(0, len(todo), max(1, batch_size)):
        batch = todo[b:b + max(1, batch_size)]
        x = torch.stack([net_in[(slice(None), z) + sl] for z, sl in batch]).to(device, non_blocking=True)
        with ctx:
            pred = network(x)
        pred = pred.float()
        for k, (z, sl) in enumerate(batch):
            recon[(slice(None), z) + sl] += pred[k, :n_ch] * gauss
            weight[(z,) + sl] += gauss

    unpad = (slice(None),) + tuple(slice(a, a + s) for s, (a, _) in zip(inplane, pads[1:]))
    recon, weight = recon[(slice(None),) + unpad].cpu(), weight[unpad].cpu()
    covered = weight > 0
    out = image_s.clone()
    out[:, covered] = recon[:, covered] / weight[covered]
    return torch.movedim(out, 1, slice_axis + 1).contiguous().numpy(), len(todo)
