"""MMCCD (Liang et al. 2023, "Modality cycles with masked conditional diffusion for unsupervised anomaly
segmentation in MRI"): translate sequence A into B with a conditional diffusion model whose condition has a stripe
of A replaced by noise, translate B̂ back into A with a plain U-Net, and mark what fails to come back.

Two stages on healthy 2-D slices (whole slices: patch_centre "slice_centre"):
- "forward" (fold_N/): conditional DDPM A → B, T = 1000 linear betas, x₀ prediction, MSE to B;
- "backward" (fold_N/backward/): U-Net B → A, plain MSE.
Inference (cycle.py): the planned stripe schedule (plan.py) on every brain slice; the map is the squared cycle
error averaged over the masks that covered each pixel, zero outside the brain eroded by 7.5 mm (authors: disk(4)
at 1.875 mm). Segmentation: the engine's rule (map above the threshold calibrated on healthy validation slices)."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from itermask_auto.inference.result import InferenceResult, finish
from itermask_auto.methods.base import Method, Stage, StepContext, per_sample_randn, per_sample_uniform
from itermask_auto.methods.mmccd import networks, plan as mmccd_plan
from itermask_auto.methods.mmccd.cycle import CycleSchedule, cycle_errors
from itermask_auto.methods.mmccd.stripes import eroded_brain, stripe_width_px, training_stripes

logger = logging.getLogger(__name__)

FORWARD, BACKWARD = "forward", "backward"
OUTLIER_SD = 3.0      # without calibration.json: final mask = map > mean + 3 sd of the volume's in-brain map


class MMCCD(Method):
    name = "mmccd"
    description = ("MMCCD: masked-condition diffusion translation A->B, U-Net B->A, anomaly = cycle error "
                   "(needs two sequences)")
    configurations = ("2d",)

    # ---- planning ------------------------------------------------------------------------------------------
    def default_plan(self, plans) -> Dict[str, Any]:
        return mmccd_plan.default_plan(plans)

    def epochs_for_machine(self, planned, plans, iteration_seconds) -> Dict[str, Any]:
        return mmccd_plan.with_measured_epochs(
            planned, {s.name: iteration_seconds(s, "2d") for s in self.stages(plans, "2d")})

    def method_plan(self, plans) -> Dict[str, Any]:
        """Defaults (re-derived with the stored time budget, so deleting stripe_positions/ddim_steps from the plan
        file re-plans them for an edited budget), overridden by what the plan file holds."""
        stored = plans.method_plans.get(self.name) or {}
        defaults = mmccd_plan.default_plan(plans, stored.get("time_budget_s_per_volume"))
        return mmccd_plan.with_schedule_figures({**defaults, **stored})

    def check(self, plans, configuration: str) -> None:
        super().check(plans, configuration)
        planned = self.method_plan(plans)
        if not planned.get("usable", True):
            raise ValueError(planned["reason"])
        mmccd_plan.channel_indices(plans, planned)

    # ---- training ------------------------------------------------------------------------------------------
    def stages(self, plans, configuration: str) -> List[Stage]:
        mp = self.method_plan(plans)
        recipe = {"optimizer": mp["optimizer"], "initial_lr": mp["initial_lr"], "lr_schedule": mp["lr_schedule"],
                  "iterations_per_epoch": mp["iterations_per_epoch"]}
        return [Stage(FORWARD, patch_centre="slice_centre", batch_size=mp["batch_size"],
                      recipe={**recipe, "num_epochs": mp["forward_epochs"]}, validation_label="x0 MSE in the brain"),
                Stage(BACKWARD, folder=BACKWARD, patch_centre="slice_centre", batch_size=mp["batch_size"],
                      recipe={**recipe, "num_epochs": mp["backward_epochs"]}, validation_label="brain MSE")]

    def build_network(self, stage: Stage, plans, configuration: str) -> torch.nn.Module:
        net = self.method_plan(plans)["network"]
        return networks.forward_network(net) if stage.name == FORWARD else networks.backward_network(net)

    def _outputs(self, stage: Stage, network, batch: Dict[str, torch.Tensor],
                 ctx: StepContext) -> Tuple[torch.Tensor, torch.Tensor]:
        """(prediction fp32, target): x̂₀ of B for the forward stage, Â from B for the backward one."""
        from monai.networks.schedulers import DDPMScheduler
        mp = self.method_plan(ctx.plans)
        a_index, b_index = mmccd_plan.channel_indices(ctx.plans, mp)
        image = batch["image"].to(ctx.device, non_blocking=True)
        source, target = image[:, a_index:a_index + 1], image[:, b_index:b_index + 1]
        if stage.name == BACKWARD:
            with ctx.autocast():
                out = network(target)
            return out.float(), source
        seeds, steps = batch["seed"], int(mp["train_timesteps"])
        t = (per_sample_uniform(seeds, ctx.device, salt=1) * steps).long().clamp(max=steps - 1)
        noise = per_sample_randn(seeds, target.shape[1:], ctx.device, salt=2)
        ddpm = DDPMScheduler(num_train_timesteps=steps, schedule=mp["beta_schedule"],
                             prediction_type=mp["prediction_type"], clip_sample=False)
        x_t = ddpm.add_noise(target, noise, t)
        config = ctx.plans.configuration(ctx.configuration)
        widths = stripe_width_px(mp["stripe_width_mm"], self._inplane_spacing(config))
        masks = training_stripes(seeds, image.shape[2:], widths).to(ctx.device)
        band = per_sample_randn(seeds, source.shape[1:], ctx.device, salt=4)
        condition = source * (1 - masks) + band * masks
        with ctx.autocast():
            out = network(torch.cat([x_t, condition], 1), t)
        return out.float(), target

    def loss(self, stage: Stage, network, batch, ctx: StepContext) -> torch.Tensor:
        prediction, target = self._outputs(stage, network, batch, ctx)
        return torch.mean((prediction - target.float()) ** 2)   # authors: MSE over the whole slice

    def validation_error(self, stage: Stage, network, batch, ctx: StepContext) -> Tuple[float, float]:
        prediction, target = self._outputs(stage, network, batch, ctx)
        brain = batch["brain"].to(ctx.device)
        err = ((prediction - target.float()) ** 2)[:, 0]
        return float(err[brain].sum()), float(brain.sum())

    # ---- inference -----------------------------------------------------------------------------------------
    @staticmethod
    def _inplane_spacing(config) -> List[float]:
        return [s for a, s in enumerate(config.spacing) if a != config.slice_axis]

    def schedule(self, plans, mp: Dict[str, Any]) -> CycleSchedule:
        widths = stripe_width_px(mp["stripe_width_mm"], self._inplane_spacing(plans.configuration("2d")))
        return CycleSchedule(int(mp["stripe_positions"]), int(mp["ddim_steps"]), int(mp["mask_batch"]), widths,
                             int(mp["train_timesteps"]))

    def infer(self, predictor, data: np.ndarray, hf: np.ndarray, brain: np.ndarray,
              keep_masks: bool = False) -> InferenceResult:
        for stage in (FORWARD, BACKWARD):
            if stage not in predictor.networks:
                raise ValueError(f"method mmccd needs its '{stage}' network (load with from_model_folder)")
        plans, config = predictor.plans, predictor.config
        mp = self.method_plan(plans)
        a_index, _ = mmccd_plan.channel_indices(plans, mp)
        schedule = self.schedule(plans, mp)
        axis, brain = config.slice_axis, brain.astype(bool)
        source, brains = np.moveaxis(data[a_index], axis, 0), np.moveaxis(brain, axis, 0)
        keep = np.flatnonzero(brains.reshape(brains.shape[0], -1).any(1))
        shape = mmccd_plan.round_up([max(n, p) for n, p in zip(source.shape[1:], config.patch_size)],
                                    networks.divisor(mp["network"]))
        pads = [((s - n) // 2, s - n - (s - n) // 2) for n, s in zip(source.shape[1:], shape)]
        background = float(plans.normalization.background_value)
        src = np.pad(source[keep], [(0, 0)] + pads, constant_values=background).astype(np.float32)
        brn = np.pad(brains[keep], [(0, 0)] + pads, constant_values=False)
        from itermask_auto.inference.sliding_window import autocast_context
        hook = (lambda n: predictor.on_pass(n)) if predictor.on_pass is not None else None
        error, counts = cycle_errors(predictor.networks[FORWARD], predictor.networks[BACKWARD], src, brn, schedule,
                                     predictor.device, lambda: autocast_context(predictor.device, predictor.amp),
                                     hook)
        crop = (slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, source.shape[1:]))
        slices_map = np.zeros(source.shape, np.float32)
        slices_map[keep] = error[crop]
        anomaly = np.moveaxis(slices_map, 0, axis)
        anomaly *= eroded_brain(brain, axis, mp["erosion_radius_mm"], self._inplane_spacing(config))
        return self._result(anomaly, brain, counts, schedule)

    @staticmethod
    def _result(anomaly: np.ndarray, brain: np.ndarray, counts, schedule: CycleSchedule) -> InferenceResult:
        per_slice = counts.per_slice()
        values = anomaly[brain]
        tau = float(values.mean() + OUTLIER_SD * values.std()) if values.size else float("nan")
        result = InferenceResult(anomaly_map=anomaly.astype(np.float32), final_mask=(anomaly > tau) & brain, tau=tau,
                                 procedure="mmccd", passes=max(per_slice.values(), default=0),
                                 windows=int(sum(per_slice.values())))
        result.scores = {"evaluations_per_slice": float(result.passes),
                         "forward_evaluations_per_slice": float(max(counts.forward.values(), default=0)),
                         "backward_evaluations_per_slice": float(max(counts.backward.values(), default=0)),
                         "planned_evaluations_per_slice": float(schedule.evaluations_per_slice),
                         "slices": float(len(per_slice)), "network_calls": float(counts.calls)}
        return finish(result, brain)
