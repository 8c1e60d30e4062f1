"""SADM's planned parameters (`plans.method_plans["sadm"]`): every constant, with the rule that chose it.

Two profiles from `plans.profile`: "gpu" close to the authors' recipe (their networks, batch 32, Adam 1e-4 / 5e-5
at a constant rate, about their number of steps), "cpu" sized to train both stages within 90 minutes on 2 cores
(smaller networks, batch 8, fewer steps): the epochs from each stage's step timed on the planning machine
(`measured_cpu_recipes`, `--throughput measure`), or on the project's 2-core reference CPU (CPU_* below and
docs/methods.md for the measurement; `--throughput reference`)."""
from __future__ import annotations

import copy
from typing import Any, Dict, List

from itermask_auto.methods.sadm.augment import NNUNET_INTENSITY_DEFAULTS

# Behrendt et al.: 96×96 slices at 2 mm; AnoDDPM's simplex start wavelength of 64 px, kept on their 96-px slices
AUTHORS_SLICE_EDGE, AUTHORS_START_WAVELENGTH = 96, 64.0
ENSEMBLE_T = [250, 500, 750]
# CPU profile: seconds per training step at batch 8 on IXI 96x80 slices (data sampling and synthetic anomalies
# included). Measured as single-thread CPU time (time.process_time: the shared reference machine's wall clock was
# not usable) with the cpu networks: diffusion 1.82 s, delineation 1.25 s (benchmarks/sadm_step_time.py); the
# 2-thread wall time is taken as 0.7x that (a conservative parallel speed-up of 1.4 on the 2-core machine).
CPU_DIFFUSION_STEP_S, CPU_DELINEATION_STEP_S = 1.3, 0.9
CPU_VALIDATION_STEP_FRACTION = (0.3, 0.6)   # a validation batch in steps (forward only; stage 2 makes anomalies)
CPU_BUDGET_S = 80 * 60           # both stages, validation included, leaving 10 of the 90 minutes spare
CPU_ITERATIONS = 50
CPU_VALIDATION_ITERATIONS = 4
CPU_DIFFUSION_SHARE = 0.6        # of the budget: the reconstruction is the harder task


def _recipe(optimizer: str, lr: float, epochs: int, iterations: int, schedule: str, validation: int) -> Dict:
    recipe = {"optimizer": optimizer, "initial_lr": lr, "num_epochs": int(epochs), "iterations_per_epoch": iterations,
              "lr_schedule": schedule, "validation_iterations": validation}
    if schedule == "step":   # "step" at fraction 1.0 never steps: a constant rate (the authors')
        recipe["lr_step_fraction"] = 1.0
    return recipe


def _cpu_epochs(step_s: float, share: float, validation_fraction: float) -> int:
    per_epoch = step_s * (CPU_ITERATIONS + CPU_VALIDATION_ITERATIONS * validation_fraction)
    return max(1, int(CPU_BUDGET_S * share / per_epoch))


def _cpu_recipes(plan: Dict[str, Any], diffusion_step_s: float, delineation_step_s: float) -> None:
    plan["diffusion_recipe"] = _recipe(
        "adam", 2e-4, _cpu_epochs(diffusion_step_s, CPU_DIFFUSION_SHARE, CPU_VALIDATION_STEP_FRACTION[0]),
        CPU_ITERATIONS, "poly", CPU_VALIDATION_ITERATIONS)
    plan["delineation_recipe"] = _recipe(
        "adam", 1e-4, _cpu_epochs(delineation_step_s, 1 - CPU_DIFFUSION_SHARE, CPU_VALIDATION_STEP_FRACTION[1]),
        CPU_ITERATIONS, "poly", CPU_VALIDATION_ITERATIONS)


def _cpu_recipe_rule(steps: str) -> str:
    return (f"cpu profile: {CPU_BUDGET_S // 60} min for both stages at {steps}, {CPU_DIFFUSION_SHARE:.0%} to the "
            f"diffusion model; {CPU_ITERATIONS} iterations + {CPU_VALIDATION_ITERATIONS} validation batches per "
            "epoch; higher learning rates than the authors' with poly decay, for far fewer steps")


