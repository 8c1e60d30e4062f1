"""`anomaly_map auto`: which of sadm's maps is calibrated and segmented, chosen on the healthy validation scans only.

Each map's voxel threshold comes from the healthy validation scans at α; what a user needs is that the threshold
still gives a NEW healthy scan about α. So, per map, leave one validation scan out, take the α threshold of the
others' pooled values and read the left-out scan's voxel FPR at it (calibration.thresholds.leave_one_out_fpr); the
map with the smallest mean |log(FPR / α)| over the scans (threshold_transfer_error) is chosen; ties keep the
order of MAPS. No label is read. On IXI the stage-2 probability, trained on the site's own slices, transfers worst
(docs/benchmarks.md, "sadm's maps and a threshold that transfers")."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from itermask_auto.calibration.thresholds import leave_one_out_fpr, threshold_transfer_error
from itermask_auto.methods.sadm.inference import MAPS, sadm_maps, sadm_result

logger = logging.getLogger(__name__)
RULE = ("the map whose healthy alpha threshold transfers best to a left-out healthy validation scan: smallest mean "
        "|log(FPR / alpha)| over the validation scans, each at the threshold of the others")


def map_choice(values: Dict[str, Sequence[np.ndarray]], alpha: float) -> Tuple[str, Dict[str, Dict[str, float]]]:
    """(chosen map, {map: transfer error and FPR / α quantiles}) from each map's per-scan healthy values."""
    table = {}
    for name in (m for m in MAPS if m in values):
        fpr = leave_one_out_fpr(values[name], alpha)
        table[name] = {"transfer_error": threshold_transfer_error(fpr, alpha),
                       "median_fpr_over_alpha": float(np.median(fpr) / alpha),
                       "max_fpr_over_alpha": float(fpr.max() / alpha)}
    if not table:
        raise ValueError(f"no sadm map to choose from (expected some of {', '.join(MAPS)})")
    return min(table, key=lambda name: table[name]["transfer_error"]), table


def scored_values(predictor, plan: Dict[str, Any], maps: Dict[str, np.ndarray], brain_slices: int,
                  region: np.ndarray, name: str) -> np.ndarray:
    """The values calibration would score if `name` were the map: through the engine's postprocessing (the
    planned median filter, none by default), inside the scoring region."""
    result = sadm_result(maps, brain_slices, {**plan, "anomaly_map": name}, region, None)
    return predictor.postprocess(result, region).anomaly_map[region]


def calibrate_map_choice(predictor, plan: Dict[str, Any], context) -> Dict[str, Any]:
    """Infer every healthy validation case once (the maps are kept in context.state for the engine's scoring),
    choose the map; returns the keys for calibration.json."""
    if len(context.cases) < 2:   # nothing to leave out: the stage-2 probability, the authors' segmentation
        logger.warning("sadm anomaly_map auto: %d healthy validation case(s), at least 2 are needed to compare the "
                       "maps; the stage-2 probability is calibrated", len(context.cases))
        return {"anomaly_map": "probability",
                "anomaly_map_choice": {"rule": RULE, "maps": {}, "note": "fewer than 2 validation cases"}}
    alpha = float(predictor.plans.calibration.alpha)
    local: Dict[str, Dict[str, np.ndarray]] = {}
    for case in context.progress(context.my_cases, "sadm maps"):
        data, _, region, _ = context.load(case)
        start = time.perf_counter()
        maps, brain_slices = sadm_maps(predictor, plan, data, region)
        context.state[case] = (maps, brain_slices)
        context.extra_seconds[case] = time.perf_counter() - start
        local[case] = {name: scored_values(predictor, plan, maps, brain_slices, region, name) for name in MAPS}
    gathered = context.gather(local)
    values: Dict[str, List[np.ndarray]] = {name: [gathered[c][name] for c in context.cases] for name in MAPS}
    chosen, table = map_choice(values, alpha)
    logger.info("sadm anomaly map chosen on %d healthy validation cases: %s (transfer error %s)", len(context.cases),
                chosen, ", ".join(f"{k} {v['transfer_error']:.3f}" for k, v in table.items()))
    return {"anomaly_map": chosen, "anomaly_map_choice": {"rule": RULE, "alpha": alpha, "maps": table}}
