"""The constrained methods' planned parameters (`Method.default_plan`): every constant with the rule behind it.

Authors' recipe (jusiro/constrained_anomaly_segmentation @c5c963c; MedIA 80:102526, 2022): 224² slices at ~1.07 mm,
ResNet-18 layers (64-512 channels) after a 7×7 stride-2 stem, dense latent 32, Adam, batch 8, 300 epochs;
`constrained` (gradCAMCons): lr 1e-5, KL weight 1, log-barrier weight 1000, t = 10, p = 0.01, 50 reconstruction-only
epochs; `constrained_entropy` (AMCons): lr 1e-4, KL weight 10, entropy weight 0.1, the term from the 2nd epoch.

CPU profile: the authors' widths halved (32-256) and the epochs that fit TRAIN_BUDGET_S at the step timed on the
planning machine (`with_measured_epochs`, `--throughput measure`), or on the project's 2-core reference CPU at the
throughput measured with benchmarks-style timing runs on IXI slices (96×80 at 2 mm, batch 8; see
CPU_SECONDS_PER_ITERATION), scaled by slice area and batch (`--throughput reference`)."""
from __future__ import annotations

import copy
import math
from typing import Any, Dict

# Measured 2026-12 on this project's 2-core AMD EPYC (AVX2, fp32) with /tmp timing runs of the engine's step
# (Trainer.train_step on IXI fold-0 slices 96×80 at 2 mm, batch 8, widths 32-256, constraint active): 0.36 s of
# CPU time per step with 1 torch thread + 0.012 s sampling/augmentation; Grad-CAM 0.60 s (double backward);
# AMCons 0.36 s. Two-thread timings were unusable on the shared machine (load 5-7), so the plan assumes 0.32 s per
# iteration on 2 cores: even with no gain from the 2nd thread the planned epochs then train in < 90 min.
CPU_SECONDS_PER_ITERATION = 0.32
REFERENCE_SLICE_PIXELS = 96 * 80
REFERENCE_BATCH = 8
GRADCAM_COST_FACTOR = 1.65
TRAIN_BUDGET_S = 75 * 60          # training with validation; the label-free pass, calibration and slack: the rest of 90
VALIDATION_OVERHEAD = 1.12        # 20 validation batches per epoch (forward only)
AUTHORS_PIXEL_MM = 240 / 224      # BraTS 240² at 1 mm resized to 224²
AUTHORS_EROSION_PIXELS = 6        # scipy binary_erosion with a 6×6 block
AUTHORS_EPOCHS, AUTHORS_WARMUP_EPOCHS = 300, 50

PROFILES = {
    "gpu": dict(widths=[64, 128, 256, 512], iterations=100, epochs=AUTHORS_EPOCHS, label_free_cases=0),
    "cpu": dict(widths=[32, 64, 128, 256], iterations=50, epochs=None, label_free_cases=24),
}
VARIANTS = {
    # learning rate per profile, KL weight, attention term, warm-up as a fraction of the epochs
    "barrier": dict(lr={"gpu": 1e-5, "cpu": 1e-4}, kl_weight=1.0,
                    warmup_fraction=AUTHORS_WARMUP_EPOCHS / AUTHORS_EPOCHS),
    "entropy": dict(lr={"gpu": 1e-4, "cpu": 1e-4}, kl_weight=10.0, warmup_fraction=1 / AUTHORS_EPOCHS),
}


def slice_size_for(patch, levels: int) -> list[int]:
    """The plan's 2d patch rounded up to a multiple of 2^levels (the encoder's total stride)."""
    factor = 2 ** levels
    return [int(math.ceil(int(p) / factor) * factor) for p in patch]


def budget_epochs(s_it: float, iterations: int) -> int:
    """Epochs that fit TRAIN_BUDGET_S at s_it seconds per iteration (at least 4, at most the authors' 300)."""
    return int(max(4, min(AUTHORS_EPOCHS, TRAIN_BUDGET_S / (s_it * iterations * VALIDATION_OVERHEAD))))


def cpu_epochs(slice_size, batch: int, iterations: int, attention: str) -> tuple[int, float]:
    """(epochs that fit TRAIN_BUDGET_S, estimated seconds per iteration) on the reference 2-core CPU."""
    s_it = CPU_SECONDS_PER_ITERATION * (slice_size[0] * slice_size[1] / REFERENCE_SLICE_PIXELS) \
        * (batch / REFERENCE_BATCH) * (GRADCAM_COST_FACTOR if attention == "gradcam" else 1.0)
    return budget_epochs(s_it, iterations), s_it


def _epochs_rule(s_it: float, iterations: int, epochs: int, how: str) -> str:
    return (f"cpu: {TRAIN_BUDGET_S // 60} min / ({s_it:.2f} s/iteration {how} × {iterations} it × "
            f"{VALIDATION_OVERHEAD} validation) → {epochs} epochs")


def _warmup_rule(variant: str, warmup_fraction: float, epochs: int) -> str:
    return (f"reconstruction-only epochs = round(fraction × epochs): the authors' "
            f"{'50 of 300' if variant == 'barrier' else 'first of 300'} "
            f"({int(round(warmup_fraction * epochs))} of {epochs} here)")


