"""The masked-reconstruction family (IterMask3D, IterMask2 and the ablations `oneshot`, `ae`): one network
reconstructs the image from `[x·(1−M) + ε·M, hf]`, trained on healthy patches with blob masks (or none).

Loss: MSE over the patch in fp32, voxels under the mask counted `training_masks.masked_loss_weight` times.
Validation: MSE inside the training masks on fixed validation batches (comparable across epochs); for methods
without masks, MSE inside the brain."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np
import torch

from itermask_auto.experiment_planning.plans import InferencePlan, Plans
from itermask_auto.methods.base import Method, Stage, StepContext, per_sample_randn
from itermask_auto.methods.masked_reconstruction.reconstruct import reconstructor
from itermask_auto.training.network import build_network
from itermask_auto.utilities.masking import masked_network_input

RECONSTRUCTION = "reconstruction"


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                        masked_weight: float = 1.0) -> torch.Tensor:
    """MSE over the whole patch in fp32; voxels under the mask count `masked_weight` times."""
    err = (output.float() - target.float()) ** 2
    if masked_weight == 1.0:
        return err.mean()
    weight = 1.0 + (masked_weight - 1.0) * mask.unsqueeze(1).float()
    return (err * weight).mean()


class MaskedReconstruction(Method):
    training_mask = "blobs"      # "blobs" (IterMask3D generator) | "none" (plain autoencoder: nothing masked)
    network = "unet"             # "unet" (skip connections) | "autoencoder" (no skips: training/network.py)
    inference = ""               # the inference procedure's name (set by each method)

    def stages(self, plans: Plans, configuration: str) -> List[Stage]:
        label = "masked-region MSE" if self.training_mask != "none" else "brain MSE"
        return [Stage(RECONSTRUCTION, training_mask=self.training_mask, validation_label=label)]

    def build_network(self, stage: Stage, plans: Plans, configuration: str) -> torch.nn.Module:
        return build_network(plans.configuration(configuration), self.network)

    def forward(self, stage: Stage, network: torch.nn.Module, batch: Dict[str, torch.Tensor],
                ctx: StepContext) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output fp32, image, mask): the masked input with each sample's own noise, through the network."""
        image, hf, mask = (batch[k].to(ctx.device, non_blocking=True) for k in ("image", "hf", "mask"))
        noise = per_sample_randn(batch["seed"], image.shape[1:], ctx.device)
        with ctx.autocast():
            output = network(masked_network_input(image, hf, mask, noise=noise))
        return output.float(), image, mask

    def loss(self, stage: Stage, network, batch, ctx: StepContext) -> torch.Tensor:
        output, image, mask = self.forward(stage, network, batch, ctx)
        return reconstruction_loss(output, image, mask, ctx.plans.training_masks.masked_loss_weight)

    def validation_error(self, stage: Stage, network, batch, ctx: StepContext) -> Tuple[float, float]:
        output, image, mask = self.forward(stage, network, batch, ctx)
        region = mask if stage.training_mask != "none" else batch["brain"].to(ctx.device)
        err = ((output - image) ** 2).mean(1)
        return float(err[region].sum()), float(region.sum())

    # ---- inference helpers shared by the family ----------------------------------------------------------
    def effective_plan(self, predictor, inference_plan: InferencePlan | None = None) -> InferencePlan:
        """The inference plan with the calibrated γ applied (gamma_rule "calibrated" and calibration.json has one)."""
        plan = inference_plan or predictor.plans.inference
        gamma = (predictor.calibration or {}).get("gamma")
        if plan.gamma_rule == "calibrated" and gamma is not None:
            plan = dataclasses.replace(plan, gamma=float(gamma))
        elif plan.gamma_rule not in ("calibrated", "fixed"):
            raise ValueError(f"unknown inference.gamma_rule '{plan.gamma_rule}' (calibrated | fixed)")
        return plan

    def reconstructor(self, predictor, data: np.ndarray, hf: np.ndarray, plan: InferencePlan, network=None):
        return reconstructor(predictor, data, hf, plan, network)

    def calibrate_from_healthy_maps(self, first_errors: np.ndarray, alpha: float) -> Dict[str, float]:
        """τ for IterMask3D's plan mode "itermask2": the (1 − α) quantile of the healthy first-pass errors."""
        if first_errors.size == 0:
            return {}
        return {"itermask2_tau": float(np.quantile(first_errors, 1 - alpha, method="higher"))}
