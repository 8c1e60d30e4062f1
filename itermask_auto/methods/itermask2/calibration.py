"""IterMask2's τ (τ_val) from the fold's healthy validation cases (preprocessed; never labelsTs).

Mask each healthy validation case with random TRAINING masks — in 2d one blob per slice that contains brain (as
the network saw in training), in 3d the union of RANDOM_BLOBS_3D blobs — reconstruct once with the masked
autoencoder, and take the `inference.itermask2_tau_percentile` (80th) percentile of the pooled squared error (mean
over channels) inside those masks. The engine then scores the same cases with that τ and sets the voxel
threshold, detection threshold and summaries as for every method (segmentation of itermask2 = its final mask;
the voxel threshold is kept for the evaluation's comparisons)."""
from __future__ import annotations

import logging
from typing import Any, Dict

import numpy as np

from itermask_auto.experiment_planning.plans import ConfigurationPlan, TrainingMaskPlan
from itermask_auto.methods.masked_reconstruction.procedures import squared_error
from itermask_auto.training.masks import blob_mask

logger = logging.getLogger(__name__)

RANDOM_BLOBS_3D = 4   # blobs per volume in 3d (a training patch holds one; a whole brain has room for several)


def random_training_mask(brain: np.ndarray, config: ConfigurationPlan, mask_plan: TrainingMaskPlan,
                         rng: np.random.Generator) -> np.ndarray:
    """Training-style blob masks over a whole volume: one per brain slice (2d) or RANDOM_BLOBS_3D blobs (3d)."""
    brain = brain.astype(bool)
    if len(config.patch_size) == 2:
        axis = config.slice_axis
        spacing = [s for i, s in enumerate(config.spacing) if i != axis]
        slices = [blob_mask(s, spacing, mask_plan, rng) if s.any() else np.zeros_like(s)
                  for s in np.moveaxis(brain, axis, 0)]
        return np.moveaxis(np.stack(slices), 0, axis)
    mask = np.zeros_like(brain)
    for _ in range(RANDOM_BLOBS_3D):
        mask |= blob_mask(brain, list(config.spacing), mask_plan, rng)
    return mask


def masked_error_tau(method, predictor, context) -> Dict[str, Any]:
    """calibration.json keys: itermask2_tau, its rule and the masked-error summary."""
    from itermask_auto.calibration.thresholds import summarize
    plans, plan = predictor.plans, predictor.plans.inference
    masked = {}
    for case in context.progress(context.my_cases, "calibration: random training masks"):
        data, hf, brain, _ = context.load(case)
        # one stream per case (seeded by the plan's seed and the case's rank in the list): the same masks
        # whatever the number of ranks
        rng = np.random.default_rng([plans.training.seed, context.cases.index(case)])
        mask = random_training_mask(brain, predictor.config, plans.training_masks, rng)
        recon = method.reconstructor(predictor, data, hf, plan)(mask)
        masked[case] = squared_error(data, recon, mask)[mask]
    masked_errors = np.concatenate([v for _, v in sorted(context.gather(masked).items())])
    if masked_errors.size == 0:
        raise ValueError(f"{context.data_folder}: the random training masks of the calibration cases are empty")
    tau = float(np.percentile(masked_errors, plan.itermask2_tau_percentile))
    return {"itermask2_tau": tau, "inference_mode": "itermask2",
            "itermask2_tau_rule": f"{plan.itermask2_tau_percentile:g}th percentile of the masked error under random "
                                  f"training masks on healthy validation cases",
            "masked_error_summary": summarize(masked_errors)}
