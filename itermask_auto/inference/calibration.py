"""Thresholds from healthy validation data only (the honest protocol): fold_dir/calibration.json.

Reads the fold's validation cases (fold_dir/splits.json "val"; fold "all" has no held-out case, so its
training cases are used and the file says so) from the PREPROCESSED folder — never raw data, never labelsTs.
Runs the method's full inference on each (iterative methods in itermask3d mode, per-subject τ) and sets
- gamma (iterative methods): IterMask3D's knee slope γ = 0.01 belongs to the reference's error scale, which a
  shorter-trained network does not share (its knee then sits near the 65th percentile of healthy error and the
  final mask keeps a third of a healthy brain). So γ is calibrated in two phases: (1) sweep each healthy case
  once and find the smallest γ whose per-subject τ reaches the case's own (1 − α) quantile of whole-brain-masked
  error (a healthy brain should end with about α of it masked); γ = the `gamma_case_quantile` of these per-case
  values; (2) shrink each case with its τ at that γ, re-using the phase-1 sweep (no pass is run twice). τ stays
  per subject; only its scale is set on healthy data;
- voxel_threshold: the (1 − α) quantile of the pooled healthy anomaly-map values in the brain, so about a
  fraction α (plans.calibration.alpha, default 0.01) of healthy brain voxels is segmented;
- itermask2_tau: the (1 − α) quantile of the pooled whole-brain-masked errors (first pass), the shrink
  threshold of itermask2 mode (IterMask2's τ_val, taken from healthy validation data);
- detection_threshold on the volume score ("top1_mean"): "max_healthy_score" = the largest healthy score
  (no healthy calibration scan flagged), or "quantile" = its detection_quantile."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
from tqdm import tqdm

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.inference.iterative import SweepResult, itermask3d, sweep, sweep_schedule
from itermask_auto.inference.predictor import CALIBRATION_FILE, SCORE_KEY, Predictor
from itermask_auto.inference.threshold_fit import gamma_for_tau, prepare_curve
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


GAMMA_GRID = np.logspace(-4, 3, 141)  # 20 per decade; τ(γ) is a step function, finer grids change nothing


def calibrate_gamma(sweeps: Dict[str, SweepResult], targets: Dict[str, float], plan: InferencePlan,
                    case_quantile: float) -> tuple[float, Dict[str, float]]:
    """γ = `case_quantile` of the per-case smallest γ whose τ reaches the case's target (see module doc)."""
    per_case = {}
    for case, s in sweeps.items():
        curve = prepare_curve(s.i, s.t, plan.fit_max_threshold, plan.fit_min_r2)
        per_case[case] = gamma_for_tau(curve, targets[case], GAMMA_GRID)
    return float(np.quantile(list(per_case.values()), case_quantile)), per_case


