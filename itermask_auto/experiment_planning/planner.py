"""From a fingerprint to a plan. Every planned number comes from a named rule recorded in `plans.rules`."""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, Collection, Dict, List, Optional

import numpy as np

from itermask_auto.experiment_planning.plans import (CalibrationPlan, ConfigurationPlan, InferencePlan, NetworkPlan,
                                                     NormalizationPlan, Plans, TrainingMaskPlan, TrainingPlan)
from itermask_auto.experiment_planning.topology import (activation_memory_gb, divisibility, round_patch,
                                                        unet_topology)

logger = logging.getLogger(__name__)

ANISOTROPY_THRESHOLD = 3.0
# IterMask3D: radius 15 in the 192-point spectrum of 1 mm data = 15/192 cycles/mm.
REFERENCE_HF_RADIUS = 15.0 / 192.0
# IterMask3D mask scales 1/4, 1/2, 1/8 of a 1 mm grid = blocks of 4, 2, 8 mm, with p = 0.5, 0.25, 0.25.
REFERENCE_BLOCKS_MM = [4.0, 2.0, 8.0]
REFERENCE_BLOCK_P = [0.5, 0.25, 0.25]
# scoring-region margins calibration chooses from (calibration/rim.py): healthy top-1 % errors sit 50-72 % in the
# outer 4 mm of the brain on phantoms (docs/inference.md), so the choice is made on healthy validation maps
BRAIN_EROSION_CANDIDATES_MM = (0.0, 2.0, 4.0, 6.0)
# the knee fit's cap on t is in the reference's error units (t <= 10); on the median-scaled curve the late sweep
# points, where the knee is, lie above 10 (phantoms: the 2-case gamma ran to the top of its grid with the cap at 10
# and stayed inside it with 20 or no cap: benchmarks/lesion_load.py), so the planned fit keeps every point
KNEE_FIT_MAX_SCALED = 1.0e6
PROFILES = {
    # activation-memory budget for one training step, batch limits, base features, epochs × iterations,
    # weight of the masked region in the loss (1 = the reference's plain MSE)
    "gpu": dict(memory_gb=8.0, min_batch=2, max_batch=8, base_features=16, max_features=256,
                epochs=300, iterations=250, batch_2d=32, masked_loss_weight=1.0),
    "cpu": dict(memory_gb=0.15, min_batch=2, max_batch=2, base_features=8, max_features=256,
                epochs=None, iterations=50, batch_2d=8, masked_loss_weight=5.0),
}
# CPU recipe: epochs fill a wall-clock budget. By default the planning machine times the planned network's step
# (throughput.py) and the epochs follow from that; the `reference` rule uses the throughput of this project's first
# 2-core CPU (AMD EPYC AVX2, fp32), the same plan on every machine (a faster machine simply finishes sooner).
CPU_TRAIN_BUDGET_S = 75 * 60
# reference rule: calibrated on the IXI fold-0 run of that CPU: 8.0 planned 44 epochs for 75 min but they took
# 58 min (79.1 s/epoch), so 8.0 x 75/58 ~ 10.3
CPU_GMAC_PER_S = 10.3
# measured rule: an iteration = the timed step x 1.15 (the per-epoch validation, as above) + the data pipeline
# (crop, augmentation, mask; in the training process by default), which the timed step leaves out. Its cost, fitted
# to the IXI epochs of a 2-core AVX512-BF16 EPYC (3d: 17.8 s per epoch at a 0.194 s step, batch 2 x 64x80x48;
# 2d: 10.6 s at 0.139 s, batch 8 x 96x80): 0.252 us per voxel of the batch + 4.6 ms per sample. The same terms
# give 77 s per epoch for the AVX2 reference CPU's 1.22 s fp32 step, where 79 s were measured.
CPU_VALIDATION_FACTOR = 1.15
CPU_DATA_S_PER_VOXEL = 0.252e-6
CPU_DATA_S_PER_SAMPLE = 4.6e-3
StepTimer = Callable[[ConfigurationPlan], tuple[float, str]]
# times one training step of a method's stage: (method, stage, plans, configuration) -> (seconds, what was timed)
StageTimer = Callable[[Any, Any, Plans, str], tuple[float, str]]
MAX_BATCH_DATASET_FRACTION = 0.05
MAX_2D_PATCH = 256


