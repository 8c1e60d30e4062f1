"""`anomaly_map auto`: which of sadm's maps is calibrated and segmented, chosen on the healthy validation scans only.

Each map's voxel threshold comes from the healthy validation scans at α; what a user needs is that the threshold
still gives a NEW healthy scan about α. So, per map, leave one validation scan out (with its automatic-mask variant,
when calibration scores both mask sources: the same scan), take the α threshold of the others' pooled values and
read the left-out scan's voxel FPR at it (calibration.thresholds.leave_one_out_fpr); the map with the smallest mean
|log(FPR / α)| over the scans (threshold_transfer_error) is chosen; ties keep the order of MAPS. No label is read.
On IXI the probability and the sum transfer worse than the SSIM map (0.66 and 0.69 against 0.40; docs/benchmarks.md,
"sadm's maps and a threshold that transfers")."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from itermask_auto.calibration.context import VARIANT_SEPARATOR
from itermask_auto.calibration.thresholds import leave_one_out_fpr, threshold_transfer_error
from itermask_auto.methods.sadm.inference import MAPS, sadm_maps, sadm_result

logger = logging.getLogger(__name__)
# Fewer scans make the choice a draw: on IXI, random subsets of the 29 validation scans agree with the choice of
# all 29 in 59 % of draws of 3 scans, 65 % of 5, 84 % of 10 and 99 % of 20 (docs/benchmarks.md).
MIN_SCANS = 10
RULE = ("the map whose healthy alpha threshold transfers best to a left-out healthy validation scan: smallest mean "
        "|log(FPR / alpha)| over the validation scans, each at the threshold of the others")


def map_choice(values: Dict[str, Sequence[np.ndarray]], alpha: float) -> Tuple[str, Dict[str, Dict[str, float]]]:
    """(chosen map, {map: transfer error and FPR / α figures}) from each map's per-scan healthy values."""
    table = {}
    for name in (m for m in MAPS if m in values):
        fpr = leave_one_out_fpr(values[name], alpha)
        table[name] = {"transfer_error": threshold_transfer_error(fpr, alpha),
                       "median_fpr_over_alpha": float(np.median(fpr) / alpha),
                       "max_fpr_over_alpha": float(fpr.max() / alpha)}
    if not table:
        raise ValueError(f"no sadm map to choose from (expected some of {', '.join(MAPS)})")
    return min(table, key=lambda name: table[name]["transfer_error"]), table


def scan_of(case: str) -> str:
    """The scan a calibration case id belongs to ("CASE@automatic" is CASE with an automatic brain mask)."""
    return case.split(VARIANT_SEPARATOR)[0]


def scored_values(predictor, plan: Dict[str, Any], maps: Dict[str, np.ndarray], brain_slices: int,
                  region: np.ndarray, name: str) -> np.ndarray:
    """The values calibration would score if `name` were the map: through the engine's postprocessing (the
    planned median filter, none by default), inside the scoring region."""
    result = sadm_result(maps, brain_slices, {**plan, "anomaly_map": name}, region, None)
    return predictor.postprocess(result, region).anomaly_map[region]


def calibrate_map_choice(predictor, plan: Dict[str, Any], context) -> Dict[str, Any]:
    """Infer every healthy validation case once (the maps the engine's scoring needs are kept in context.state),
    choose the map; returns the keys for calibration.json. A re-run inside a brain-rim margin keeps the choice of
    the first calibration (context.earlier), so the margin and the thresholds belong to one map."""
    alpha = float(predictor.plans.calibration.alpha)
    scans = sorted({scan_of(c) for c in context.cases})
    earlier = context.earlier.get("anomaly_map_choice")
    if earlier is None and len(scans) < MIN_SCANS:   # nothing to compare on: the stage-2 probability
        # the documented fallback of `auto` on small datasets, recorded in calibration.json: a line, not a warning
        logger.info("sadm anomaly_map auto: %d healthy validation scan(s), at least %d are needed to compare the "
                    "maps; the stage-2 probability is calibrated", len(scans), MIN_SCANS)
        return {"anomaly_map": "probability", "anomaly_map_choice": {
            "rule": RULE, "alpha": alpha, "maps": {}, "note": f"fewer than {MIN_SCANS} validation scans"}}
    local: Dict[str, Dict[str, np.ndarray]] = {}
    cached: Dict[str, Tuple[Dict[str, np.ndarray], int]] = {}
    for case in context.progress(context.my_cases, "sadm maps"):
        data, _, region, _ = context.load(case)
        start = time.perf_counter()
        maps, brain_slices = sadm_maps(predictor, plan, data, region)
        context.extra_seconds[case] = time.perf_counter() - start
        cached[case] = (maps, brain_slices)
        if earlier is None:
            local[case] = {name: scored_values(predictor, plan, maps, brain_slices, region, name) for name in MAPS}
    if earlier is not None:
        chosen, record = context.earlier["anomaly_map"], {**earlier, "kept_from": "the calibration without a margin"}
    else:
        gathered = context.gather(local)
        values: Dict[str, List[np.ndarray]] = {
            name: [np.concatenate([gathered[c][name] for c in context.cases if scan_of(c) == scan]) for scan in scans]
            for name in MAPS}
        chosen, table = map_choice(values, alpha)
        record = {"rule": RULE, "alpha": alpha, "scans": len(scans), "maps": table}
        logger.info("sadm anomaly map chosen on %d healthy validation scans: %s (transfer error %s)", len(scans),
                    chosen, ", ".join(f"{k} {v['transfer_error']:.3f}" for k, v in table.items()))
    for case, (maps, brain_slices) in cached.items():   # keep what scoring reads: the chosen map and stage 2's
        context.state[case] = ({k: maps[k] for k in {"probability", chosen}}, brain_slices)
    return {"anomaly_map": chosen, "anomaly_map_choice": record}
