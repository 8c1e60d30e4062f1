"""MMCCD's planned parameters (`plans.method_plans["mmccd"]`): which sequence is translated into which, the stripe
width and brain erosion in mm, the networks and training recipe per hardware profile, and the test-time schedule
(stripe positions, DDIM steps, masks per network call) planned from a time budget per volume.

The budget rule: the affordable network evaluations per slice are
    E = budget × (1 − overhead) / (slices per volume × seconds per evaluation),
seconds per evaluation = FLOPs of one sample at the planned inference size (counted, networks.py) / the profile's
measured throughput. A slice costs 2 orientations × positions × (DDIM steps + 1 backward pass). Coverage first
(positions ≥ brain extent / stripe width, so every brain pixel is in a band of each orientation), then DDIM steps up
to `step_cap`, then more positions up to the authors' 64, then steps up to the authors' 100."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

from itermask_auto.methods.mmccd import networks

# the authors' constants (128 px slices of a 240 mm field of view: 1.875 mm per pixel)
REFERENCE_PIXEL_MM = 240.0 / 128.0
STRIPE_WIDTH_MM = 16 * REFERENCE_PIXEL_MM          # 16 px = 30 mm
EROSION_RADIUS_MM = 4 * REFERENCE_PIXEL_MM         # disk(4) = 7.5 mm
REFERENCE_POSITIONS, REFERENCE_STEPS, TRAIN_TIMESTEPS = 64, 100, 1000
# the volume a budget is for: a whole adult brain with the 4 mm crop margins, canonical (z, y, x) in mm (BraTS 2015 at
# 2 mm: brains of 65-72 x 68-87 x 64-72 voxels), or the training cases' median where larger (they may be slabs)
REFERENCE_BRAIN_MM = (150.0, 180.0, 150.0)
OVERHEAD_FRACTION = 0.15      # of the budget kept for reading, preprocessing, export (measured: ~20 s per volume)
MIN_EPOCHS = 5

# Throughputs in GFLOP/s (FLOPs as networks.gflop_per_evaluation counts them). cpu: this project's 2-core CPU (AMD
# EPYC, AVX2, fp32, torch 2.13), measured with `benchmarks/mmccd_speed.py --threads 1` on the shared machine (load
# average 8): base-16 U-Net at 96x80, 30-34 GFLOP per CPU-second in inference (mask batch 8-32) and 39 in training
# (batch 8); x 2 cores x 0.75 assumed parallel efficiency (not measurable while the machine was shared) -> 45 / 55.
# gpu: NOT measured (no GPU was available): a conservative guess for bf16 on a data-centre GPU; re-measure with
# `benchmarks/mmccd_speed.py --device cuda` and edit the plan's schedule if it is off.
PROFILES: Dict[str, Dict[str, Any]] = {
    "cpu": dict(base_channels=16, num_res_blocks=2, batch_size=8, optimizer="adamw", initial_lr=3e-4,
                lr_schedule="poly", budget_s=600.0, mask_batch=32, step_cap=10,
                inference_gflops=45.0, training_gflops=55.0, training_budget_s=75 * 60, forward_share=0.8),
    "gpu": dict(base_channels=32, num_res_blocks=2, batch_size=32, optimizer="adamw", initial_lr=1e-4,
                lr_schedule="poly", budget_s=120.0, mask_batch=256, step_cap=10,
                inference_gflops=5000.0, training_gflops=None, training_budget_s=None, forward_share=None),
}
PREFERRED_SOURCE = ("FLAIR", "T2")          # where lesions are sought: A (the cycle error is measured in A)
PREFERRED_TARGET = ("T2", "T1", "T1C", "T1CE", "T1GD", "PD")


def _index(channel_names: Dict[str, str], name: str) -> Optional[int]:
    for key, value in channel_names.items():
        if str(value).upper() == str(name).upper():
            return int(key)
    return None


def choose_sequences(channel_names: Dict[str, str]) -> Tuple[str, str, str]:
    """(A, B, rule) from the dataset's channel names; FLAIR → T2 when both exist."""
    names = [channel_names[k] for k in sorted(channel_names, key=int)]
    source = next((n for p in PREFERRED_SOURCE for n in names if n.upper() == p), names[0])
    rest = [n for n in names if n != source]
    target = next((n for p in PREFERRED_TARGET for n in rest if n.upper() == p), rest[0])
    rule = (f"A = {source}: the anomaly is the cycle error in A's space, so A is the sequence lesions show best "
            f"in (preference {'/'.join(PREFERRED_SOURCE)}, else the first channel); B = {target} (preference "
            f"{'/'.join(PREFERRED_TARGET)}, else the next channel); authors: FLAIR -> T2")
    return source, target, rule


def channel_indices(plans, method_plan: Dict[str, Any]) -> Tuple[int, int]:
    a = _index(plans.channel_names, method_plan["source_channel"])
    b = _index(plans.channel_names, method_plan["target_channel"])
    have = ", ".join(plans.channel_names[k] for k in sorted(plans.channel_names, key=int))
    for name, index in ((method_plan["source_channel"], a), (method_plan["target_channel"], b)):
        if index is None:
            raise ValueError(f"mmccd: channel '{name}' of the method plan is not in {plans.dataset_name} "
                             f"(has: {have})")
    if a == b:
        raise ValueError(f"mmccd: source and target channel are both '{method_plan['source_channel']}'")
    return a, b


