"""The constrained methods' own segmentation rule, which needs no anomalous image and no calibration set.

Rule (the authors' code, jusiro/constrained_anomaly_segmentation code/main.py, branch `thresholod_with_percentile`):
threshold = the 99th percentile of the anomaly maps of the healthy TRAINING images; segmentation = map > threshold.
Here: the in-brain map values of `label_free_cases` training cases of the fold (evenly spread over the sorted
training list; 0 = all), pooled; the percentile taken at an observed value. It is computed when the fold is
calibrated (the one hook that runs after training), but reads neither the validation cases nor any label; it is
stored in calibration.json as `label_free_threshold`, next to the engine's healthy-validation voxel threshold at
α, so that both rules can be compared. The authors pooled every pixel of their slices (background too); pooling
only brain voxels makes the percentile independent of how much background a volume holds."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from itermask_auto.calibration.thresholds import summarize
from itermask_auto.preprocessing.storage import load_case
from itermask_auto.utilities.atomic import read_json

logger = logging.getLogger(__name__)


def evenly_spread(cases: Sequence[str], n: int) -> List[str]:
    """n cases evenly spread over the sorted list (all when n is 0 or exceeds it)."""
    cases = sorted(cases)
    if n <= 0 or n >= len(cases):
        return cases
    return [cases[int(i)] for i in np.linspace(0, len(cases) - 1, n).round().astype(int)]


def training_cases(fold_dir: Path, n: int) -> List[str]:
    """n training cases of the fold evenly spread over the sorted list (all when n is 0 or exceeds it)."""
    path = Path(fold_dir) / "splits.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found - the fold's split is written by itermask_train")
    return evenly_spread(read_json(path)["train"], n)


def label_free_threshold(method, predictor, context) -> Dict[str, Any]:
    """calibration.json keys of the label-free rule, from this rank's share of the training cases, gathered."""
    mp = method.method_plan(predictor.plans)
    cases = training_cases(predictor.fold_dir, int(mp["label_free_cases"]))
    mine = cases[context.ranks.rank::context.ranks.world_size]
    local = {}
    for case in context.progress(mine, "label-free threshold: healthy training cases"):
        data, _, brain, _ = load_case(context.data_folder, case)
        brain = brain.astype(bool)
        result = method.attention_result(predictor, data, brain)
        local[case] = result.anomaly_map[brain].astype(np.float32)
    gathered = context.gather(local)
    pooled = np.concatenate([gathered[c] for c in cases])
    if pooled.size == 0:
        raise ValueError(f"{context.data_folder}: the label-free training cases hold no brain voxel")
    percentile = float(mp["label_free_percentile"])
    threshold = float(np.percentile(pooled, percentile, method="higher"))
    logger.info("label-free threshold %.4g: the %gth percentile of %d training cases' maps", threshold, percentile,
                len(cases))
    return {"label_free_threshold": threshold,
            "label_free_rule": f"{percentile:g}th percentile of the in-brain maps of {len(cases)} healthy training "
                               f"cases (authors' thresholod_with_percentile; no validation case, no label)",
            "label_free_cases": cases,
            "label_free_training_fraction_above": float(np.mean(pooled > threshold)),
            "label_free_map_summary": summarize(pooled)}