def measured_cpu_recipes(plan: Dict[str, Any], seconds: Dict[str, float]) -> Dict[str, Any]:
    """The cpu plan with each stage's epochs from the planning machine's seconds per training iteration (the
    engine's step timed on a synthetic batch of the planned size, synthetic anomalies included, + the data
    pipeline: `seconds["diffusion"]`, `seconds["delineation"]`) in place of the reference CPU's constants."""
    plan = copy.deepcopy(plan)
    _cpu_recipes(plan, seconds["diffusion"], seconds["delineation"])
    plan["rules"]["recipes"] = _cpu_recipe_rule(
        f"{seconds['diffusion']:.3f} / {seconds['delineation']:.3f} s per iteration measured on the planning machine "
        "(the engine's step on a synthetic batch of the planned size, + the data pipeline; `--throughput reference` "
        f"plans with the reference CPU's {CPU_DIFFUSION_STEP_S} / {CPU_DELINEATION_STEP_S} s)")
    return plan


def default_plan(plans) -> Dict[str, Any]:
    config = plans.configurations.get("2d")
    slice_size: List[int] = list(config.patch_size) if config is not None else [AUTHORS_SLICE_EDGE] * 2
    edge = max(slice_size)
    gpu = plans.profile == "gpu"
    background = float(plans.normalization.background_value)
    plan: Dict[str, Any] = {
        "slice_size": slice_size,
        "intensity_zero": background, "intensity_one": -background,
        "timesteps": 1000, "schedule": "cosine", "prediction": "sample", "loss": "l1",
        "noise": "simplex", "noise_octaves": 6, "noise_persistence": 0.8,
        "noise_start_wavelength_px": round(AUTHORS_START_WAVELENGTH * edge / AUTHORS_SLICE_EDGE, 2),
        "noise_bank_fields": 6, "noise_seed": int(plans.training.seed),
        "ensemble_t": list(ENSEMBLE_T), "delineation_t_range": [0, 1000],
        "diffusion_channels": [128, 256, 256] if gpu else [32, 64, 64],
        "diffusion_res_blocks": 3 if gpu else 1,
        "diffusion_head_channels": 64 if gpu else 32,
        "diffusion_norm_groups": 32 if gpu else 16,
        "siamese_features": [64, 128, 256, 512] if gpu else [16, 32, 64, 128],
        "siamese_norm_groups": 8,
        "anomaly_kinds": {"noise_blend": 0.5, "lesion_blobs": 0.5}, "p_anomaly": 1.0,
        "mask_cells": [c for c in (1, 2, 4, 8, 16, 32, 64) if edge / c >= 6],
        "mask_threshold": 0.5, "blend_beta": [0.2, 1.0], "source_operations": 3,
        "lesion_count": [1, 3], "lesion_radius_mm": [3.0, 9.0], "lesion_contrast": [0.3, 0.5],
        "lesion_sign": "channel",
        "delineation_augmentation": copy.deepcopy(NNUNET_INTENSITY_DEFAULTS),
        "dice_weight": 0.0, "labelled_fraction": 0.25, "labelled_lesion_slices": 0.75,
        "anomaly_map": "auto", "ssim_window": 11, "ssim_sigma": 1.0, "median_filter": 5,
        "inference_batch_slices": 64 if gpu else 16,
        "diffusion_batch": 32 if gpu else 8, "delineation_batch": 32 if gpu else 8,
    }
    if gpu:
        plan["diffusion_recipe"] = _recipe("adam", 1e-4, 70, 250, "step", 20)
        plan["delineation_recipe"] = _recipe("adam", 5e-5, 34, 250, "step", 20)
    else:
        _cpu_recipes(plan, CPU_DIFFUSION_STEP_S, CPU_DELINEATION_STEP_S)
    plan["rules"] = _rules(plan, gpu, edge)
    return plan


