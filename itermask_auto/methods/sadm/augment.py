"""Stage 2's photometric augmentation: nnU-Net v2's default intensity transforms (batchgeneratorsv2) applied to a
healthy training slice, in model space, before its synthetic anomaly is made (plan key `delineation_augmentation`).

Why: the delineation network learns the training site's appearance. On the 1 mm MSLUB scans of another site,
whose normalised brains sit outside every IXI scan's intensity distribution, it marked 4.6 % of the non-lesion
brain after 20 epochs and 8.5 % after the planned 40 (docs/benchmarks.md, sadm sections). A slice whose global
brightness, contrast, gamma, blur or noise changed, with no anomaly label, teaches that such a change is normal.
The ranges and probabilities are nnU-Net v2's defaults (chosen on no test set), with two differences of form:
gamma is drawn uniformly from its range (nnU-Net draws it below 1 half the time, via BGContrast; here with
p 0.375, as measured on the real data), and model space has its zero at the background (z = −3), so a
brightness factor b maps z to b·z + 3(b − 1): a scaling and a shift in z. This stacks on the engine's own mild
augmentation of every training batch (training/data.py). Its noise range (0, 0.1) is
passed as `noise_variance` but batchgeneratorsv2 draws it as the noise's standard deviation, so it is kept here
as `noise_sd_z`, a standard deviation in z-score units, converted to model space. Left out: nnU-Net's inverted
gamma (an inverted T1 is not a site change) and its low-resolution simulation (every scan is resampled to the
plan's spacing)."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from itermask_auto.training.data import seeded_global_rngs

# nnU-Net v2's defaults (nnUNetTrainer.get_training_transforms): (range, probability) per transform; gamma and
# contrast compute their statistics over the whole slice, background included, before it is reset to 0
NNUNET_INTENSITY_DEFAULTS: Dict[str, list] = {
    "noise_sd_z": [[0.0, 0.1], 0.1], "blur_sigma_px": [[0.5, 1.0], 0.2],
    "brightness": [[0.75, 1.25], 0.15], "contrast": [[0.75, 1.25], 0.15], "gamma": [[0.7, 1.5], 0.3],
}
KEYS = tuple(NNUNET_INTENSITY_DEFAULTS)


def build_photometric(augmentation: Dict[str, list], z_per_model_unit: float) -> ComposeTransforms:
    """The transforms of a `delineation_augmentation` dict ({name: [[lo, hi], p]}; a name left out is not used).
    `z_per_model_unit`: z-score units per model-space unit (intensity_one − intensity_zero)."""
    unknown = sorted(set(augmentation) - set(KEYS))
    if unknown:
        raise ValueError(f"sadm delineation_augmentation: unknown {unknown} (known: {list(KEYS)})")
    transforms = []
    for name in KEYS:
        if name not in augmentation:
            continue
        (lo, hi), p = augmentation[name]
        if name == "noise_sd_z":   # batchgeneratorsv2's `noise_variance` is the standard deviation it draws
            scale = 1.0 / float(z_per_model_unit)
            transform = GaussianNoiseTransform((lo * scale, hi * scale), p_per_channel=1, synchronize_channels=True)
        elif name == "blur_sigma_px":
            transform = GaussianBlurTransform((lo, hi), synchronize_channels=False, synchronize_axes=False,
                                              p_per_channel=0.5)
        elif name == "brightness":
            transform = MultiplicativeBrightnessTransform((lo, hi), synchronize_channels=False, p_per_channel=1)
        elif name == "contrast":
            transform = ContrastTransform(BGContrast((lo, hi)), preserve_range=True, synchronize_channels=False,
                                          p_per_channel=1)
        else:
            transform = GammaTransform((lo, hi), p_invert_image=0, synchronize_channels=False, p_per_channel=1,
                                       p_retain_stats=1)
        transforms.append(RandomTransform(transform, float(p)))
    return ComposeTransforms(transforms)


def photometric_batch(images: np.ndarray, brains: np.ndarray, seeds: Sequence[int],
                      transforms: ComposeTransforms) -> np.ndarray:
    """Each (C, H, W) slice of `images` (model space, background 0) transformed with its own seed; the
    background outside the (B, H, W) `brains` stays 0, as in every unaugmented slice."""
    out = np.empty_like(images)
    for j, (image, brain, seed) in enumerate(zip(images, brains, seeds)):
        with seeded_global_rngs(int(seed)):
            changed = transforms(image=torch.from_numpy(np.ascontiguousarray(image)).clone())["image"].numpy()
        out[j] = np.where(brain[None], changed, 0).astype(images.dtype)
    return out
