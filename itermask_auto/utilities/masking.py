"""Network input of masked reconstruction: `[x·(1−M) + ε·M, hf]` with ε ~ N(0, 1) inside the mask M.

Shared by training and inference so both build exactly the same input."""
from __future__ import annotations

from typing import Optional

import torch


def masked_network_input(image: torch.Tensor, hf: torch.Tensor, mask: torch.Tensor,
                         generator: Optional[torch.Generator] = None,
                         noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """image, hf: (B, C, *spatial); mask: (B, 1, *spatial) or (B, *spatial), bool or {0,1}; noise: ε (shape of
    image) when the caller draws it (training: each sample from its own seed), else drawn from `generator`.

    Returns (B, 2C, *spatial): masked image channels then high-frequency channels."""
    if mask.dim() == image.dim() - 1:
        mask = mask.unsqueeze(1)
    mask = mask.to(image.dtype)
    if noise is None:
        noise_device = generator.device if generator is not None else image.device
        noise = torch.randn(image.shape, generator=generator, dtype=image.dtype, device=noise_device)
    return torch.cat([image * (1 - mask) + noise.to(image.device, image.dtype) * mask, hf], dim=1)
