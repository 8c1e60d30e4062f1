"""Constrained unsupervised anomaly segmentation (Silva-Rodríguez, Naranjo, Dolz; MedIA 80:102526, 2022).

A VAE on healthy 2-D slices; its attention (an early encoder level's activations, `network.py`) is pushed to
cover every healthy brain pixel, so that at inference the attention of an anomalous image stands out:
- `constrained`: after a reconstruction-only warm-up, mean σ(attention) over each image's brain ≥ 1 − p, enforced
  with the extended log-barrier ψ_t (the paper's gradCAMCons);
- `constrained_entropy`: the Shannon entropy of softmax(attention over the brain) MAXIMISED (the loss term is
  −w_H·H; the authors' AMCons).
Anomaly map = the attention in the eroded brain, min-max normalised per slice (the authors' inference), read in
the planned polarity (`polarity.py`: high as the authors, low, two-sided, or chosen at calibration on generated
lesions in healthy validation scans); volume score = its standard deviation in that region. Segmentation
(CASE_seg, `final_mask`) = the method's own label-free rule (`label_free.py`: the 99th percentile of the healthy
training maps); the engine's calibrated healthy-validation voxel threshold at α is reported beside it (CASE.json
`voxel_threshold`)."""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from itermask_auto.inference.result import InferenceResult, finish
from itermask_auto.inference.sliding_window import autocast_context
from itermask_auto.methods.base import Method, Stage, StepContext, per_sample_randn
from itermask_auto.methods.constrained import plan as planning
from itermask_auto.methods.constrained.inference import attention_volume, eroded_region, normalise
from itermask_auto.methods.constrained.label_free import label_free_threshold
from itermask_auto.methods.constrained.losses import (entropy_term, erode_region, kl_divergence,
                                                      reconstruction_bce, size_constraint, to_unit_range)
from itermask_auto.methods.constrained.network import ConstrainedVAE
from itermask_auto.methods.constrained.polarity import AUTHORS_POLARITY, choose_polarity, orient

logger = logging.getLogger(__name__)

VAE = "vae"
INFERENCE_SLICES = 16     # slices per encoder batch at inference (small 2-D windows; any batch gives the same maps)


def warmup_epochs(mp: Dict[str, Any], num_epochs: int) -> int:
    """Reconstruction-only epochs: the planned fraction of the epochs actually trained (--epochs included)."""
    return int(round(float(mp["warmup_fraction"]) * int(num_epochs)))


def barrier_t(mp: Dict[str, Any], epoch: int, warmup: int) -> float:
    """t of the log-barrier at a 0-based epoch: t0 · growth^(epochs since the constraint started)."""
    return float(mp["t"]) * float(mp.get("t_growth", 1.0)) ** max(0, epoch - warmup)


