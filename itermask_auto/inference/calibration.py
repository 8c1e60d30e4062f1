"""Thresholds from healthy validation data only (the honest protocol): fold_dir/calibration.json.

Reads the fold's validation cases (fold_dir/splits.json "val"; fold "all" has no held-out case, so its
training cases are used and the file says so) from the PREPROCESSED folder — never raw data, never labelsTs.
Runs the method's full inference on each (iterative methods in itermask3d mode, per-subject τ) and sets
- voxel_threshold: the (1 − α) quantile of the pooled healthy anomaly-map values in the brain, so about a
  fraction α (plans.calibration.alpha, default 0.01) of healthy brain voxels is segmented;
- itermask2_tau: the (1 − α) quantile of the pooled whole-brain-masked errors (first pass), the shrink
  threshold of itermask2 mode (IterMask2's τ_val, taken from healthy validation data);
- detection_threshold on the volume score ("top1_mean"): "max_healthy_score" = the largest healthy score
  (no healthy calibration scan flagged), or "quantile" = its detection_quantile."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from itermask_auto.inference.predictor import CALIBRATION_FILE, SCORE_KEY, Predictor
from itermask_auto.paths import preprocessed_root
from itermask_auto.preprocessing.storage import load_case
from itermask_auto.utilities.atomic import read_json, write_json

logger = logging.getLogger(__name__)

SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def calibration_cases(fold_dir: Path) -> tuple[List[str], str]:
    """(case ids, note) of the fold's healthy validation cases."""
    path = Path(fold_dir) / "splits.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found - the fold's split is written by itermask_train")
    split = read_json(path)
    if str(split.get("fold")) == "all":
        return list(split["train"]), "fold 'all' has no held-out cases: calibrated on its TRAINING cases (optimistic)"
    if not split.get("val"):
        raise ValueError(f"{path}: the fold has no validation cases to calibrate on")
    return list(split["val"]), "fold's healthy validation cases"


def _summary(values: np.ndarray) -> Dict[str, float]:
    if values.size == 0:
        return {}
    return {f"q{q}": float(np.quantile(values, q)) for q in SUMMARY_QUANTILES} | \
        {"mean": float(values.mean()), "max": float(values.max()), "n": int(values.size)}


def detection_threshold(scores: np.ndarray, rule: str, quantile: float) -> float:
    if rule == "max_healthy_score":
        return float(scores.max())
    if rule == "quantile":
        return float(np.quantile(scores, quantile))
    raise ValueError(f"unknown calibration.detection_rule '{rule}' (max_healthy_score | quantile)")


def calibrate_model_folder(fold_dir: str | Path, device: str = "cpu",
                           checkpoint: str = "checkpoint_final.pth") -> Dict[str, Any]:
    """Calibrate a trained fold on its healthy validation cases; writes and returns calibration.json."""
    fold_dir = Path(fold_dir)
    predictor = Predictor.from_model_folder(fold_dir, device, checkpoint, use_calibration=False)
    plans, cal_plan = predictor.plans, predictor.plans.calibration
    inference_plan = predictor.plans.inference
    if inference_plan.mode == "itermask2":  # calibration must not depend on the τ it is computing
        import dataclasses
        inference_plan = dataclasses.replace(inference_plan, mode="itermask3d")
    case_ids, note = calibration_cases(fold_dir)
    data_folder = preprocessed_root() / fold_dir.parents[1].name / predictor.config.data_identifier
    maps, firsts, scores, per_case = [], [], [], {}
    start = time.perf_counter()
    for case in case_ids:
        data, hf, brain, _ = load_case(data_folder, case)
        result, stats = predictor.infer(data, hf, brain, inference_plan=inference_plan)
        maps.append(result.anomaly_map[brain])
        firsts.append(result.first_error[brain] if result.first_error is not None else result.anomaly_map[brain])
        scores.append(result.scores[SCORE_KEY])
        per_case[case] = {"tau": result.tau, "network_passes": stats["network_passes"], "windows": stats["windows"],
                          "seconds": round(stats["seconds"], 3), "scores": result.scores,
                          "tau_method": (result.fit or {}).get("method")}
        logger.info("calibration %s: tau %.4g, %d passes, %.1f s", case, result.tau, stats["network_passes"],
                    stats["seconds"])
    pooled, pooled_first = np.concatenate(maps), np.concatenate(firsts)
    score_arr = np.asarray(scores, np.float64)
    voxel_thr = float(np.quantile(pooled, 1 - cal_plan.alpha, method="higher"))  # exceedances <= alpha
    calibration = {
        "voxel_threshold": voxel_thr,
        "alpha": cal_plan.alpha,
        "alpha_achieved": float(np.mean(pooled > voxel_thr)),
        "itermask2_tau": float(np.quantile(pooled_first, 1 - cal_plan.alpha, method="higher")),
        "detection_threshold": detection_threshold(score_arr, cal_plan.detection_rule, cal_plan.detection_quantile),
        "detection_rule": cal_plan.detection_rule,
        "detection_quantile": cal_plan.detection_quantile if cal_plan.detection_rule == "quantile" else None,
        "healthy_detection_fpr": float(np.mean(score_arr > detection_threshold(
            score_arr, cal_plan.detection_rule, cal_plan.detection_quantile))),
        "volume_score_name": SCORE_KEY,
        "anomaly_map_summary": _summary(pooled),
        "first_pass_error_summary": _summary(pooled_first),
        "volume_score_summary": _summary(score_arr),
        "per_case": per_case,
        "cases": case_ids,
        "case_source": note,
        "data_folder": str(data_folder),
        "method": predictor.method,
        "inference_mode": inference_plan.mode,
        "checkpoint": checkpoint,
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(fold_dir / CALIBRATION_FILE, calibration)
    logger.info("wrote %s: voxel threshold %.4g (alpha %.3g achieved %.3g), detection threshold %.4g",
                fold_dir / CALIBRATION_FILE, voxel_thr, cal_plan.alpha, calibration["alpha_achieved"],
                calibration["detection_threshold"])
    return calibration
