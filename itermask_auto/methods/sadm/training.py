"""SADM's training steps (plain functions over a batch; the engine owns the loop).

Stage 1 ("diffusion"): x₀ = the healthy slice in model space, t ~ U[0, T), ε = simplex (or Gaussian) noise,
x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (DDPMScheduler.add_noise), loss = L1(network(x_t, t), x₀) over the slice.
Stage 2 ("delineation", stage 1 frozen): each healthy training slice is first photometrically augmented
(augment.py, plan `delineation_augmentation`; not in validation), then gets a synthetic anomaly (anomalies.py), or in
training (not validation) is replaced by a labelled slice (--labelled); x̂ = the frozen diffusion model's x₀
from x_t of the ANOMALOUS slice at t ~ U(delineation_t_range);
loss = BCE-with-logits(SiameseUNet(x, x − x̂), mask) (+ dice_weight · soft Dice).
Every draw (t, noise, anomaly, labelled slice) comes from the sample's `batch["seed"]`."""
from __future__ import annotations

import functools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from itermask_auto.methods.sadm.anomalies import synthetic_batch
from itermask_auto.methods.sadm.augment import build_photometric, photometric_batch
from itermask_auto.methods.sadm.networks import build_scheduler
from itermask_auto.methods.sadm.noise import diffusion_noise
from itermask_auto.training.data import crop_padded, slice_brain_centre

SALT_DIFFUSION, SALT_ANOMALY, SALT_DELINEATION_NOISE, SALT_PHOTOMETRIC = 11, 23, 37, 41


def to_model_space(z, plan: Dict):
    """The planned fixed affine map of the z-scored intensities (background -> 0); works on arrays and tensors."""
    zero, one = float(plan["intensity_zero"]), float(plan["intensity_one"])
    return (z - zero) / (one - zero)


@functools.lru_cache(maxsize=4)
def _scheduler(timesteps: int, schedule: str):
    return build_scheduler({"timesteps": timesteps, "schedule": schedule})


def scheduler(plan: Dict):
    return _scheduler(int(plan["timesteps"]), str(plan["schedule"]))


def sample_rngs(seeds: torch.Tensor, salt: int) -> List[np.random.Generator]:
    return [np.random.default_rng([int(s), salt]) for s in seeds.tolist()]


def fit_slices(image: torch.Tensor, brain: torch.Tensor, size: Sequence[int],
               background: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop or pad (B, C, H, W) images and (B, H, W) brains to the planned slice size."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, brain
    out = torch.full((*image.shape[:2], *size), background, dtype=image.dtype)
    out_brain = torch.zeros((image.shape[0], *size), dtype=torch.bool)
    src, dst = [], []
    for have, want in zip(image.shape[-2:], size):
        lo = abs(have - want) // 2
        n = min(have, want)
        src.append(slice(lo, lo + n) if have > want else slice(0, n))
        dst.append(slice(lo, lo + n) if want > have else slice(0, n))
    out[(..., *dst)] = image[(..., *src)]
    out_brain[(slice(None), *dst)] = brain[(slice(None), *src)]
    return out, out_brain


def model_inputs(batch: Dict[str, torch.Tensor], plans, plan: Dict) -> Tuple[torch.Tensor, torch.Tensor]:
    """(model-space slices (B, C, H, W), brain (B, H, W)) of a batch, at the planned slice size, on the CPU."""
    image, brain = fit_slices(batch["image"], batch["brain"].bool(), plan["slice_size"],
                              float(plans.normalization.background_value))
    return to_model_space(image.float(), plan), brain


def noised(x0: torch.Tensor, t: torch.Tensor, rngs, plan: Dict) -> torch.Tensor:
    noise = diffusion_noise(rngs, x0.shape[1:], plan).to(x0.device)
    return scheduler(plan).add_noise(x0, noise, t.to(x0.device))


def diffusion_step(network, batch, ctx, plan: Dict) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction fp32, x₀, brain) of one stage-1 step."""
    x0, brain = model_inputs(batch, ctx.plans, plan)
    rngs = sample_rngs(batch["seed"], SALT_DIFFUSION)
    t = torch.tensor([int(rng.integers(0, int(plan["timesteps"]))) for rng in rngs], dtype=torch.long)
    x0 = x0.to(ctx.device)
    x_t = noised(x0, t, rngs, plan)
    with ctx.autocast():
        prediction = network(x_t, t.to(ctx.device))
    return prediction.float(), x0, brain.to(ctx.device)


def labelled_slice(labelled, rng: np.random.Generator, slice_axis: int, size: Sequence[int], background: float,
                   lesion_share: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (C, H, W) z-scored, brain, label) of a random slice of a random labelled case, centred on its brain;
    a slice holding lesion with probability `lesion_share` (when the case has one)."""
    case = labelled.cases[int(rng.integers(len(labelled.cases)))]
    other = tuple(a for a in range(3) if a != slice_axis)
    has_brain = np.flatnonzero(case.brain.any(axis=other))
    has_lesion = np.flatnonzero(case.label.any(axis=other))
    pool = has_lesion if has_lesion.size and rng.random() < lesion_share else has_brain
    index = int(pool[int(rng.integers(pool.size))])
    cut = [slice(None)] * 3
    cut[slice_axis] = index
    image, brain, label = case.data[(slice(None), *cut)], case.brain[tuple(cut)], case.label[tuple(cut)]
    centre = slice_brain_centre(brain)
    return (crop_padded(image, centre, size, background), crop_padded(brain[None], centre, size, False)[0],
            crop_padded(label[None], centre, size, False)[0])


