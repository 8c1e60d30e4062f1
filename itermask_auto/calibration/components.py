"""The smallest component a segmentation keeps (inference.component_filter "healthy_validation"): one more voxel
than the largest connected component in the fold's healthy validation cases' segmentations, made as prediction
makes them (the calibrated thresholds and margin). Every component there is a false positive, so the size is
chosen without a label; see inference/components.py for why and what it costs (lesions smaller than it)."""
from __future__ import annotations

import logging
from typing import Any, Dict

from itermask_auto.inference.components import largest_component_voxels

logger = logging.getLogger(__name__)


def choose_min_component(predictor, calibration: Dict[str, Any], context) -> Dict[str, Any]:
    """{"min_component_voxels", "min_component_choice"}: each validation case (this rank's share, gathered) is
    inferred and segmented again exactly as prediction will (`Predictor.infer` + `segment` under the finished
    calibration: the scoring above may reuse a cached first pass, whose shrink passes draw other noise)."""
    predictor.calibration = dict(calibration)   # the thresholds and margin prediction will use, no filter yet
    local = {}
    for case in context.progress(context.my_cases, "component sizes"):
        data, hf, brain, _ = context.load_unscored(case)
        result, _ = predictor.infer(data, hf, brain)
        seg, _ = predictor.segment(result, brain)
        local[case] = largest_component_voxels(seg)
    gathered = context.gather(local)
    largest = {case: gathered[case] for case in context.cases}   # in the fold's order on every rank
    size = max(largest.values(), default=0) + 1
    mode = predictor.plans.inference.mode
    logger.info("segmentation components under %d voxels dropped: the largest in the healthy validation "
                "segmentations held %d (per case: %s)", size, size - 1, largest)
    return {"min_component_voxels": size,
            "min_component_choice": {"largest_healthy_component_voxels": largest, "inference_mode": mode,
                                     "rule": "1 + the largest face-connected component of the healthy validation "
                                             "cases' segmentations, inferred as prediction infers them"}}
