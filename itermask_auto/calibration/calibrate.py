"""Calibration of a trained fold on its healthy validation cases (read from the preprocessed folder and, for
automatic brain masks, from the healthy raw images; never from labelsTs).

1. Cases: the fold's healthy validation cases, and their automatic-mask variants where the plan asks for them
   (`calibration.brain_masks`: calibrate on the brain-mask source prediction will use, mask_sources.py).
2. Scoring margin: the plan's `inference.brain_erosion_mm`, or — with `calibration.brain_erosion_candidates_mm`
   — the smallest candidate whose outer shell holds no excess of healthy exceedances (rim.py), chosen on a first
   scoring of the cases with no margin.
3. The method's own calibration (IterMask3D's γ, IterMask2's τ, ...), then every case is scored and the engine
   sets the voxel threshold (healthy voxel FPR α), the detection threshold on the volume score, summaries, and
   the bounds a new healthy scan should respect (bounds.py).
Under torchrun the cases are split across ranks and gathered; rank 0 writes calibration.json."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from itermask_auto.calibration.bounds import healthy_bounds
from itermask_auto.calibration.components import choose_min_component
from itermask_auto.calibration.context import CalibrationContext
from itermask_auto.calibration.mask_sources import automatic_mask_loader, calibration_variants
from itermask_auto.calibration.rim import choose_erosion
from itermask_auto.calibration.thresholds import detection_threshold, summarize, voxel_threshold
from itermask_auto.inference.components import check_component_filter
from itermask_auto.inference.predictor import CALIBRATION_FILE, Predictor
from itermask_auto.inference.scoring_region import edge_distance_mm
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


def _score_cases(predictor: Predictor, context: CalibrationContext, keep_edges: bool) -> Dict[str, Dict[str, Any]]:
    """Score this rank's cases; returns {case: record with the scored map values} for every rank's cases."""
    method, local = predictor.spec, {}
    for case in context.progress(context.my_cases, "calibration"):
        data, hf, whole, _ = context.load_unscored(case)
        region = context.load(case)[2] if context.erosion_mm > 0 else whole
        start = time.perf_counter()
        result = predictor.postprocess(method.calibration_infer(predictor, case, data, hf, region, context), region)
        seconds = time.perf_counter() - start + context.extra_seconds.get(case, 0.0)
        local[case] = {
            "map": result.anomaly_map[region].astype(np.float32),
            "edges": edge_distance_mm(whole, predictor.config.spacing)[region] if keep_edges else None,
            "first": result.first_error[region].astype(np.float32) if result.first_error is not None else None,
            "score": predictor.volume_score(result),
            "record": {"tau": result.tau, "network_passes": result.passes, "windows": result.windows,
                       "seconds": round(seconds, 3), "scores": result.scores,
                       "tau_method": (result.fit or {}).get("method"), "shrink_iterations": result.shrink_iterations,
                       "scored_voxels": int(region.sum())},
        }
        logger.info("calibration %s: tau %.4g (absolute), %d passes, final mask %.2f%% of the brain, %.1f s", case,
                    result.tau, result.passes, 100 * result.scores.get("mask_fraction", 0.0), seconds)
    return context.gather(local)


def _calibrate_once(predictor: Predictor, context: CalibrationContext,
                    keep_edges: bool = False) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """The method's calibration, then every case scored with it: (method keys, scored cases)."""
    predictor.calibration = {"brain_erosion_mm": context.erosion_mm}
    method_keys = predictor.spec.calibrate(predictor, context)
    predictor.calibration = {**method_keys, "brain_erosion_mm": context.erosion_mm}
    return method_keys, _score_cases(predictor, context, keep_edges)


