"""The reconstruction network: a dynamic-network-architectures PlainConvUNet built from the plan.

Input = image channels + one high-frequency channel per image channel (2C), output = the C image channels.
3d or 2d convolutions follow `len(config.patch_size)`; no deep supervision (one full-resolution output)."""
from __future__ import annotations

import logging

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from itermask_auto.experiment_planning.plans import ConfigurationPlan

logger = logging.getLogger(__name__)

_NORMS = {("instance", 3): nn.InstanceNorm3d, ("instance", 2): nn.InstanceNorm2d,
          ("batch", 3): nn.BatchNorm3d, ("batch", 2): nn.BatchNorm2d}


def build_network(config: ConfigurationPlan) -> nn.Module:
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
    network = PlainConvUNet(
        input_channels=net_plan.input_channels,
        n_stages=n_stages,
        features_per_stage=list(net_plan.features_per_stage),
        conv_op=nn.Conv3d if dim == 3 else nn.Conv2d,
        kernel_sizes=[list(k) for k in net_plan.kernel_sizes],
        strides=[list(s) for s in net_plan.strides],
        n_conv_per_stage=net_plan.n_conv_per_stage,
        num_classes=net_plan.output_channels,
        n_conv_per_stage_decoder=net_plan.n_conv_per_stage_decoder,
        conv_bias=True,
        norm_op=_NORMS[(net_plan.norm, dim)],
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=dropout_op,
        dropout_op_kwargs={"p": net_plan.dropout} if dropout_op else None,
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )
    n_params = sum(p.numel() for p in network.parameters())
    logger.debug("built %dd PlainConvUNet with %d stages, %.2f M parameters", dim, n_stages, n_params / 1e6)
    return network


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def unwrap(network: nn.Module) -> nn.Module:
    """The module whose state_dict we save (torch.compile wraps the original in `_orig_mod`)."""
    return getattr(network, "_orig_mod", network)

