"""Shared set-up of the sadm tests: tiny networks and recipes, phantom volumes with and without lesions."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.experiment_planning.plans import Plans
from trainer_fixtures import DATASET, SPACING, _normalise

SIZE_XYZ = (30, 30, 30)   # whole-slice patches of 32x32 hold every cropped phantom slice


def recipe(epochs: int, iterations: int, lr: float) -> Dict:
    return {"optimizer": "adam", "initial_lr": lr, "num_epochs": epochs, "iterations_per_epoch": iterations,
            "lr_schedule": "poly", "validation_iterations": 1}


def tiny_plan(epochs: Tuple[int, int] = (2, 2), iterations: Tuple[int, int] = (2, 2), **extra) -> Dict:
    """Overrides of the planned sadm parameters: small networks, 2 noise fields, short recipes."""
    return {"diffusion_channels": [16, 32, 32], "diffusion_head_channels": 16, "diffusion_norm_groups": 8,
            "siamese_features": [8, 16, 32, 64], "noise_bank_fields": 2, "inference_batch_slices": 32,
            "diffusion_recipe": recipe(epochs[0], iterations[0], 2e-3),
            "delineation_recipe": recipe(epochs[1], iterations[1], 2e-3), **extra}


def set_method_plan(root: Path, overrides: Dict) -> Plans:
    path = Path(root) / "preprocessed" / DATASET / "itermask_plans.json"
    plans = Plans.load(path)
    plans.method_plans["sadm"] = overrides
    plans.save(path)
    return plans


LESION_CENTRES_MM = ((9.0, 8.0, 2.0), (-11.0, -6.0, -3.0))   # world mm, inside the 60 mm field of view


def phantom_pair(seed: int, contrast: float = 0.8) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(healthy (1, Z, Y, X), lesioned (1, Z, Y, X), brain, lesion) of one phantom head, z-scored like the
    fixtures' preprocessed cases and cropped to the same box."""
    heads = [make_phantom(seed, size=SIZE_XYZ, spacing=SPACING[::-1], skull=False, anatomy_scale=0.5,
                          lesion_contrast=contrast, lesion_radius_mm=(4.0, 6.0), lesion_centers_world=centres)
             for centres in (None, LESION_CENTRES_MM)]
    images = [sitk.GetArrayFromImage(h.image).astype(np.float32) for h in heads]
    brain = sitk.GetArrayFromImage(heads[0].brain_mask).astype(bool)
    lesion = sitk.GetArrayFromImage(heads[1].label).astype(bool) & brain
    box = tuple(slice(max(a.min() - 2, 0), a.max() + 3) for a in np.nonzero(brain))
    out = [_normalise(im[box], brain[box])[None] for im in images]
    return out[0], out[1], brain[box], lesion[box]