def delineation_inputs(batch, ctx, plan: Dict,
                       frozen_diffusion: torch.nn.Module) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[str]]:
    """(anomalous slices, residual x − x̂, masks (B, 1, H, W) float, kinds) on ctx.device for one stage-2 step."""
    plans = ctx.plans
    config = plans.configuration(ctx.configuration)
    x, brain = model_inputs(batch, plans, plan)
    augmentation = plan.get("delineation_augmentation") or {}     # plans made before the key: none
    if augmentation and ctx.training:     # validation sees the slices as they are
        seeds = [int(rng.integers(2 ** 62)) for rng in sample_rngs(batch["seed"], SALT_PHOTOMETRIC)]
        transforms = build_photometric(augmentation, float(plan["intensity_one"]) - float(plan["intensity_zero"]))
        x = torch.from_numpy(photometric_batch(x.numpy(), brain.numpy(), seeds, transforms))
    rngs = sample_rngs(batch["seed"], SALT_ANOMALY)
    spacing = [s for a, s in enumerate(config.spacing) if a != config.slice_axis]
    images, masks, kinds = synthetic_batch(x.numpy(), brain.numpy(), spacing, list(plans.channel_names.values()),
                                           rngs, plan)
    labelled: Optional[object] = getattr(ctx, "labelled", None)
    if labelled is not None and labelled.cases and ctx.training:   # validation: synthetic anomalies only
        background = float(plans.normalization.background_value)
        for j, rng in enumerate(rngs):
            if rng.random() < float(plan["labelled_fraction"]):
                image, _, label = labelled_slice(labelled, rng, config.slice_axis, plan["slice_size"], background,
                                                 float(plan["labelled_lesion_slices"]))
                images[j], masks[j], kinds[j] = to_model_space(image, plan), label, "labelled"
    lo, hi = (int(v) for v in plan["delineation_t_range"])
    t = torch.tensor([int(rng.integers(lo, hi)) for rng in rngs], dtype=torch.long)
    x_a = torch.from_numpy(images).to(ctx.device)
    with torch.no_grad(), ctx.autocast():
        recon = frozen_diffusion(noised(x_a, t, sample_rngs(batch["seed"], SALT_DELINEATION_NOISE), plan),
                                 t.to(ctx.device)).float()
    target = torch.from_numpy(masks.astype(np.float32))[:, None].to(ctx.device)
    return x_a, x_a - recon, target, kinds


def delineation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float) -> torch.Tensor:
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
    if dice_weight > 0:
        p = torch.sigmoid(logits.float())
        dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
        loss = loss + dice_weight * (1 - dice)
    return loss
