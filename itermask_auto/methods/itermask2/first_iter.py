"""IterMask2's first-iteration network: the planned network with the C high-frequency channels as its only input
(instead of 2C) and the C image channels as output. Trained after the masked autoencoder, on the same fold,
data and recipe, in fold_N/first_iter/; plain MSE over the patch, validation = MSE inside the brain."""
from __future__ import annotations

import dataclasses

import torch

from itermask_auto.experiment_planning.plans import ConfigurationPlan

FIRST_ITER = "first_iter"


def first_iter_configuration(config: ConfigurationPlan) -> ConfigurationPlan:
    """The planned configuration with input = the C high-frequency channels (output = the C image channels)."""
    return dataclasses.replace(config, network=dataclasses.replace(
        config.network, input_channels=config.network.output_channels))


class HFOnly(torch.nn.Module):
    """Feeds a first-iteration network (input = the C high-frequency channels) from the usual 2C-channel
    masked input `[masked image, hf]`, so the same sliding windows serve both IterMask2 networks."""

    def __init__(self, network: torch.nn.Module, n_channels: int):
        super().__init__()
        self.network, self.n_channels = network, int(n_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x[:, self.n_channels:])
