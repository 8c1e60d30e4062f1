"""Calibration of method itermask2 on the fold's healthy validation cases (preprocessed; never labelsTs).

τ (IterMask2's τ_val): mask each healthy validation case with random TRAINING masks — in 2d one blob per slice
that contains brain (as the network saw in training), in 3d the union of RANDOM_BLOBS_3D blobs — reconstruct
once with the masked autoencoder, and take the `inference.itermask2_tau_percentile` (80th) percentile of the
pooled squared error (mean over channels) inside those masks. Then the full IterMask2 procedure runs on the
same cases with that τ, and the voxel threshold, detection threshold and summaries are set exactly as
`calibration.py` does for the other methods (segmentation of itermask2 = its final mask; the voxel threshold is
kept for the evaluation's comparisons)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from itermask_auto.experiment_planning.plans import ConfigurationPlan, TrainingMaskPlan
from itermask_auto.inference.iterative import squared_error
from itermask_auto.inference.predictor import CALIBRATION_FILE, SCORE_KEY, Predictor
from itermask_auto.paths import preprocessed_root
from itermask_auto.preprocessing.storage import load_case
from itermask_auto.training.masks import blob_mask
from itermask_auto.utilities.atomic import write_json

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


def calibrate_itermask2(fold_dir: str | Path, device: str = "cpu", checkpoint: str = "checkpoint_final.pth",
                        predictor: Optional[Predictor] = None) -> Dict[str, Any]:
    """Writes and returns fold_dir/calibration.json (called by calibration.calibrate_model_folder)."""
    from itermask_auto.inference.calibration import _summary, calibration_cases, detection_threshold
    fold_dir = Path(fold_dir)
    predictor = predictor or Predictor.from_model_folder(fold_dir, device, checkpoint, use_calibration=False)
    plans, cal_plan, plan = predictor.plans, predictor.plans.calibration, predictor.plans.inference
    case_ids, note = calibration_cases(fold_dir)
    data_folder = preprocessed_root() / fold_dir.parents[1].name / predictor.config.data_identifier
    rng = np.random.default_rng(plans.training.seed)
    start = time.perf_counter()
    masked = []
    for case in case_ids:
        data, hf, brain, _ = load_case(data_folder, case)
        mask = random_training_mask(brain, predictor.config, plans.training_masks, rng)
        recon = predictor.reconstructor(data, hf, plan)(mask)
        masked.append(squared_error(data, recon, mask)[mask])
    masked_errors = np.concatenate(masked)
    if masked_errors.size == 0:
        raise ValueError(f"{data_folder}: the random training masks of the calibration cases are empty")
    tau = float(np.percentile(masked_errors, plan.itermask2_tau_percentile))
    predictor.calibration = {"itermask2_tau": tau}

    maps, firsts, scores, per_case = [], [], [], {}
    for case in case_ids:
        data, hf, brain, _ = load_case(data_folder, case)
        result, stats = predictor.infer(data, hf, brain)
        maps.append(result.anomaly_map[brain])
        firsts.append(result.first_error[brain])
        scores.append(result.scores[SCORE_KEY])
        per_case[case] = {"network_passes": stats["network_passes"], "windows": stats["windows"],
                          "seconds": round(stats["seconds"], 3), "scores": result.scores,
                          "shrink_iterations": result.shrink_iterations}
        logger.info("calibration %s: %d passes, final mask %.2f %% of the brain, %.1f s", case,
                    stats["network_passes"], 100 * result.scores["mask_fraction"], stats["seconds"])
    pooled, score_arr = np.concatenate(maps), np.asarray(scores, np.float64)
    voxel_thr = float(np.quantile(pooled, 1 - cal_plan.alpha, method="higher"))
    det = detection_threshold(score_arr, cal_plan.detection_rule, cal_plan.detection_quantile)
    calibration = {
        "voxel_threshold": voxel_thr, "alpha": cal_plan.alpha, "alpha_achieved": float(np.mean(pooled > voxel_thr)),
        "itermask2_tau": tau,
        "itermask2_tau_rule": f"{plan.itermask2_tau_percentile:g}th percentile of the masked error under random "
                              f"training masks on healthy validation cases",
        "masked_error_summary": _summary(masked_errors),
        "healthy_final_mask_fraction": float(np.mean([v["scores"]["mask_fraction"] for v in per_case.values()])),
        "detection_threshold": det, "detection_rule": cal_plan.detection_rule,
        "detection_quantile": cal_plan.detection_quantile if cal_plan.detection_rule == "quantile" else None,
        "healthy_detection_fpr": float(np.mean(score_arr > det)), "volume_score_name": SCORE_KEY,
        "anomaly_map_summary": _summary(pooled), "first_pass_error_summary": _summary(np.concatenate(firsts)),
        "volume_score_summary": _summary(score_arr), "per_case": per_case, "cases": case_ids, "case_source": note,
        "data_folder": str(data_folder), "method": predictor.method, "inference_mode": "itermask2",
        "checkpoint": checkpoint, "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(fold_dir / CALIBRATION_FILE, calibration)
    logger.info("wrote %s: itermask2 tau %.4g, healthy final mask %.2f %% of the brain, detection threshold %.4g",
                fold_dir / CALIBRATION_FILE, tau, 100 * calibration["healthy_final_mask_fraction"], det)
    return calibration