def conv_gmacs(patch: List[int], strides, kernels, features, in_ch: int, out_ch: int) -> float:
    """Multiply-accumulates of one forward pass (encoder + mirrored decoder, 2 convs per stage)."""
    voxels = float(math.prod(patch))
    total, prev = 0.0, in_ch
    for stride, kernel, f in zip(strides, kernels, features):
        voxels /= math.prod(stride)
        k = math.prod(kernel)
        total += voxels * k * (prev * f + f * f) * 2  # encoder + decoder convolutions at this stage
        prev = f
    return (total + voxels * out_ch) / 1e9


def plan_target_spacing(fp: Dict[str, Any]) -> tuple[List[float], List[float], float, Dict[str, str]]:
    agg = fp["aggregate"]
    median = list(agg["median_spacing"])
    ratio = max(median) / min(median)
    spacing_3d = list(median)
    rule = "median spacing per axis"
    if ratio > ANISOTROPY_THRESHOLD:
        axis = int(np.argmax(median))
        spacing_3d[axis] = agg["spacing_10th_percentile"][axis]
        rule += f"; anisotropic (ratio {ratio:.1f} > {ANISOTROPY_THRESHOLD}): axis {axis} uses the 10th percentile"
    return spacing_3d, median, ratio, {"spacing_3d": rule, "spacing_2d": "median spacing per axis"}


def plan_3d(fp, spacing, channels: int, profile: Dict, name: str) -> ConfigurationPlan:
    median_mm = fp["aggregate"]["median_shape_after_crop_mm"]
    median_shape = [int(round(m / s)) for m, s in zip(median_mm, spacing)]
    patch = round_patch(median_shape, spacing)
    while True:  # shrink the axis largest relative to the median shape until the budget fits
        strides, kernels, features = unet_topology(patch, spacing, profile["base_features"], profile["max_features"])
        memory = activation_memory_gb(patch, strides, features, profile["min_batch"])
        div = divisibility(strides)
        shrinkable = [a for a in range(3) if patch[a] - div[a] >= 8]
        if memory <= profile["memory_gb"] or not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: patch[a] / median_shape[a])
        patch[axis] -= div[axis]  # one pooling factor at a time keeps the patch divisible (nnU-Net's step)
    batch = profile["min_batch"]
    while (batch < profile["max_batch"]
           and activation_memory_gb(patch, strides, features, batch + 1) <= profile["memory_gb"]):
        batch += 1
    dataset_voxels = math.prod(median_shape) * fp["aggregate"]["num_cases"]
    batch = max(1, min(batch, int(MAX_BATCH_DATASET_FRACTION * dataset_voxels / math.prod(patch)) or 1))
    batch = max(batch, min(profile["min_batch"], fp["aggregate"]["num_cases"]))
    return ConfigurationPlan(
        name="3d", spacing=spacing, median_shape=median_shape, patch_size=patch, batch_size=batch,
        network=NetworkPlan(features_per_stage=features, kernel_sizes=kernels, strides=strides,
                            input_channels=2 * channels, output_channels=channels),
        data_identifier=f"{name}_3d", estimated_memory_gb=round(memory, 3))


def plan_2d(fp, spacing, channels: int, profile: Dict, name: str) -> ConfigurationPlan:
    median_mm = fp["aggregate"]["median_shape_after_crop_mm"]
    median_shape = [int(round(m / s)) for m, s in zip(median_mm, spacing)]
    slice_axis = int(np.argmax(spacing)) if max(spacing) / min(spacing) > ANISOTROPY_THRESHOLD else 0
    inplane = [min(MAX_2D_PATCH, n) for i, n in enumerate(median_shape) if i != slice_axis]
    inplane_spacing = [s for i, s in enumerate(spacing) if i != slice_axis]
    patch = round_patch(inplane, inplane_spacing)
    strides, kernels, features = unet_topology(patch, inplane_spacing, 32, 512)
    batch = profile["batch_2d"]
    return ConfigurationPlan(
        name="2d", spacing=spacing, median_shape=median_shape, patch_size=patch, batch_size=batch,
        network=NetworkPlan(features_per_stage=features, kernel_sizes=kernels, strides=strides,
                            input_channels=2 * channels, output_channels=channels, norm="batch"),
        data_identifier=f"{name}_2d", slice_axis=slice_axis,
        estimated_memory_gb=round(activation_memory_gb(patch, strides, features, batch), 3))