def _run_cases(predictor: Predictor, data_folder: Path, case_ids: List[str], plan: InferencePlan,
               two_phase: bool, cal_plan) -> tuple[Dict[str, Any], Dict[str, Any]]:
    """Inference on every case; returns ({case: (result, stats, brain mask)}, γ info)."""
    results, gamma_info = {}, {}
    if two_phase:
        sweeps, targets, seconds, passes = {}, {}, {}, {}
        schedule = sweep_schedule(plan.sweep_steps, plan.sweep_max_percent)
        for case in tqdm(case_ids, desc="calibration sweep", unit="case"):
            data, hf, brain, _ = load_case(data_folder, case)
            brain = brain.astype(bool)
            start, rec = time.perf_counter(), predictor.reconstructor(data, hf, plan)
            sweeps[case] = sweep(rec, data, brain, schedule)
            targets[case] = float(np.quantile(sweeps[case].first_error[brain], 1 - cal_plan.alpha))
            seconds[case], passes[case] = time.perf_counter() - start, rec.passes
        gamma, per_case_gamma = calibrate_gamma(sweeps, targets, plan, cal_plan.gamma_case_quantile)
        gamma_info = {"gamma": gamma, "gamma_reference": plan.gamma, "gamma_per_case": per_case_gamma,
                      "gamma_case_quantile": cal_plan.gamma_case_quantile,
                      "gamma_target": f"per-case {1 - cal_plan.alpha:g} quantile of whole-brain-masked error"}
        logger.info("calibrated gamma %.4g (reference %.4g; per-case median %.4g)", gamma, plan.gamma,
                    float(np.median(list(per_case_gamma.values()))))
        plan = dataclasses.replace(plan, gamma=gamma)
        for case in tqdm(case_ids, desc="calibration shrink", unit="case"):
            data, hf, brain, _ = load_case(data_folder, case)
            brain = brain.astype(bool)
            start, rec = time.perf_counter(), predictor.reconstructor(data, hf, plan)
            result = itermask3d(rec, data, brain, plan, sweep_result=sweeps.pop(case))
            results[case] = (result, {"seconds": seconds[case] + time.perf_counter() - start,
                                      "network_passes": passes[case] + rec.passes, "windows": rec.windows}, brain)
        return results, gamma_info
    for case in tqdm(case_ids, desc="calibration", unit="case"):
        data, hf, brain, _ = load_case(data_folder, case)
        results[case] = (*predictor.infer(data, hf, brain, inference_plan=plan), brain.astype(bool))
    return results, gamma_info


def calibrate_model_folder(fold_dir: str | Path, device: str = "cpu",
                           checkpoint: str = "checkpoint_final.pth") -> Dict[str, Any]:
    """Calibrate a trained fold on its healthy validation cases; writes and returns calibration.json."""
    fold_dir = Path(fold_dir)
    predictor = Predictor.from_model_folder(fold_dir, device, checkpoint, use_calibration=False)
    if predictor.spec.inference == "itermask2":  # IterMask2: τ from random training masks (own module)
        from itermask_auto.inference.itermask2_calibration import calibrate_itermask2
        return calibrate_itermask2(fold_dir, device, checkpoint, predictor)
    cal_plan = predictor.plans.calibration
    # calibration must not depend on the τ or γ it is computing
    inference_plan = dataclasses.replace(predictor.plans.inference, mode="itermask3d")
    two_phase = predictor.spec.inference == "iterative" and inference_plan.gamma_rule == "calibrated"
    case_ids, note = calibration_cases(fold_dir)
    data_folder = preprocessed_root() / fold_dir.parents[1].name / predictor.config.data_identifier
    start = time.perf_counter()
    results, gamma_info = _run_cases(predictor, data_folder, case_ids, inference_plan, two_phase, cal_plan)
    maps, firsts, scores, fractions, per_case = [], [], [], [], {}
    for case in case_ids:
        result, stats, brain = results[case]
        maps.append(result.anomaly_map[brain])
        firsts.append(result.first_error[brain] if result.first_error is not None else result.anomaly_map[brain])
        scores.append(result.scores[SCORE_KEY])
        fractions.append(result.scores["mask_fraction"])
        per_case[case] = {"tau": result.tau, "network_passes": stats["network_passes"], "windows": stats["windows"],
                          "seconds": round(stats["seconds"], 3), "scores": result.scores,
                          "tau_method": (result.fit or {}).get("method")}
        logger.info("calibration %s: tau %.4g, %d passes, final mask %.2f%% of the brain, %.1f s", case, result.tau,
                    stats["network_passes"], 100 * result.scores["mask_fraction"], stats["seconds"])
    pooled, pooled_first = np.concatenate(maps), np.concatenate(firsts)
    score_arr = np.asarray(scores, np.float64)
    voxel_thr = float(np.quantile(pooled, 1 - cal_plan.alpha, method="higher"))  # exceedances <= alpha
    calibration = {
        "voxel_threshold": voxel_thr,
        "alpha": cal_plan.alpha,
        "alpha_achieved": float(np.mean(pooled > voxel_thr)),
        **gamma_info,
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
        "final_mask_fraction_summary": _summary(np.asarray(fractions, np.float64)),
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
