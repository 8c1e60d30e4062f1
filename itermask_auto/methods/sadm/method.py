"""SADM (Behrendt et al., MIDL 2024): diffusion pseudo-healthy reconstruction + a Siamese U-Net trained on
synthetic anomalies. Two 2-D stages on whole-brain slices (patch_centre "slice_centre"):
1. "diffusion" (fold_N/): MONAI DiffusionModelUNet + DDPMScheduler (cosine), predicts x₀, L1, simplex noise;
2. "delineation" (fold_N/delineation/, stage 1 frozen): the Siamese U-Net on (x, x − x̂), BCE, on DRAEM noise
   blends and the project's lesion-shaped changes made on the healthy training slices; with `--labelled` also on a
   small labelled dataset (weak supervision).
Inference: one-step reconstructions ensembled over t ∈ {250, 500, 750}; anomaly map = stage-2 probability, the
1 − SSIM residual map or their sum (plan `anomaly_map`; "auto": the one whose healthy threshold transfers best to a
left-out healthy validation scan, chosen at calibration); thresholds from the engine's healthy calibration."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

import torch

from itermask_auto.inference.result import InferenceResult
from itermask_auto.methods.base import Method, Stage, StepContext
from itermask_auto.methods.sadm.anomalies import KINDS
from itermask_auto.methods.sadm.inference import AUTO, MAP_CHOICES, chosen_map, sadm_infer, sadm_result
from itermask_auto.methods.sadm.map_choice import calibrate_map_choice
from itermask_auto.methods.sadm.networks import SiameseUNet, build_diffusion_unet
from itermask_auto.methods.sadm.plan import default_plan, measured_cpu_recipes, stage_recipe
from itermask_auto.methods.sadm.training import delineation_inputs, delineation_loss, diffusion_step

logger = logging.getLogger(__name__)

DIFFUSION, DELINEATION = "diffusion", "delineation"


class SADM(Method):
    name = "sadm"
    description = ("SADM: diffusion pseudo-healthy reconstruction (x0, simplex noise, t-ensemble) + a Siamese "
                   "U-Net trained on synthetic anomalies (Behrendt et al. 2024); 2d")
    configurations = ("2d",)
    accepts_labelled = True

    def default_plan(self, plans) -> Dict[str, Any]:
        return default_plan(plans)

    def epochs_for_machine(self, planned, plans, iteration_seconds) -> Dict[str, Any]:
        return measured_cpu_recipes(planned, {s.name: iteration_seconds(s, "2d") for s in self.stages(plans, "2d")})

    def check(self, plans, configuration: str) -> None:
        super().check(plans, configuration)
        plan = self.method_plan(plans)
        pools = (2 ** (len(plan["diffusion_channels"]) - 1), 2 ** (len(plan["siamese_features"]) - 1))
        if any(int(s) % p for s in plan["slice_size"] for p in pools):
            raise ValueError(f"sadm slice_size {plan['slice_size']} must be divisible by the networks' pooling "
                             f"(diffusion {pools[0]}, Siamese U-Net {pools[1]})")
        if plan["anomaly_map"] not in MAP_CHOICES:
            raise ValueError(f"sadm anomaly_map '{plan['anomaly_map']}' is not one of {', '.join(MAP_CHOICES)}")
        for key, allowed in (("noise", ("simplex", "gaussian")), ("lesion_sign", ("channel", "both"))):
            if plan[key] not in allowed:
                raise ValueError(f"sadm {key} '{plan[key]}' is not one of {', '.join(allowed)}")
        if set(plan["anomaly_kinds"]) - set(KINDS):
            raise ValueError(f"sadm anomaly_kinds {sorted(plan['anomaly_kinds'])}: known kinds are {', '.join(KINDS)}")

    def stages(self, plans, configuration: str) -> List[Stage]:
        plan = self.method_plan(plans)
        return [Stage(DIFFUSION, patch_centre="slice_centre", recipe=stage_recipe(plan, DIFFUSION),
                      batch_size=int(plan["diffusion_batch"]), validation_label="brain L1 of x0"),
                Stage(DELINEATION, folder=DELINEATION, patch_centre="slice_centre", uses=(DIFFUSION,),
                      recipe=stage_recipe(plan, DELINEATION), batch_size=int(plan["delineation_batch"]),
                      validation_label="synthetic-anomaly BCE")]

    def build_network(self, stage: Stage, plans, configuration: str) -> torch.nn.Module:
        plan = self.method_plan(plans)
        if stage.name == DIFFUSION:
            return build_diffusion_unet(plan, plans.num_channels)
        return SiameseUNet(plans.num_channels, plan["siamese_features"], int(plan["siamese_norm_groups"]))

    def loss(self, stage: Stage, network, batch: Dict[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        plan = self.method_plan(ctx.plans)
        if stage.name == DIFFUSION:
            prediction, x0, _ = diffusion_step(network, batch, ctx, plan)
            return (prediction - x0).abs().mean()
        x_a, residual, target, _ = delineation_inputs(batch, ctx, plan, ctx.frozen[DIFFUSION])
        with ctx.autocast():
            logits = network(x_a, residual)
        return delineation_loss(logits, target, float(plan["dice_weight"]))

    def validation_error(self, stage: Stage, network, batch, ctx: StepContext) -> Tuple[float, float]:
        if stage.name == DIFFUSION:
            prediction, x0, brain = diffusion_step(network, batch, ctx, self.method_plan(ctx.plans))
            err = (prediction - x0).abs().mean(1)
            return float(err[brain].sum()), float(brain.sum())
        return float(self.loss(stage, network, batch, ctx).detach()), 1.0

    def infer(self, predictor, data, hf, brain, keep_masks: bool = False) -> InferenceResult:
        for stage in (DIFFUSION, DELINEATION):
            if stage not in predictor.networks:
                raise ValueError(f"method sadm needs its '{stage}' network (load with from_model_folder)")
        return sadm_infer(predictor, self.method_plan(predictor.plans), data, brain)

    def calibrate(self, predictor, context) -> Dict[str, Any]:
        plan = self.method_plan(predictor.plans)
        if plan["anomaly_map"] == AUTO:
            return calibrate_map_choice(predictor, plan, context)
        return {"anomaly_map": plan["anomaly_map"]}   # recorded: prediction refuses a plan that names another map

    def check_calibration(self, plans, calibration) -> None:
        chosen = chosen_map(self.method_plan(plans), calibration)   # a threshold made for another map is refused
        if calibration is not None and "anomaly_map" not in calibration:   # written before the key was recorded
            logger.warning("this sadm fold's calibration.json does not record the map its thresholds were made "
                           "for (an earlier version calibrated it); they are read as '%s' thresholds: recalibrate "
                           "(itermask_train ... -m sadm --calibrate_only) to be sure", chosen)

    def calibration_infer(self, predictor, case, data, hf, brain, context) -> InferenceResult:
        if case in context.state:   # the maps `calibrate` inferred for the map choice, under the chosen map
            maps, brain_slices = context.state.pop(case)
            return sadm_result(maps, brain_slices, self.method_plan(predictor.plans), brain, predictor.calibration)
        return self.infer(predictor, data, hf, brain)

    def training_data_note(self, plans, configuration: str) -> Dict[str, Any]:
        plan = self.method_plan(plans)
        kinds = {k: w for k, w in plan["anomaly_kinds"].items() if w > 0}
        sources = ["opensimplex noise fields (seeded bank, DRAEM-style masks and sources)"]
        if "lesion_blobs" in kinds:
            sources.append("generated blobs (evaluation/synthetic_lesions.blob_lesions) with the project's lesion "
                           "intensity rule")
        return {"synthetic_anomalies": {
            "stage": DELINEATION, "kinds": kinds, "p_anomaly": plan["p_anomaly"],
            "made_on": "the fold's healthy training slices (preprocessed arrays)", "draws_from": sources,
            "photometric_augmentation": plan.get("delineation_augmentation") or "none",
            "lesion_masks_read": "none: no lesion mask of any dataset is read to make them"}}