def data_pipeline_seconds(batch_size: int, patch) -> float:
    """The engine's sampling, augmentation and masks per training step on the CPU (not in a timed step)."""
    return batch_size * (CPU_DATA_S_PER_VOXEL * math.prod(int(p) for p in patch) + CPU_DATA_S_PER_SAMPLE)


def budget_epochs(seconds_per_epoch: float) -> int:
    """Epochs that fill the CPU budget, at least 10 (a useful model) and at most 300 (the gpu recipe's)."""
    return int(max(10, min(300, CPU_TRAIN_BUDGET_S / seconds_per_epoch)))


def plan_training(profile_name: str, config: ConfigurationPlan,
                  step_timer: Optional[StepTimer] = None) -> tuple[TrainingPlan, str]:
    """The epochs × iterations: fixed on the GPU profile; on the CPU profile those that fill CPU_TRAIN_BUDGET_S, at
    the step time step_timer measures on this machine, or (no timer) at the reference CPU's throughput."""
    profile = PROFILES[profile_name]
    iterations = profile["iterations"]
    if profile["epochs"] is not None:
        return TrainingPlan(num_epochs=profile["epochs"], iterations_per_epoch=iterations,
                            lr_schedule="step"), f"{profile_name} profile: fixed {profile['epochs']}×{iterations}, " \
            "IterMask3D's step schedule"
    schedule = "poly learning rate: with so few epochs the reference's ×0.1 step stalled the masked error (IXI fold 0)"
    budget = f"cpu profile: {CPU_TRAIN_BUDGET_S // 60} min budget"
    if step_timer is not None:
        step, measured = step_timer(config)
        data = data_pipeline_seconds(config.batch_size, config.patch_size)
        epochs = budget_epochs((step * CPU_VALIDATION_FACTOR + data) * iterations)
        rule = (f"{budget} / ({step:.3f} s/step × {CPU_VALIDATION_FACTOR} validation + {data:.3f} s data pipeline) "
                f"× {iterations} it → {epochs} epochs; step time {measured} on the planning machine "
                "(`--throughput reference` plans for the project's reference CPU instead)")
    else:
        net = config.network
        gmacs = conv_gmacs(config.patch_size, net.strides, net.kernel_sizes, net.features_per_stage,
                           net.input_channels, net.output_channels)
        step = 3 * gmacs * config.batch_size / CPU_GMAC_PER_S  # forward + backward ≈ 3 forwards
        epochs = budget_epochs(step * iterations * CPU_VALIDATION_FACTOR)
        rule = (f"{budget} / ({gmacs:.1f} GMAC × 3 × batch {config.batch_size} / {CPU_GMAC_PER_S} GMAC/s × "
                f"{iterations} it × {CPU_VALIDATION_FACTOR} validation) → {epochs} epochs")
    return TrainingPlan(num_epochs=epochs, iterations_per_epoch=iterations, lr_schedule="poly"), f"{rule}; {schedule}"