def pad_to(x: torch.Tensor, brain: torch.Tensor, size) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centre-pad (B, C, h, w) images with 0 (background in the unit range) and (B, h, w) masks with False."""
    dy, dx = int(size[0]) - x.shape[-2], int(size[1]) - x.shape[-1]
    if dy < 0 or dx < 0:
        raise ValueError(f"training slices {tuple(x.shape[-2:])} are larger than the planned slice size {list(size)}")
    if dy == dx == 0:
        return x, brain
    pad = (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)
    return F.pad(x, pad, value=0.0), F.pad(brain.float(), pad, value=0.0) > 0.5


class ConstrainedAttention(Method):
    name = "constrained"
    description = ("VAE attention maps under an extended log-barrier size constraint, label-free threshold "
                   "(Silva-Rodriguez et al., MedIA 2022)")
    configurations = ("2d",)
    volume_score_name = "attention_std"
    variant = "barrier"

    # ---- planning -------------------------------------------------------------------------------------------
    def default_plan(self, plans) -> Dict[str, Any]:
        return planning.default_plan(plans, self.variant)

    def epochs_for_machine(self, planned, plans, iteration_seconds) -> Dict[str, Any]:
        return planning.with_measured_epochs(planned, self.variant,
                                             iteration_seconds(self.stages(plans, "2d")[0], "2d"))

    def check(self, plans, configuration: str) -> None:
        super().check(plans, configuration)
        mp = self.method_plan(plans)
        patch = plans.configuration(configuration).patch_size
        if any(int(p) > int(s) for p, s in zip(patch, mp["slice_size"])):
            raise ValueError(f"method {self.name}: the 2d patch {list(patch)} is larger than its planned slice_size "
                             f"{mp['slice_size']} (edit method_plans.{self.name}.slice_size)")

    # ---- training -------------------------------------------------------------------------------------------
    def stages(self, plans, configuration: str) -> List[Stage]:
        mp = self.method_plan(plans)
        recipe = {"optimizer": "adam", "initial_lr": float(mp["learning_rate"]), "weight_decay": 0.0,
                  "lr_schedule": "step", "lr_step_fraction": 1.0,   # constant rate, as the authors
                  "num_epochs": int(mp["num_epochs"]), "iterations_per_epoch": int(mp["iterations_per_epoch"])}
        return [Stage(VAE, patch_centre="slice_centre", recipe=recipe, batch_size=int(mp["batch_size"]),
                      validation_label="VAE loss + attention term per slice")]

    def build_network(self, stage: Stage, plans, configuration: str) -> torch.nn.Module:
        mp = self.method_plan(plans)
        return ConstrainedVAE(plans.num_channels, mp["slice_size"], mp["widths"], int(mp["blocks_per_layer"]),
                              int(mp["latent_dim"]), int(mp["attention_level"]), mp["attention"])

    def attention_term(self, attention: torch.Tensor, region: torch.Tensor, mp: Dict[str, Any],
                       epoch: int, warmup: int) -> torch.Tensor:
        return float(mp["constraint_weight"]) * size_constraint(attention, region, float(mp["p"]),
                                                                barrier_t(mp, epoch, warmup))

    def objective(self, network, batch, ctx: StepContext, with_attention: bool) -> torch.Tensor:
        mp = self.method_plan(ctx.plans)
        image = to_unit_range(batch["image"].to(ctx.device, non_blocking=True), mp["intensity_range"])
        x, brain = pad_to(image, batch["brain"].to(ctx.device, non_blocking=True), mp["slice_size"])
        noise = per_sample_randn(batch["seed"], (int(mp["latent_dim"]),), ctx.device)
        with ctx.autocast():
            out = network(x, noise=noise, attention=with_attention)
        total = (reconstruction_bce(out.logits, x) + float(mp["kl_weight"]) * kl_divergence(out.mu, out.logvar)).mean()
        if with_attention:
            region = erode_region(brain, mp["erosion_block"])
            warmup = warmup_epochs(mp, ctx.num_epochs)
            total = total + self.attention_term(out.attention.float(), region, mp, max(ctx.epoch, warmup), warmup)
        return total

    def loss(self, stage: Stage, network, batch, ctx: StepContext) -> torch.Tensor:
        active = ctx.epoch >= warmup_epochs(self.method_plan(ctx.plans), ctx.num_epochs)
        return self.objective(network, batch, ctx, with_attention=active)

    def validation_error(self, stage: Stage, network, batch, ctx: StepContext) -> Tuple[float, float]:
        # the full objective in every epoch (the warm-up's too), so the curve is comparable across epochs
        return float(self.objective(network, batch, ctx, with_attention=True).detach()), 1.0

    # ---- inference ------------------------------------------------------------------------------------------
    def map_polarity(self, predictor) -> str:
        """The plan's polarity; "auto" = the one chosen at calibration (the authors' for older calibrations). A fixed
        polarity that differs from the one the fold was calibrated on is used, with a warning: the thresholds in
        calibration.json were taken on the other map."""
        planned = self.method_plan(predictor.plans).get("map_polarity", AUTHORS_POLARITY)
        calibrated = (predictor.calibration or {}).get("map_polarity")
        if planned == "auto":
            return calibrated or AUTHORS_POLARITY
        if calibrated is not None and calibrated != planned:
            logger.warning("%s: the plan reads the map as '%s' but the fold was calibrated on '%s': its thresholds "
                           "do not fit; recalibrate (itermask_train ... --calibrate_only)", self.name, planned,
                           calibrated)
        return planned

    def attention_map(self, predictor, data: np.ndarray, brain: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
        """(normalised attention in the eroded brain, read as "high"; that region; windows run): one encoder pass."""
        mp = self.method_plan(predictor.plans)
        axis = predictor.config.slice_axis
        with autocast_context(predictor.device, predictor.amp):
            att, windows = attention_volume(predictor.network, data, brain, axis, mp["intensity_range"],
                                            max(int(predictor.batch_size), INFERENCE_SLICES), predictor.device)
        region = eroded_region(brain, axis, mp["erosion_block"])
        return normalise(att, region, axis, mp["map_normalisation"]), region, windows

    def attention_result(self, predictor, data: np.ndarray, brain: np.ndarray) -> InferenceResult:
        """The anomaly map (no threshold): attention, eroded brain, normalisation, polarity."""
        mp = self.method_plan(predictor.plans)
        normalised, region, windows = self.attention_map(predictor, data, brain)
        polarity = self.map_polarity(predictor)
        amap = orient(normalised, region, polarity)
        std = float(amap[region].std()) if region.any() else 0.0
        return InferenceResult(anomaly_map=amap, final_mask=np.zeros(brain.shape, bool), tau=math.nan,
                               procedure=f"{self.name}_attention", passes=1, windows=windows,
                               scores={"attention_std": std},
                               fit={"attention": mp["attention"], "map_normalisation": mp["map_normalisation"],
                                    "map_polarity": polarity, "region_voxels": int(region.sum())})

    def infer(self, predictor, data, hf, brain, keep_masks: bool = False) -> InferenceResult:
        brain = brain.astype(bool)
        result = self.attention_result(predictor, data, brain)
        if predictor.on_pass is not None:
            predictor.on_pass(1)
        threshold = (predictor.calibration or {}).get("label_free_threshold")
        if threshold is not None:
            result.tau = float(threshold)
            result.final_mask = (result.anomaly_map > threshold) & eroded_region(
                brain, predictor.config.slice_axis, self.method_plan(predictor.plans)["erosion_block"])
        return finish(result, brain)

    def segment(self, predictor, result: InferenceResult, brain: np.ndarray) -> Tuple[np.ndarray, str]:
        cal = predictor.calibration or {}
        if cal.get("label_free_threshold") is None:
            return result.final_mask.astype(np.uint8), ("empty: no label-free threshold (calibration.json missing "
                                                        "or without label_free_threshold)")
        return result.final_mask.astype(np.uint8), (f"label-free: map > {cal['label_free_threshold']:.4g} "
                                                    f"({cal.get('label_free_rule', 'training percentile')})")

    def calibrate(self, predictor, context) -> Dict[str, Any]:
        """The "auto" map polarity first (the label-free threshold is taken on the map it reads), then the
        label-free threshold."""
        mp = self.method_plan(predictor.plans)
        keys: Dict[str, Any] = {"map_polarity": mp.get("map_polarity", AUTHORS_POLARITY)}   # recorded either way
        if keys["map_polarity"] == "auto":
            keys = choose_polarity(mp, list(predictor.plans.channel_names.values()), context,
                                   int(predictor.plans.training.seed),
                                   lambda data, brain: self.attention_map(predictor, data, brain)[:2])
        predictor.calibration = {**(predictor.calibration or {}), "map_polarity": keys["map_polarity"]}
        return {**keys, **label_free_threshold(self, predictor, context)}


class ConstrainedEntropy(ConstrainedAttention):
    name = "constrained_entropy"
    description = ("VAE attention maps with maximised attention entropy (AMCons), label-free threshold "
                   "(Silva-Rodriguez et al., MedIA 2022)")
    variant = "entropy"

    def attention_term(self, attention, region, mp, epoch, warmup) -> torch.Tensor:
        return entropy_term(attention, region, float(mp["entropy_weight"]))