def with_measured_epochs(planned: Dict[str, Any], variant: str, s_it: float) -> Dict[str, Any]:
    """The cpu plan with its epochs from the planning machine's seconds per training iteration (the engine's step
    timed on a synthetic batch at the last epoch, attention term on, + the data pipeline) instead of the reference
    CPU's scaled constant."""
    planned = copy.deepcopy(planned)
    iterations = int(planned["iterations_per_epoch"])
    epochs = budget_epochs(s_it, iterations)
    planned["num_epochs"] = epochs
    planned["rules"]["num_epochs"] = _epochs_rule(
        s_it, iterations, epochs, "measured on the planning machine (the engine's step on a synthetic batch, the "
        "attention term on, + the data pipeline; `--throughput reference`: the reference CPU's scaled constant)")
    planned["rules"]["warmup_fraction"] = _warmup_rule(variant, float(planned["warmup_fraction"]), epochs)
    return planned


def default_plan(plans, variant: str) -> Dict[str, Any]:
    """The planned parameters of variant "barrier" (`constrained`) or "entropy" (`constrained_entropy`)."""
    if "2d" not in plans.configurations:
        return {}
    config = plans.configuration("2d")
    profile_name = plans.profile if plans.profile in PROFILES else "cpu"
    prof, var = PROFILES[profile_name], VARIANTS[variant]
    widths = list(prof["widths"])
    slice_size = slice_size_for(config.patch_size, len(widths))
    batch, iterations, attention = 8, int(prof["iterations"]), "channel_mean"
    if prof["epochs"] is None:
        epochs, s_it = cpu_epochs(slice_size, batch, iterations, attention)
        epochs_rule = _epochs_rule(s_it, iterations, epochs, "measured-and-scaled")
    else:
        epochs = int(prof["epochs"])
        epochs_rule = f"gpu: the authors' {AUTHORS_EPOCHS} epochs"
    spacing = [s for a, s in enumerate(config.spacing) if a != config.slice_axis]
    erosion = [max(1, int(round(AUTHORS_EROSION_PIXELS * AUTHORS_PIXEL_MM / s))) for s in spacing]
    warmup_fraction = float(var["warmup_fraction"])
    background = float(plans.normalization.background_value)
    planned = {
        "slice_size": slice_size,
        "widths": widths,
        "blocks_per_layer": 2,
        "latent_dim": 32,
        "attention_level": 1,
        "attention": attention,
        "intensity_range": [background, background + 8.0],
        "batch_size": batch,
        "num_epochs": epochs,
        "iterations_per_epoch": iterations,
        "learning_rate": float(var["lr"][profile_name]),
        "kl_weight": float(var["kl_weight"]),
        "warmup_fraction": round(warmup_fraction, 6),
        "erosion_block": erosion,
        "map_normalisation": "slice_min_max",
        "map_polarity": "auto",
        "polarity_cases": 8,
        "polarity_lesions": {"count": [1, 3], "radius_mm": [3.0, 9.0], "contrast": [0.3, 0.5]},
        "label_free_percentile": 99.0,
        "label_free_cases": int(prof["label_free_cases"]),
    }
    if variant == "barrier":
        planned.update({"constraint_weight": 1000.0, "p": 0.01, "t": 10.0, "t_growth": 1.0})
    else:
        planned.update({"entropy_weight": 0.1})
    planned["rules"] = {
        "slice_size": f"the plan's 2d patch {list(config.patch_size)} rounded up to a multiple of "
                      f"2^{len(widths)} (stem and {len(widths) - 1} residual layers at stride 2; dense latent)",
        "widths": f"{profile_name}: " + ("the authors' ResNet-18 widths" if profile_name == "gpu" else
                                         "the authors' ResNet-18 widths halved, to afford more iterations on 2 cores"),
        "attention": "output of residual layer 1 (the authors' level_cams=-4), plain channel mean as the authors' "
                     "shipped code ('gradcam': the paper's weighting, ~1.5x the training cost)",
        "intensity_range": "z-scored data mapped linearly from [background, background + 8] to [0, 1] and clamped: "
                           "the authors' BCE-with-logits reconstruction loss needs [0, 1] targets",
        "num_epochs": epochs_rule,
        "learning_rate": ("gpu: the authors' (gradCAMCons 1e-5, AMCons 1e-4)" if profile_name == "gpu" else
                          "cpu: 1e-4 for both (AMCons' rate; gradCAMCons' 1e-5 was for ~40k steps)"),
        "warmup_fraction": _warmup_rule(variant, warmup_fraction, epochs),
        "erosion_block": f"the authors' 6×6-pixel erosion at {AUTHORS_PIXEL_MM:.2f} mm/pixel, in voxels at "
                         f"{spacing} mm",
        "map_normalisation": "attention min-max normalised per slice inside the eroded brain (the authors' inference)",
        "map_polarity": "auto: chosen at calibration among high (the authors'), low and two_sided by the voxel AUPRC "
                        "on generated lesions in healthy validation scans (polarity.py); set one to skip the choice",
        "polarity_cases": "healthy validation cases that receive generated lesions for that choice (evenly spread; "
                          "0 = all)",
        "polarity_lesions": "sadm's stage-2 blobs: 1-3 per scan, radius 3-9 mm, contrast 0.3-0.5, the sign from the "
                            "channel name (T1 darker); no lesion mask is read",
        "label_free_percentile": "label-free threshold = this percentile of the maps of healthy TRAINING cases (the "
                                 "authors' thresholod_with_percentile, code/main.py); no validation or lesion data",
        "label_free_cases": "training cases scored for that percentile (evenly spread; 0 = all)",
    }
    return planned
