"""IterMask2 (Liang et al., MICCAI 2024): a first-iteration network reconstructs the image from its
high-frequency channels only and chooses the first mask (top 60 % of its error); the masked autoencoder then
shrinks the mask with τ calibrated on healthy validation cases. Two stages: the masked autoencoder (the family's
training) and the first-iteration network (`first_iter.py`, in fold_N/first_iter/)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from itermask_auto.inference.result import InferenceResult
from itermask_auto.methods.base import Stage, StepContext
from itermask_auto.methods.itermask2.calibration import masked_error_tau
from itermask_auto.methods.itermask2.first_iter import FIRST_ITER, HFOnly, first_iter_configuration
from itermask_auto.methods.itermask2.plan import measured_epochs, recipe_key
from itermask_auto.methods.itermask2.procedure import itermask2
from itermask_auto.methods.masked_reconstruction.method import MaskedReconstruction
from itermask_auto.training.network import build_network


class IterMask2(MaskedReconstruction):
    name = "itermask2"
    description = ("IterMask2: first-iteration network on the high-frequency channels, then masked reconstruction "
                   "with a shrinking mask (tau from healthy validation)")
    inference = "itermask2"
    configurations = ("2d", "3d")   # the paper's method is 2-D; the same procedure also runs with 3-D windows

    def epochs_for_machine(self, planned, plans, iteration_seconds) -> Dict[str, Any]:
        # both networks share the cpu budget (plan.py); timed without a recipe: the recipe is what is being planned
        return {**planned, **measured_epochs(plans, self.configurations,
                                             lambda c: self._stages(plans, c, {}), iteration_seconds)}

    def stages(self, plans, configuration) -> List[Stage]:
        return self._stages(plans, configuration, self.method_plan(plans).get(recipe_key(configuration)) or {})

    def _stages(self, plans, configuration, recipe) -> List[Stage]:
        reconstruction, = super().stages(plans, configuration)
        return [dataclasses.replace(reconstruction, recipe=dict(recipe)),
                Stage(FIRST_ITER, folder=FIRST_ITER, training_mask="none", validation_label="brain MSE",
                      recipe=dict(recipe))]

    def build_network(self, stage: Stage, plans, configuration) -> torch.nn.Module:
        if stage.name == FIRST_ITER:
            return build_network(first_iter_configuration(plans.configuration(configuration)))
        return super().build_network(stage, plans, configuration)

    def forward(self, stage: Stage, network, batch, ctx: StepContext):
        if stage.name != FIRST_ITER:
            return super().forward(stage, network, batch, ctx)
        image, hf = (batch[k].to(ctx.device, non_blocking=True) for k in ("image", "hf"))
        with ctx.autocast():
            output = network(hf)
        # an empty mask: plain MSE in the loss
        return output.float(), image, torch.zeros_like(batch["mask"], device=ctx.device)

    def infer(self, predictor, data, hf, brain, keep_masks: bool = False) -> InferenceResult:
        if FIRST_ITER not in predictor.networks:
            raise ValueError("method itermask2 needs its first-iteration network (load with from_model_folder)")
        plan = self.effective_plan(predictor)
        rec = self.reconstructor(predictor, data, hf, plan)
        first = self.reconstructor(predictor, data, hf, plan, HFOnly(predictor.networks[FIRST_ITER], data.shape[0]))
        tau = (predictor.calibration or {}).get("itermask2_tau")
        result = itermask2(rec, first, data, brain.astype(bool), plan, tau, keep_masks)
        result.windows = rec.windows + first.windows
        return result

    def segment(self, predictor, result: InferenceResult, brain: np.ndarray) -> Tuple[np.ndarray, str]:
        if predictor.calibration is None:
            return result.final_mask.astype(np.uint8), "per-subject tau final mask (no calibration.json)"
        return result.final_mask.astype(np.uint8), "final mask with calibrated itermask2 tau"

    def calibrate(self, predictor, context) -> Dict[str, Any]:
        return masked_error_tau(self, predictor, context)

    def calibrate_from_healthy_maps(self, first_errors: np.ndarray, alpha: float) -> Dict[str, float]:
        return {}   # its τ is set by `calibrate` (random training masks), not by the first-pass quantile
