"""The reconstruction network, built from the plan: a dynamic-network-architectures PlainConvUNet ("unet"), or the
same encoder and decoder without skip connections ("autoencoder", for the plain-AE baseline `-m ae`).

Input = image channels + one high-frequency channel per image channel (2C), output = the C image channels.
3d or 2d convolutions follow `len(config.patch_size)`; no deep supervision (one full-resolution output).
The autoencoder keeps the stages, features, kernels, strides and convolutions per stage of the U-Net; its decoder
convolutions see F instead of 2F input channels (nothing is concatenated), so it has ~10 % fewer parameters
(IXI CPU plan, features 8-128: 1.23 M vs 1.38 M).
Without skips everything the decoder knows passes through the bottleneck (1/16 of the patch per axis with five
stages), so it cannot copy its input, not even through the high-frequency channel it also receives."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.building_blocks.helper import get_matching_convtransp
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from torch import nn

from itermask_auto.experiment_planning.plans import ConfigurationPlan

logger = logging.getLogger(__name__)


class InstanceNorm3d(nn.InstanceNorm3d):
    """nn.InstanceNorm3d whose fp32 CPU forward runs as group norm with one channel per group: the same statistics
    (per sample and channel, biased variance, eps inside the root) and the same parameters. Instance norm hands
    back the contiguous layout, so every convolution after the first norm ran outside the channels-last layout the
    trainer chose, with two copies per norm; group norm keeps channels-last: the demo plan's fp32 training step
    0.45 -> 0.36 s on 2 cores (AMD EPYC), the IXI plan's 0.39 -> 0.37 s. bf16 (autocast hands the norm bf16) and
    CUDA keep instance norm: ATen's bf16 group norm is slower there (0.51 s against 0.21 s per demo step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5 and x.device.type == "cpu" and x.dtype == torch.float32 and not self.track_running_stats:
            return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
        return super().forward(x)


_NORMS = {("instance", 3): InstanceNorm3d, ("instance", 2): nn.InstanceNorm2d,
          ("batch", 3): nn.BatchNorm3d, ("batch", 2): nn.BatchNorm2d}
ARCHITECTURES = ("unet", "autoencoder")


class PlainConvAutoencoder(nn.Module):
    """PlainConvUNet's encoder and decoder without the skip connections: x -> bottleneck -> reconstruction."""

    def __init__(self, num_classes: int, n_conv_per_stage_decoder: int, **encoder_kwargs):
        super().__init__()
        self.encoder = PlainConvEncoder(**encoder_kwargs, return_skips=False)
        enc = self.encoder
        features, n = list(enc.output_channels), len(enc.output_channels)
        transp = get_matching_convtransp(conv_op=enc.conv_op)
        self.transpconvs = nn.ModuleList(
            transp(features[-s], features[-(s + 1)], enc.strides[-s], enc.strides[-s], bias=enc.conv_bias)
            for s in range(1, n))
        self.stages = nn.ModuleList(
            StackedConvBlocks(n_conv_per_stage_decoder, enc.conv_op, features[-(s + 1)], features[-(s + 1)],
                              enc.kernel_sizes[-(s + 1)], 1, enc.conv_bias, enc.norm_op, enc.norm_op_kwargs,
                              enc.dropout_op, enc.dropout_op_kwargs, enc.nonlin, enc.nonlin_kwargs)
            for s in range(1, n))
        self.output = enc.conv_op(features[0], num_classes, 1, 1, 0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)   # bottleneck only: return_skips=False
        for up, stage in zip(self.transpconvs, self.stages):
            z = stage(up(z))
        return self.output(z)


def build_network(config: ConfigurationPlan, architecture: str = "unet") -> nn.Module:
    """architecture: "unet" (PlainConvUNet) | "autoencoder" (same stages, no skips); see MethodSpec.network."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown network architecture '{architecture}' ({' | '.join(ARCHITECTURES)})")
    net_plan = config.network
    dim = len(config.patch_size)
    if dim not in (2, 3):
        raise ValueError(f"configuration '{config.name}': patch_size must have 2 or 3 entries, got {config.patch_size}")
    if (net_plan.norm, dim) not in _NORMS:
        raise ValueError(f"configuration '{config.name}': unknown norm '{net_plan.norm}' (instance|batch)")
    n_stages = len(net_plan.features_per_stage)
    if len(net_plan.kernel_sizes) != n_stages or len(net_plan.strides) != n_stages:
        raise ValueError(f"configuration '{config.name}': features, kernel_sizes and strides need one entry per "
                         f"stage ({n_stages})")
    dropout_op = (nn.Dropout3d if dim == 3 else nn.Dropout2d) if net_plan.dropout > 0 else None
    common = dict(
        input_channels=net_plan.input_channels,
        n_stages=n_stages,
        features_per_stage=list(net_plan.features_per_stage),
        conv_op=nn.Conv3d if dim == 3 else nn.Conv2d,
        kernel_sizes=[list(k) for k in net_plan.kernel_sizes],
        strides=[list(s) for s in net_plan.strides],
        n_conv_per_stage=net_plan.n_conv_per_stage,
        conv_bias=True,
        norm_op=_NORMS[(net_plan.norm, dim)],
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=dropout_op,
        dropout_op_kwargs={"p": net_plan.dropout} if dropout_op else None,
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
    )
    if architecture == "unet":
        network = PlainConvUNet(**common, num_classes=net_plan.output_channels,
                                n_conv_per_stage_decoder=net_plan.n_conv_per_stage_decoder, deep_supervision=False)
    else:
        network = PlainConvAutoencoder(net_plan.output_channels, net_plan.n_conv_per_stage_decoder, **common)
    n_params = sum(p.numel() for p in network.parameters())
    logger.debug("built %dd %s with %d stages, %.2f M parameters", dim, type(network).__name__, n_stages,
                 n_params / 1e6)
    return network


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def unwrap(network: nn.Module) -> nn.Module:
    """The module whose state_dict we save (torch.compile wraps the original in `_orig_mod`)."""
    return getattr(network, "_orig_mod", network)
