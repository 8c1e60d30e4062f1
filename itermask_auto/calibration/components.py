"""The smallest component a segmentation keeps (inference.component_filter "healthy_validation"): one more voxel
than the largest connected component in the fold's healthy validation cases' segmentations, made as prediction
makes them (the calibrated thresholds and margin). Every component there is a false positive, so the size is
chosen without a label; see inference/components.py for why and what it costs (lesions smaller than it)."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from itermask_auto.inference.components import COMPONENT_FILTERS, largest_component_voxels

logger = logging.getLogger(__name__)


def check_component_filter(name: str) -> None:
    if name not in COMPONENT_FILTERS:
        raise ValueError(f"unknown inference.component_filter '{name}' ({' | '.join(COMPONENT_FILTERS)})")


def choose_min_component(predictor, calibration: Dict[str, Any], segment_inputs: Dict[str, Any],
                         case_ids: List[str]) -> Dict[str, Any]:
    """{"min_component_voxels", "min_component_choice"} from each case's (InferenceResult, brain mask)."""
    predictor.calibration = dict(calibration)   # the thresholds and margin prediction will use, no filter yet
    largest = {}
    for case in case_ids:
        result, brain = segment_inputs[case]
        seg, _ = predictor.segment(result, brain)
        largest[case] = largest_component_voxels(seg)
    size = max(largest.values(), default=0) + 1
    logger.info("segmentation components under %d voxels dropped: the largest in the healthy validation "
                "segmentations held %d (per case: %s)", size, size - 1, largest)
    return {"min_component_voxels": size,
            "min_component_choice": {"largest_healthy_component_voxels": largest,
                                     "rule": "1 + the largest face-connected component of the healthy validation "
                                             "cases' segmentations at the calibrated thresholds"}}
