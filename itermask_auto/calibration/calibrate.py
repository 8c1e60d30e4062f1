"""Calibration of a trained fold on its healthy validation cases (read from the preprocessed folder; never from
labelsTs): the method's own calibration first (IterMask3D's γ, IterMask2's τ, ...), then every case is scored
and the engine sets the voxel threshold (healthy voxel FPR α), the detection threshold on the volume score, and
summaries. Under torchrun the cases are split across ranks and gathered; rank 0 writes calibration.json."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from itermask_auto.calibration.context import CalibrationContext
from itermask_auto.calibration.thresholds import detection_threshold, summarize, voxel_threshold
from itermask_auto.inference.predictor import CALIBRATION_FILE, Predictor
from itermask_auto.paths import preprocessed_root
from itermask_auto.utilities.atomic import read_json, write_json
from itermask_auto.utilities.distributed import SINGLE, Ranks

logger = logging.getLogger(__name__)


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


def _score_cases(predictor: Predictor, context: CalibrationContext) -> Dict[str, Dict[str, Any]]:
    """Score this rank's cases; returns {case: record with the in-brain map values} for every rank's cases."""
    method, local = predictor.spec, {}
    for case in context.progress(context.my_cases, "calibration"):
        data, hf, brain, _ = context.load(case)
        start = time.perf_counter()
        result = method.calibration_infer(predictor, case, data, hf, brain, context)
        seconds = time.perf_counter() - start + context.extra_seconds.get(case, 0.0)
        local[case] = {
            "map": result.anomaly_map[brain].astype(np.float32),
            "first": result.first_error[brain].astype(np.float32) if result.first_error is not None else None,
            "score": predictor.volume_score(result),
            "record": {"tau": result.tau, "network_passes": result.passes, "windows": result.windows,
                       "seconds": round(seconds, 3), "scores": result.scores,
                       "tau_method": (result.fit or {}).get("method"), "shrink_iterations": result.shrink_iterations},
        }
        logger.info("calibration %s: tau %.4g, %d passes, final mask %.2f%% of the brain, %.1f s", case, result.tau,
                    result.passes, 100 * result.scores.get("mask_fraction", 0.0), seconds)
    return context.gather(local)


def calibrate_model_folder(fold_dir: str | Path, device: str = "cpu", checkpoint: str = "checkpoint_final.pth",
                           ranks: Ranks = SINGLE) -> Dict[str, Any]:
    """Calibrate a trained fold on its healthy validation cases; rank 0 writes calibration.json; returns it."""
    fold_dir = Path(fold_dir)
    predictor = Predictor.from_model_folder(fold_dir, device, checkpoint, use_calibration=False)
    cal_plan = predictor.plans.calibration
    case_ids, note = calibration_cases(fold_dir)
    data_folder = preprocessed_root() / fold_dir.parents[1].name / predictor.config.data_identifier
    context = CalibrationContext(case_ids, data_folder, ranks)
    start = time.perf_counter()
    method_keys = predictor.spec.calibrate(predictor, context)
    predictor.calibration = dict(method_keys)          # the cases are scored with the method's calibration
    scored = _score_cases(predictor, context)
    pooled = np.concatenate([scored[c]["map"] for c in case_ids])
    firsts = [scored[c]["first"] for c in case_ids if scored[c]["first"] is not None]
    pooled_first = np.concatenate(firsts) if firsts else np.zeros(0, np.float32)
    scores = np.asarray([scored[c]["score"] for c in case_ids], np.float64)
    fractions = np.asarray([scored[c]["record"]["scores"].get("mask_fraction", 0.0) for c in case_ids])
    voxel_thr = voxel_threshold(pooled, cal_plan.alpha)
    detection = detection_threshold(scores, cal_plan.detection_rule, cal_plan.detection_quantile)
    calibration = {
        "voxel_threshold": voxel_thr,
        "alpha": cal_plan.alpha,
        "alpha_achieved": float(np.mean(pooled > voxel_thr)),
        "voxel_thresholds": {f"{a:g}": voxel_threshold(pooled, a) for a in cal_plan.voxel_fpr_levels},
        **predictor.spec.calibrate_from_healthy_maps(pooled_first, cal_plan.alpha),
        **method_keys,
        "detection_threshold": detection,
        "detection_rule": cal_plan.detection_rule,
        "detection_quantile": cal_plan.detection_quantile if cal_plan.detection_rule == "quantile" else None,
        "healthy_detection_fpr": float(np.mean(scores > detection)),
        "volume_score_name": predictor.spec.volume_score_name,
        "anomaly_map_summary": summarize(pooled),
        "first_pass_error_summary": summarize(pooled_first if pooled_first.size else pooled),
        "volume_score_summary": summarize(scores),
        "final_mask_fraction_summary": summarize(fractions),
        "healthy_final_mask_fraction": float(fractions.mean()),
        "per_case": {c: scored[c]["record"] for c in case_ids},
        "cases": case_ids,
        "case_source": note,
        "data_folder": str(data_folder),
        "method": predictor.method,
        "checkpoint": checkpoint,
        "ranks": ranks.world_size,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if ranks.is_main:
        write_json(fold_dir / CALIBRATION_FILE, calibration)
        logger.info("wrote %s: voxel threshold %.4g (alpha %.3g achieved %.3g), detection threshold %.4g",
                    fold_dir / CALIBRATION_FILE, voxel_thr, cal_plan.alpha, calibration["alpha_achieved"], detection)
    return calibration