def _rules(plan: Dict[str, Any], gpu: bool, edge: int) -> Dict[str, str]:
    profile = ("gpu profile: the authors' networks, batch 32, Adam 1e-4 (diffusion) / 5e-5 (Siamese U-Net) at a "
               "constant rate, ~17.5k / 8.5k steps (their 1200 / 600 epochs of 14 steps)") if gpu else _cpu_recipe_rule(
        f"{CPU_DIFFUSION_STEP_S} / {CPU_DELINEATION_STEP_S} s per step on the reference CPU (measured single-thread "
        "CPU time x 0.7 for 2 threads, batch 8, 96x80 slices)")
    return {
        "slice_size": "the plan's 2d patch (median in-plane brain shape, rounded to the pooling factor; IXI at 2 mm: "
                      "96x80, the authors' 96x96 at 2 mm); a training slice is centred on its brain",
        "intensity": "model space u = (z − intensity_zero) / (intensity_one − intensity_zero): the per-volume robust "
                     "z-score of preprocessing mapped so the background (−3) is 0 (the authors' zero background) "
                     "and ±3 SD span [0, 1] (their 1st/99th-percentile scaling, as a fixed, invertible map)",
        "diffusion": "DDPM, T = 1000, cosine schedule, predicts x0 (prediction_type 'sample'), L1 loss, t ~ U[0, T) "
                     "(the authors); MONAI DiffusionModelUNet, attention only in the middle block",
        "noise": f"AnoDDPM simplex: {plan['noise_octaves']} octaves, persistence {plan['noise_persistence']}, start "
                 f"wavelength 64 px x slice edge {edge} / 96 (the authors kept AnoDDPM's 64 px on their 96-px "
                 f"slices) = {plan['noise_start_wavelength_px']} px; not rescaled to unit variance (as the "
                 f"authors); a bank of {plan['noise_bank_fields']} opensimplex fields per process, random "
                 "crops/turns/mirrors/signs per sample",
        "ensemble_t": "reconstruction = one x0 prediction from x_t, averaged over t = 250, 500, 750 (the authors); "
                      "stage 2's probabilities averaged over the same t",
        "delineation_t_range": "stage 2 trains on reconstructions from t ~ U[0, T) (the authors' training)",
        "networks": ("authors: diffusion 128 base channels x (1, 2, 2), 3 residual blocks; Siamese U-Net widths "
                     "64-512") if gpu else (
            "cpu: diffusion 32 x (1, 2, 2), 1 residual block (1.9 GMAC per 96x80 slice, authors' 56); Siamese "
            "U-Net widths 16-128 (0.9 GMAC per slice pair, authors' 14)"),
        "anomaly_kinds": "half DRAEM noise blends (the authors'), half the project's lesion-shaped intensity change "
                         "on generated blobs (the issue); every training slice gets one (p_anomaly 1, the authors)",
        "mask_cells": "DRAEM's 2^0..2^6 Perlin cells across a 256-px image, kept while a cell is >= 6 px on our "
                      "slices",
        "lesion": "the project's synthetic-lesion defaults: blob radius 3-9 mm, contrast 0.3-0.5 of the local "
                  "white-matter level, sign from the channel (T1: darker)",
        "delineation_augmentation": "stage 2's training slices get nnU-Net v2's default intensity augmentations "
                                    "({name: [range, probability]}; the noise standard deviation in z-score "
                                    "units) before their anomaly, so that a global change of brightness, "
                                    "contrast, gamma, blur or noise (another site) is learnt as normal; {} turns "
                                    "it off (plans made before 2026-12-04 have none)",
        "labelled_fraction": "with --labelled: this fraction of stage-2 samples are labelled slices (lesion "
                             "slices with probability labelled_lesion_slices)",
        "anomaly_map": "auto: chosen at calibration from 'probability' (stage 2), 'ssim' (median3D_5(1 − SSIM(x, "
                       "x̂)), 11-px Gaussian window, sigma 1) and 'sum' (both, the authors' combined map): the map "
                       "whose healthy alpha threshold transfers best to a left-out healthy validation scan (mean "
                       "|log(FPR / alpha)|; from 10 validation scans up, else the probability; on IXI the "
                       "probability and the sum transfer worse than ssim, 0.66 and "
                       "0.69 against 0.40, and mark 5x alpha on a healthy scan of another site); plans that name "
                       "a map keep it",
        "recipes": profile,
    }


def stage_recipe(plan: Dict[str, Any], stage: str) -> Dict[str, Any]:
    """TrainingPlan overrides of a stage ("diffusion" | "delineation")."""
    return dict(plan[f"{stage}_recipe"])
