"""MMCCD's two networks, both MONAI `DiffusionModelUNet`s built from the method plan's `network` keys:

- forward A → B: the conditional denoiser. Input = concat(x_t in B's space, the condition = A with a stripe of
  noise), output = x̂₀ (B), timestep embedded as usual.
- backward B → A: the same U-Net with its timestep input held at 0. The time embedding of a constant is a set of
  learned per-block biases, so this is the authors' "same U-Net without the time embedding" in function class,
  built from the same blocks and plan keys (no second architecture to size and document).

The authors' U-Net (guided-diffusion): 32 base channels, multipliers (1, 1, 2, 3, 4), 2 residual blocks per level,
one attention head at 32/16/8 px of 128 (downsampling factors 4, 8, 16), resblock up/down-sampling, dropout 0.1.
MONAI's blocks have no dropout; the rest maps one to one (`num_head_channels` = the level's channels = one head)."""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence

import numpy as np
import torch
from torch import nn

REFERENCE_MULTIPLIERS = (1, 1, 2, 3, 4)
ATTENTION_MIN_DOWNSAMPLING = 4     # attention at 32/16/8 px of a 128 px input = downsampling 4, 8 and 16


def network_keys(base_channels: int, levels: int, num_res_blocks: int = 2) -> Dict[str, Any]:
    """Plan keys of the U-Net: channels per level (the authors' multipliers, truncated to `levels`), attention at
    downsampling >= 4, GroupNorm groups dividing every level's channels."""
    channels = [base_channels * m for m in REFERENCE_MULTIPLIERS[:levels]]
    attention = [2 ** level >= ATTENTION_MIN_DOWNSAMPLING for level in range(levels)]
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in channels))
    return {"channels": channels, "attention_levels": attention, "num_res_blocks": int(num_res_blocks),
            "norm_num_groups": groups}


def divisor(network: Dict[str, Any]) -> int:
    """Each in-plane size must be a multiple of this (one 2x down-sampling between levels)."""
    return 2 ** (len(network["channels"]) - 1)


def diffusion_unet(network: Dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.nets import DiffusionModelUNet
    channels = tuple(int(c) for c in network["channels"])
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=channels,
        attention_levels=tuple(bool(a) for a in network["attention_levels"]),
        num_res_blocks=int(network["num_res_blocks"]), norm_num_groups=int(network["norm_num_groups"]),
        num_head_channels=list(channels), resblock_updown=True)


class ConstantTimeUNet(nn.Module):
    """The backward translator: a DiffusionModelUNet called with timestep 0 (see the module doc)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))


def forward_network(network: Dict[str, Any]) -> nn.Module:
    return diffusion_unet(network, in_channels=2, out_channels=1)


def backward_network(network: Dict[str, Any]) -> nn.Module:
    return ConstantTimeUNet(diffusion_unet(network, in_channels=1, out_channels=1))


def gflop_per_evaluation(network: Dict[str, Any], shape: Sequence[int], in_channels: int = 2) -> float:
    """FLOPs (a multiply-add = 2) of one sample through the U-Net at an in-plane `shape`, as torch's
    FlopCounterMode counts them (convolutions, linear layers, attention products; not norms or activations),
    from the block structure of MONAI's DiffusionModelUNet (checked against the counter in tests/test_mmccd.py)."""
    channels = [int(c) for c in network["channels"]]
    attention = [bool(a) for a in network["attention_levels"]]
    blocks, levels = int(network["num_res_blocks"]), len(channels)
    pixels = [float(np.prod([math.ceil(s / 2 ** level) for s in shape])) for level in range(levels)]
    emb = 4 * channels[0]
    total = 2 * (channels[0] * emb + emb * emb)                         # time embedding MLP

    def conv(cin: int, cout: int, n: float, k: int = 3) -> float:
        return 2.0 * k * k * cin * cout * n

    def resnet(cin: int, cout: int, n: float) -> float:               # n: pixels its convolutions run at
        return conv(cin, cout, n) + conv(cout, cout, n) + (conv(cin, cout, n, 1) if cin != cout else 0.0) \
            + 2.0 * emb * cout

    def attend(c: int, n: float) -> float:                            # qkv, q·kᵀ, ·v, output projection
        return 2.0 * n * c * 3 * c + 4.0 * n * n * c + 2.0 * n * c * c

    total += conv(in_channels, channels[0], pixels[0]) + conv(channels[0], 1, pixels[0])
    skips, previous = [channels[0]], channels[0]
    for level, c in enumerate(channels):                                # down
        for _ in range(blocks):
            total += resnet(previous, c, pixels[level]) + (attend(c, pixels[level]) if attention[level] else 0.0)
            previous = c
            skips.append(c)
        if level < levels - 1:
            total += resnet(c, c, pixels[level + 1])
            skips.append(c)
    bottom = pixels[-1]                                                 # middle: resnet, attention, resnet
    total += 2 * resnet(channels[-1], channels[-1], bottom) + attend(channels[-1], bottom)
    for level in reversed(range(levels)):                               # up
        c = channels[level]
        for _ in range(blocks + 1):
            total += resnet(previous + skips.pop(), c, pixels[level])
            total += attend(c, pixels[level]) if attention[level] else 0.0
            previous = c
        if level > 0:
            total += resnet(c, c, pixels[level - 1])
    return total / 1e9


def counted_gflop(network: Dict[str, Any], shape: Sequence[int], in_channels: int = 2) -> float:
    """The same FLOPs counted by torch's FlopCounterMode over one real forward pass (for checks; small shapes)."""
    from torch.utils.flop_counter import FlopCounterMode
    net = diffusion_unet(network, in_channels, 1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, in_channels, *shape), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops() / 1e9
