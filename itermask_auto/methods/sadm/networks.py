"""SADM's two networks: the diffusion model of stage 1 (MONAI's `DiffusionModelUNet`, with the DDPM noise schedule
of MONAI's `DDPMScheduler`) and the Siamese U-Net of stage 2.

Siamese U-Net (Behrendt et al.'s SegUnet): ONE encoder (depth = len(features); per level two 3x3 convolutions with
GroupNorm and SiLU ("swish"), 2x2 average pooling between levels) is run on the residual (x − x̂) and on the
image x; the two feature maps of every level are concatenated, and a U-Net decoder (2x2 transposed convolutions,
skip = the concatenated features of that level, two convolutions) ends in a 1x1 convolution to one logit per
pixel (anomalous or not, whatever the number of image channels)."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler
from torch import nn


def build_diffusion_unet(plan: Dict[str, Any], channels: int) -> DiffusionModelUNet:
    """The planned stage-1 network: image channels in, x₀ of the same channels out (prediction_type "sample")."""
    widths = list(plan["diffusion_channels"])
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=channels, out_channels=channels, channels=widths,
        num_res_blocks=int(plan["diffusion_res_blocks"]),
        attention_levels=[False] * len(widths),          # attention only in the middle block (as the authors)
        norm_num_groups=int(plan["diffusion_norm_groups"]),
        num_head_channels=int(plan["diffusion_head_channels"]))


def build_scheduler(plan: Dict[str, Any]) -> DDPMScheduler:
    """The planned DDPM schedule. Only `add_noise` is used: reconstruction is one x₀ prediction from x_t."""
    return DDPMScheduler(num_train_timesteps=int(plan["timesteps"]), schedule=plan["schedule"],
                         prediction_type="sample", clip_sample=False)


def _conv_block(in_channels: int, out_channels: int, groups: int) -> nn.Sequential:
    layers = []
    for c_in in (in_channels, out_channels):
        layers += [nn.Conv2d(c_in, out_channels, 3, padding=1),
                   nn.GroupNorm(min(groups, out_channels), out_channels), nn.SiLU(inplace=True)]
    return nn.Sequential(*layers)


class SiameseUNet(nn.Module):
    """forward(image, residual) -> (B, 1, H, W) logits; H and W must be divisible by 2^(depth − 1)."""

    def __init__(self, in_channels: int, features: Sequence[int], norm_groups: int = 8):
        super().__init__()
        features = [int(f) for f in features]
        self.encoder = nn.ModuleList(
            _conv_block(c_in, c_out, norm_groups) for c_in, c_out in zip([in_channels] + features[:-1], features))
        # decoder level i works on the concatenated (2x) features of encoder level i
        self.up = nn.ModuleList(nn.ConvTranspose2d(2 * features[i + 1], 2 * features[i], 2, stride=2)
                                for i in range(len(features) - 1))
        self.decoder = nn.ModuleList(_conv_block(4 * features[i], 2 * features[i], norm_groups)
                                     for i in range(len(features) - 1))
        self.head = nn.Conv2d(2 * features[0], 1, 1)
        self.divisor = 2 ** (len(features) - 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else nn.functional.avg_pool2d(x, 2))
            levels.append(x)
        return levels

    def forward(self, image: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        levels = [torch.cat(pair, dim=1) for pair in zip(self.encode(residual), self.encode(image))]
        z = levels[-1]
        for i in reversed(range(len(self.up))):
            z = self.decoder[i](torch.cat([self.up[i](z), levels[i]], dim=1))
        return self.head(z)