def levels_for(patch) -> int:
    """U-Net levels: the authors' 5 where the patch allows, each level's map >= 4 px and the patch divisible."""
    levels = 5
    while levels > 1 and any(p % 2 ** (levels - 1) or p // 2 ** (levels - 1) < 4 for p in patch):
        levels -= 1
    return levels


def round_up(shape, multiple: int):
    return [int(math.ceil(s / multiple) * multiple) for s in shape]


def plan_schedule(evaluations: float, min_positions: int, step_cap: int) -> Tuple[int, int]:
    """(positions per orientation, DDIM steps) for `evaluations` affordable network evaluations per slice."""
    per = lambda p, s: 2 * p * (s + 1)                      # noqa: E731 - evaluations of one slice
    steps = int(min(max(evaluations // (2 * min_positions) - 1, 1), step_cap))
    positions = int(min(max(evaluations // (2 * (steps + 1)), min_positions), REFERENCE_POSITIONS))
    if positions == REFERENCE_POSITIONS:
        steps = int(min(max(evaluations // (2 * positions) - 1, steps), REFERENCE_STEPS))
    assert per(positions, steps) <= max(evaluations, per(min_positions, 1))
    return positions, steps


def default_plan(plans, budget_s: Optional[float] = None) -> Dict[str, Any]:
    if plans.num_channels < 2:
        have = ", ".join(plans.channel_names[k] for k in sorted(plans.channel_names, key=int))
        return {"usable": False,
                "reason": f"mmccd needs two co-registered sequences; {plans.dataset_name} has: {have}"}
    if "2d" not in plans.configurations:
        return {"usable": False, "reason": "mmccd is 2-D and the plan has no 2d configuration"}
    profile_name = plans.profile if plans.profile in PROFILES else "cpu"
    prof = PROFILES[profile_name]
    config = plans.configuration("2d")
    source, target, channels_rule = choose_sequences(plans.channel_names)
    spacing = [s for a, s in enumerate(config.spacing) if a != config.slice_axis]
    net = networks.network_keys(prof["base_channels"], levels_for(config.patch_size), prof["num_res_blocks"])
    extent = [max(int(round(mm / s)), int(n)) for mm, s, n in zip(REFERENCE_BRAIN_MM, config.spacing,
                                                                  config.median_shape)]
    inplane = [n for a, n in enumerate(extent) if a != config.slice_axis]
    shape = round_up([max(p, m) for p, m in zip(config.patch_size, inplane)], networks.divisor(net))
    widths = [max(1, round(STRIPE_WIDTH_MM / s)) for s in spacing]
    min_positions = max(math.ceil(n / w) for n, w in zip(shape, widths))
    slices = extent[config.slice_axis]
    gflop = networks.gflop_per_evaluation(net, shape)
    seconds = gflop / prof["inference_gflops"]
    budget = float(prof["budget_s"] if budget_s is None else budget_s)
    evaluations = budget * (1 - OVERHEAD_FRACTION) / (slices * seconds)
    positions, steps = plan_schedule(evaluations, min_positions, prof["step_cap"])
    per_slice = 2 * positions * (steps + 1)
    planned = {
        "usable": True,
        "source_channel": source, "target_channel": target, "channels_rule": channels_rule,
        "stripe_width_mm": round(STRIPE_WIDTH_MM, 4), "erosion_radius_mm": round(EROSION_RADIUS_MM, 4),
        "train_timesteps": TRAIN_TIMESTEPS, "beta_schedule": "linear_beta", "prediction_type": "sample",
        "geometry_rule": "authors' 16 px stripe and disk(4) erosion at 1.875 mm/px (128 px over 240 mm) in mm; "
                         "T = 1000 linear betas, x0 prediction",
        "network": net,
        "network_rule": f"{profile_name} profile: base {prof['base_channels']} channels x (1,1,2,3,4) over "
                        f"{len(net['channels'])} levels (authors: 32, 5 levels), attention at downsampling >= "
                        f"{networks.ATTENTION_MIN_DOWNSAMPLING}, {net['num_res_blocks']} residual blocks",
        **_training(plans, prof, profile_name, net, config.patch_size),
        "time_budget_s_per_volume": budget, "slices_per_volume": slices, "inference_shape": shape,
        "gflop_per_evaluation": round(gflop, 4), "throughput_gflops": prof["inference_gflops"],
        "stripe_positions": positions, "ddim_steps": steps, "mask_batch": prof["mask_batch"],
        "evaluations_per_slice": per_slice, "over_budget": bool(per_slice > evaluations),
        "predicted_s_per_volume": round(slices * per_slice * seconds / (1 - OVERHEAD_FRACTION), 1),
        "schedule_rule": (f"budget {budget:g} s/volume x {1 - OVERHEAD_FRACTION:.2f} / ({slices} slices x "
                          f"{seconds:.3f} s/evaluation = {gflop:.2f} GFLOP at {shape} / {prof['inference_gflops']:g} "
                          f"GFLOP/s) = {evaluations:.0f} evaluations per slice; coverage needs >= {min_positions} "
                          f"positions of {widths} px; then DDIM steps up to {prof['step_cap']}, positions up to "
                          f"{REFERENCE_POSITIONS}, steps up to {REFERENCE_STEPS} -> {positions} positions x 2 "
                          f"orientations x ({steps} DDIM steps + 1 backward) = {per_slice} evaluations per slice "
                          f"(authors: {2 * REFERENCE_POSITIONS * (REFERENCE_STEPS + 1)})"),
    }
    return planned


def with_schedule_figures(planned: Dict[str, Any]) -> Dict[str, Any]:
    """The figures that follow from the schedule (evaluations per slice, predicted time), recomputed after a person
    edited stripe_positions / ddim_steps in the plan file."""
    if not planned.get("usable", True):
        return planned
    per_slice = 2 * int(planned["stripe_positions"]) * (int(planned["ddim_steps"]) + 1)
    seconds = planned["gflop_per_evaluation"] / planned["throughput_gflops"]
    predicted = planned["slices_per_volume"] * per_slice * seconds / (1 - OVERHEAD_FRACTION)
    return {**planned, "evaluations_per_slice": per_slice, "predicted_s_per_volume": round(predicted, 1),
            "over_budget": bool(predicted > planned["time_budget_s_per_volume"])}


def _training(plans, prof: Dict[str, Any], profile_name: str, net: Dict[str, Any], patch) -> Dict[str, Any]:
    """Epochs of the two stages: the cpu profile fills a wall-clock budget (forward_share of it for the diffusion
    model) at a measured training throughput; the gpu profile trains both for the plan's epochs."""
    iterations = int(plans.training.iterations_per_epoch)
    if prof["training_budget_s"] is None:
        forward_epochs = backward_epochs = int(plans.training.num_epochs)
        rule = f"{profile_name} profile: the plan's {forward_epochs} epochs x {iterations} iterations for both stages"
    else:
        gflop = networks.gflop_per_evaluation(net, patch)
        step_s = 3 * gflop * prof["batch_size"] / prof["training_gflops"]     # forward + backward ~ 3 forwards
        forward_epochs, backward_epochs = _budget_epochs(prof, iterations, step_s, step_s)
        rule = (f"{profile_name} profile: {prof['training_budget_s'] / 60:g} min ({prof['forward_share']:.0%} "
                f"forward) / ({gflop:.2f} GFLOP x 3 x batch {prof['batch_size']} / {prof['training_gflops']:g} "
                f"GFLOP/s = {step_s:.2f} s/iteration x {iterations} iterations x 1.1 validation)")
    return {"batch_size": prof["batch_size"], "optimizer": prof["optimizer"], "initial_lr": prof["initial_lr"],
            "lr_schedule": prof["lr_schedule"], "forward_epochs": forward_epochs, "backward_epochs": backward_epochs,
            "iterations_per_epoch": iterations, "training_rule": rule + _optimiser_rule(prof)}


def _budget_epochs(prof: Dict[str, Any], iterations: int, forward_s: float, backward_s: float) -> Tuple[int, int]:
    """(forward, backward) epochs: forward_share of the training budget for the diffusion model, the rest for the
    backward translation, at the given seconds per iteration, 10 % for validation."""
    budget, share = prof["training_budget_s"], prof["forward_share"]
    return (max(MIN_EPOCHS, int(budget * share / (forward_s * iterations * 1.1))),
            max(MIN_EPOCHS, int(budget * (1 - share) / (backward_s * iterations * 1.1))))


def _optimiser_rule(prof: Dict[str, Any]) -> str:
    return f"; AdamW lr {prof['initial_lr']:g} (authors: AdamW 1e-4, batch 32, 100k iterations)"


def with_measured_epochs(planned: Dict[str, Any], seconds: Dict[str, float]) -> Dict[str, Any]:
    """The cpu plan with both stages' epochs from the planning machine's seconds per training iteration
    (`seconds["forward"]`, `seconds["backward"]`: the engine's step timed on a synthetic batch + the data
    pipeline) instead of the reference CPU's GFLOP/s."""
    prof = PROFILES["cpu"]
    iterations = int(planned["iterations_per_epoch"])
    forward_epochs, backward_epochs = _budget_epochs(prof, iterations, seconds["forward"], seconds["backward"])
    rule = (f"cpu profile: {prof['training_budget_s'] / 60:g} min ({prof['forward_share']:.0%} forward) / (s/iteration "
            f"x {iterations} iterations x 1.1 validation) at {seconds['forward']:.3f} s (forward) and "
            f"{seconds['backward']:.3f} s (backward) per iteration, measured on the planning machine: the engine's "
            "step on a synthetic batch + the data pipeline (`--throughput reference`: the reference CPU's GFLOP/s)")
    return {**planned, "forward_epochs": forward_epochs, "backward_epochs": backward_epochs,
            "training_rule": rule + _optimiser_rule(prof)}
