"""`reconstruct(mask, needed=None)` over one volume with a trained masked-reconstruction network: the engine's
sliding window (3-D) or slice-wise windows (2-D configurations), seeded noise per pass, passes counted."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from itermask_auto.inference.sliding_window import reconstruct_volume
from itermask_auto.inference.slicewise import reconstruct_slicewise

NOISE_SEED = 1234


class NetworkReconstructor:
    """`reconstruct(mask, needed=None)` over one volume; counts passes and windows; seeded noise per pass."""

    def __init__(self, network: torch.nn.Module, data: np.ndarray, hf: np.ndarray, patch_size: Sequence[int],
                 step: float, batch_size: int, device: torch.device, amp: str, seed: int = NOISE_SEED,
                 slice_axis: Optional[int] = None, on_pass: Optional[Callable[[int], None]] = None):
        self.network, self.data, self.hf, self.slice_axis = network, data, hf, slice_axis  # slice_axis: 2d config
        self.patch_size, self.step, self.batch_size = list(patch_size), step, batch_size
        self.device, self.amp, self.seed = device, amp, seed
        self.on_pass = on_pass  # called with the pass count after every network pass (progress display)
        self.passes = 0
        self.windows = 0

    def __call__(self, mask: np.ndarray, needed: Optional[np.ndarray] = None) -> np.ndarray:
        generator = torch.Generator().manual_seed(self.seed + self.passes)
        if self.slice_axis is not None:
            recon, n = reconstruct_slicewise(self.network, self.data, self.hf, mask, self.patch_size, self.slice_axis,
                                             self.step, self.batch_size, self.device, self.amp, generator, needed)
        else:
            recon, n = reconstruct_volume(self.network, self.data, self.hf, mask, self.patch_size, self.step,
                                          self.batch_size, self.device, self.amp, generator, needed=needed)
        self.passes += 1
        self.windows += n
        if self.on_pass is not None:
            self.on_pass(self.passes)
        return recon


def reconstructor(predictor, data: np.ndarray, hf: np.ndarray, plan,
                  network: Optional[torch.nn.Module] = None) -> NetworkReconstructor:
    """A reconstructor of `predictor`'s (or the given) network over one preprocessed volume."""
    config = predictor.config
    slice_axis = config.slice_axis if len(config.patch_size) == 2 and data.ndim == 4 else None
    return NetworkReconstructor(network or predictor.network, data, hf, config.patch_size, plan.tile_step_size,
                                predictor.batch_size, predictor.device, predictor.amp, slice_axis=slice_axis,
                                on_pass=predictor.on_pass)