def plan_experiment(fp: Dict[str, Any], dataset_json: Dict[str, Any], dataset_name: str,
                    profile: str = "cpu", gpu_memory_gb: float | None = None,
                    step_timer: Optional[StepTimer] = None, stage_timer: Optional[StageTimer] = None,
                    timed_methods: Optional[Collection[str]] = None) -> Plans:
    """The plan for one dataset. step_timer (cpu profile): times the planned network's training step on this
    machine, so the epochs fill the CPU budget here; stage_timer does the same for the stages of methods that
    plan epochs of their own (sadm, constrained, mmccd, itermask2; only those in timed_methods when given); None
    plans for the reference CPU (deterministic)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}' (known: {sorted(PROFILES)})")
    prof = dict(PROFILES[profile])
    if gpu_memory_gb is not None:
        prof["memory_gb"] = float(gpu_memory_gb)
    plans_name = f"itermaskPlans_{profile}"
    channels = len(dataset_json["channel_names"])
    spacing_3d, spacing_2d, ratio, rules = plan_target_spacing(fp)
    configs = {"3d": plan_3d(fp, spacing_3d, channels, prof, plans_name),
               "2d": plan_2d(fp, spacing_2d, channels, prof, plans_name)}
    default = "2d" if ratio > ANISOTROPY_THRESHOLD else "3d"
    training, training_rule = plan_training(profile, configs[default], step_timer)
    coarsest = max(spacing_3d)
    hf_radius = min(REFERENCE_HF_RADIUS, 0.5 * 0.5 / coarsest)  # at most half of the coarsest Nyquist
    rules.update({
        "profile": f"{profile}: activation budget {prof['memory_gb']} GB, "
                   f"batch {prof['min_batch']}..{prof['max_batch']}",
        "default_configuration": f"2d if max/min median spacing ({ratio:.2f}) > {ANISOTROPY_THRESHOLD}, else 3d",
        "patch_size_3d": "median brain-cropped shape, rounded to the pooling factor, shrunk (largest axis relative "
                         "to the median first) until the activation-memory estimate fits the profile budget",
        "network": "pool while the feature map stays >= 4 voxels and the axis is not > 2x coarser than the finest "
                   f"(max 5 pools); features {prof['base_features']}·2^stage capped at {prof['max_features']} "
                   "(IterMask3D: 16..256; the cpu profile halves the width to afford more iterations)",
        "batch_size_3d": "grow from the profile minimum while memory fits, capped at 5% of the dataset's voxels",
        "patch_size_2d": "median in-plane shape (capped at 256), rounded to the pooling factor; slice axis = the "
                         "anisotropic axis, else z",
        "hf_radius_cycles_per_mm": "IterMask3D's 15/192 cycles/mm, capped at half the Nyquist of the coarsest spacing",
        "training_masks": "IterMask3D blocks of 4/2/8 mm (scales 1/4, 1/2, 1/8 of 1 mm) with p 0.5/0.25/0.25; "
                          f"masked-region loss weight {prof['masked_loss_weight']} (cpu: spend the short budget on "
                          "the in-painting the method relies on, not on copying the visible voxels)",
        "training": training_rule,
        "inference": "mode itermask2: one tau calibrated on the healthy validation FINAL masks (they cover alpha), "
                     "in units of each scan's median whole-brain-masked error (tau_scale median_error), shrink only: "
                     "at most 6 shrink passes. Chosen on healthy scans only (IXI fold 0, docs/benchmarks.md): the "
                     "only rule whose healthy final masks stayed within [0.5, 1.5] alpha on held-out IXI (0.76 %), "
                     "on held-out IXI without brain masks (0.88 %) and on a scan from another IXI site (1.08 %), "
                     "where the per-subject knee marked 0.49 % / 0.36 % and an absolute tau 8.9 % of the off-site "
                     "brain. The knee (mode itermask3d, 8 sweep passes) stays calibrated for -mode itermask3d: read "
                     "on the error relative to the case's median whole-brain-masked error (knee_scale "
                     "median_error), fitted on every sweep point (fit_max_threshold 1e6). Exported map (both "
                     "modes): the last pass's error inside the final mask, the first pass's order below tau "
                     "(map_readout final_over_first), chosen on blobs drawn into the healthy validation scans of IXI "
                     "fold 0 (benchmarks/readout_choice.py: pooled AUPRC 0.612 against 0.597 for the last pass's map). "
                     "No median filter of the map (map_median_mm 0) and every segmentation component kept "
                     "(component_filter off): both also remove small real lesions (docs/inference.md)",
        "calibration": "alpha 0.01 healthy voxel FPR (Behrendt et al.'s protocol on healthy validation scans); "
                       "tau searched so that the healthy validation final masks cover alpha (itermask2_tau_target "
                       "final_mask_fraction); gamma aimed at each case's own sweep curve at i = 100(1 - alpha) "
                       "(a target the knee can reach); brain-rim margin chosen from 0/2/4/6 mm on the healthy "
                       "validation maps (healthy false positives crowd in the outer 4 mm: docs/inference.md)",
        "normalization": "z-score inside the brain, mean/std from voxels between its 0.5/99.5 percentiles, "
                         "values clipped at ±8 std; background -3 (IterMask2's background level)",
    })
    plans = Plans(
        dataset_name=dataset_name, plans_name=plans_name, channel_names=dict(dataset_json["channel_names"]),
        file_ending=dataset_json["file_ending"], normalization=NormalizationPlan(),
        hf_radius_cycles_per_mm=round(hf_radius, 6),
        training_masks=TrainingMaskPlan(block_sizes_mm=REFERENCE_BLOCKS_MM, block_probabilities=REFERENCE_BLOCK_P,
                                        masked_loss_weight=prof["masked_loss_weight"]),
        training=training, inference=InferencePlan(sweep_steps=8, max_shrink_passes=6, knee_scale="median_error",
                                                   fit_max_threshold=KNEE_FIT_MAX_SCALED, mode="itermask2",
                                                   tau_scale="median_error", map_readout="final_over_first"),
        calibration=CalibrationPlan(alpha=0.01, gamma_target="sweep_quantile",
                                    itermask2_tau_target="final_mask_fraction",
                                    brain_erosion_candidates_mm=list(BRAIN_EROSION_CANDIDATES_MM)),
        configurations=configs, default_configuration=default,
        anisotropy_ratio=round(ratio, 4), profile=profile, rules=rules)
    plans.method_plans = plan_methods(plans, stage_timer, timed_methods)
    return plans


def check_timed_methods(timed_methods: Optional[Collection[str]]) -> None:
    """ValueError (one line) naming any name in timed_methods that is not a registered method."""
    if not timed_methods:
        return
    from itermask_auto.methods.registry import METHODS
    unknown = sorted(set(timed_methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) to time: {', '.join(unknown)} (known: {', '.join(sorted(METHODS))})")


def plan_methods(plans: Plans, stage_timer: Optional[StageTimer] = None,
                 timed_methods: Optional[Collection[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Each registered method's own planned parameters (Method.default_plan), written into the plan so that a
    person can read and edit them; methods without parameters of their own are left out. With stage_timer (cpu
    profile) each method may re-plan its epochs from its stages' steps timed here (Method.epochs_for_machine; one
    without a plan of its own, itermask2, may gain one); timed_methods (None: all) names the methods to time, the
    others keep their untimed rule (seconds saved where only some will be trained, as in the demo)."""
    from itermask_auto.methods.base import Method, stage_batch_size
    from itermask_auto.methods.registry import METHODS   # the methods import torch: only when planning
    check_timed_methods(timed_methods)
    planned = {name: p for name, method in sorted(METHODS.items()) if (p := method.default_plan(plans))}
    if stage_timer is None or plans.profile != "cpu":
        return planned
    plans.method_plans = dict(planned)   # the stages to time are read from the default plans

    def iteration_seconds(method, stage, configuration: str) -> float:
        step, what = stage_timer(method, stage, plans, configuration)
        batch = stage_batch_size(stage, plans, configuration)
        data = data_pipeline_seconds(batch, plans.configuration(configuration).patch_size)
        logger.info("planning throughput: %s; + %.3f s data pipeline", what, data)
        return step + data

    not_asked = []
    for name, method in sorted(METHODS.items()):
        if type(method).epochs_for_machine is Method.epochs_for_machine:   # trains the plan's `training` epochs
            continue
        if not planned.get(name, {}).get("usable", True):   # e.g. mmccd on one sequence
            continue
        if timed_methods is not None and name not in timed_methods:
            not_asked.append(name)
            continue
        try:
            method.check(plans, method.configurations[0])
        except ValueError as e:   # a method this dataset's plan cannot train (its check says why, again, if it is
            # chosen for training): not timed; a line in the log, not a warning, since the dataset may never need it
            logger.info("planning throughput: %s not timed (%s); its epochs keep their untimed rule", name, e)
            continue
        try:
            timer = functools.partial(iteration_seconds, method)
            measured = method.epochs_for_machine(planned.get(name, {}), plans, timer)
            if measured:   # a method without a plan of its own (itermask2) may gain one here
                planned[name] = measured
        except Exception as e:   # timing an optional method must not stop the plan of every other one
            logger.warning("planning throughput: timing %s failed (%s: %s); its epochs keep their untimed rule",
                           name, type(e).__name__, e)
    if not_asked:
        logger.info("planning throughput: not timed (not asked for): %s; their epochs keep their untimed rules",
                    ", ".join(not_asked))
    return planned