def calibrate_model_folder(fold_dir: str | Path, device: str = "cpu", checkpoint: str = "checkpoint_final.pth",
                           ranks: Ranks = SINGLE) -> Dict[str, Any]:
    """Calibrate a trained fold on its healthy validation cases; rank 0 writes calibration.json; returns it."""
    fold_dir = Path(fold_dir)
    predictor = Predictor.from_model_folder(fold_dir, device, checkpoint, use_calibration=False)
    plans, cal_plan = predictor.plans, predictor.plans.calibration
    check_component_filter(plans.inference.component_filter)
    healthy, note = calibration_cases(fold_dir)
    case_ids = calibration_variants(healthy, cal_plan.brain_masks)
    data_folder = preprocessed_root() / fold_dir.parents[1].name / predictor.config.data_identifier
    loader = automatic_mask_loader(plans, predictor.configuration, fold_dir.parents[1].name, data_folder)
    start = time.perf_counter()

    def context(erosion_mm: float, earlier: Optional[Dict[str, Any]] = None) -> CalibrationContext:
        return CalibrationContext(case_ids, data_folder, ranks, erosion_mm, predictor.config.spacing, loader,
                                  earlier=dict(earlier or {}))

    erosion, erosion_choice = float(plans.inference.brain_erosion_mm), None
    if cal_plan.brain_erosion_candidates_mm:
        method_keys, scored = _calibrate_once(predictor, context(0.0), keep_edges=True)
        erosion, table = choose_erosion([scored[c]["map"] for c in case_ids], [scored[c]["edges"] for c in case_ids],
                                        cal_plan.brain_erosion_candidates_mm, cal_plan.alpha)
        erosion_choice = {"candidates": table, "chosen_mm": erosion,
                          "rule": "smallest margin whose outer 2 mm shell holds <= 1.5x its share of the healthy "
                                  "exceedances at alpha (first scoring with no margin)"}
        logger.info("brain erosion %.1f mm chosen on the healthy validation maps: %s", erosion, table)
        if erosion > 0:   # the method calibrated again inside the margin, starting from what it found without
            method_keys, scored = _calibrate_once(predictor, context(erosion, earlier=method_keys))
    else:
        method_keys, scored = _calibrate_once(predictor, context(erosion))
    calibration = _thresholds(predictor, scored, case_ids, method_keys, erosion)
    if plans.inference.component_filter == "healthy_validation":
        calibration.update(choose_min_component(predictor, calibration, context(erosion)))
    calibration.update({"brain_erosion_choice": erosion_choice, "cases": case_ids, "case_source": note,
                        "brain_masks": cal_plan.brain_masks,
                        "data_folder": str(data_folder), "method": predictor.method, "checkpoint": checkpoint,
                        "ranks": ranks.world_size, "seconds": round(time.perf_counter() - start, 2)})
    if ranks.is_main:
        write_json(fold_dir / CALIBRATION_FILE, calibration)
        bound = calibration["voxel_fpr_bound"]
        bound_text = (f"a new healthy scan's voxel FPR <= {bound:.3g} at {cal_plan.bound_confidence:g} confidence"
                      if bound is not None else f"too few healthy validation cases ({len(case_ids)}) to bound a new "
                                                f"scan's voxel FPR at {cal_plan.bound_confidence:g} confidence")
        logger.info("wrote %s: voxel threshold %.4g (alpha %.3g achieved %.3g; %s), detection threshold %.4g "
                    "(healthy FPR <= %.3g)", fold_dir / CALIBRATION_FILE, calibration["voxel_threshold"],
                    cal_plan.alpha, calibration["alpha_achieved"], bound_text, calibration["detection_threshold"],
                    calibration["detection_fpr_bound"])
    return calibration


def _thresholds(predictor: Predictor, scored: Dict[str, Dict[str, Any]], case_ids: List[str],
                method_keys: Dict[str, Any], erosion: float) -> Dict[str, Any]:
    cal_plan = predictor.plans.calibration
    pooled = np.concatenate([scored[c]["map"] for c in case_ids])
    firsts = [scored[c]["first"] for c in case_ids if scored[c]["first"] is not None]
    pooled_first = np.concatenate(firsts) if firsts else np.zeros(0, np.float32)
    scores = np.asarray([scored[c]["score"] for c in case_ids], np.float64)
    fractions = np.asarray([scored[c]["record"]["scores"].get("mask_fraction", 0.0) for c in case_ids])
    voxel_thr = voxel_threshold(pooled, cal_plan.alpha)
    per_case_fpr = np.asarray([float(np.mean(scored[c]["map"] > voxel_thr)) for c in case_ids])
    detection = detection_threshold(scores, cal_plan.detection_rule, cal_plan.detection_quantile)
    per_case = {c: {**scored[c]["record"], "voxel_fpr": float(f)} for c, f in zip(case_ids, per_case_fpr)}
    return {
        "voxel_threshold": voxel_thr,
        "alpha": cal_plan.alpha,
        "alpha_achieved": float(np.mean(pooled > voxel_thr)),
        "voxel_thresholds": {f"{a:g}": voxel_threshold(pooled, a) for a in cal_plan.voxel_fpr_levels},
        **predictor.spec.calibrate_from_healthy_maps(pooled_first, cal_plan.alpha),
        **method_keys,
        "brain_erosion_mm": erosion,
        "detection_threshold": detection,
        "detection_rule": cal_plan.detection_rule,
        "detection_quantile": cal_plan.detection_quantile if cal_plan.detection_rule == "quantile" else None,
        "healthy_detection_fpr": float(np.mean(scores > detection)),
        **healthy_bounds(scores, detection, per_case_fpr, cal_plan.bound_confidence),
        "volume_score_name": predictor.spec.volume_score_name,
        "anomaly_map_summary": summarize(pooled),
        "first_pass_error_summary": summarize(pooled_first if pooled_first.size else pooled),
        "volume_score_summary": summarize(scores),
        "final_mask_fraction_summary": summarize(fractions),
        "healthy_final_mask_fraction": float(fractions.mean()),
        "per_case": per_case,
    }
