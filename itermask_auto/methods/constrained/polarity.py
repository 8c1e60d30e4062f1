"""Which direction of the attention marks an anomaly, chosen without any lesion mask of a test set.

The authors take high attention as anomalous: the constraint (or the entropy term) spreads the attention of a
healthy brain evenly, and an anomaly should pull more. Measured on IXI (docs/benchmarks.md, constrained section),
the trained VAEs do the reverse on T1-dark lesions: the attention drops inside them (voxel AUROC 0.47 and 0.28), so
the authors' map ranks them below healthy tissue. The polarity is therefore a planned choice:
- "high": the map as the authors read it; "low": its mirror (max − map); "two_sided": |map − its in-brain median|
  (no direction assumed);
- "auto" (the plan's default): at calibration, the project's generated lesions (evaluation/synthetic_lesions.py:
  blob shapes, intensity rule with its sign from the channel name, e.g. darker in T1; the generator reads no file)
  are written into `polarity_cases` of the fold's HEALTHY VALIDATION scans, and the polarity with the highest
  pooled voxel AUPRC on them is kept (ties: the authors' "high"). Those lesions follow the same intensity rule as
  the benchmark's synthetic test sets (other scans, other shapes), so those rows are not independent of the choice;
  MSLUB is. Folds calibrated before this key read the map as "high"."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from itermask_auto.calibration.context import VARIANT_SEPARATOR
from itermask_auto.evaluation.metrics import average_precision
from itermask_auto.evaluation.synthetic_lesions import (apply_lesion_intensity, blob_lesions, channel_sign,
                                                        component_contrasts)
from itermask_auto.methods.constrained.label_free import evenly_spread

logger = logging.getLogger(__name__)

POLARITIES = ("high", "low", "two_sided")
AUTHORS_POLARITY = "high"


def orient(amap: np.ndarray, region: np.ndarray, polarity: str) -> np.ndarray:
    """The anomaly map read in `polarity` (0 outside the region, non-negative inside)."""
    if polarity not in POLARITIES:
        raise ValueError(f"unknown map_polarity '{polarity}' ({' | '.join(POLARITIES)} | auto)")
    if polarity == "high" or not region.any():
        return amap
    out = np.zeros(amap.shape, np.float32)
    values = amap[region]
    out[region] = values.max() - values if polarity == "low" else np.abs(values - np.median(values))
    return out


def with_generated_lesions(data: np.ndarray, brain: np.ndarray, spacing: Sequence[float], channel_names: Sequence[str],
                           intensity_range: Sequence[float], rng: np.random.Generator,
                           lesions: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """(data with generated blobs, their mask) for one preprocessed (C, Z, Y, X) healthy volume; the intensity
    rule runs in the network's [0, 1] range (clipped as the network sees it), mapped back afterwards."""
    count = int(rng.integers(lesions["count"][0], lesions["count"][1] + 1))
    label, _ = blob_lesions(brain, spacing, rng, count, radius_mm=tuple(lesions["radius_mm"]))
    if not label.any():
        return data, label
    lo, hi = float(intensity_range[0]), float(intensity_range[1])
    magnitudes = component_contrasts(label, rng, lesions["contrast"])
    out = data.astype(np.float32).copy()
    for c, name in enumerate(channel_names):
        unit = np.clip((out[c] - lo) / (hi - lo), 0.0, 1.0)
        changed, _ = apply_lesion_intensity(unit, label, brain, spacing, channel_sign(name) * magnitudes)
        out[c] = np.where(brain, lo + changed * (hi - lo), out[c])
    return out, label


def polarity_auprc(values: List[np.ndarray], truths: List[np.ndarray]) -> Dict[str, float]:
    """Pooled voxel AUPRC of each polarity; values[k] = case k's map (read as "high") inside its region, truths[k]
    = its lesion voxels there (each case is oriented on its own: max and median are per case)."""
    truth = np.concatenate(truths) if truths else np.zeros(0, bool)
    out = {}
    for polarity in POLARITIES:
        scores = np.concatenate([orient(v, np.ones(v.shape, bool), polarity) for v in values]) if values else truth
        out[polarity] = float(average_precision(scores, truth)) if truth.any() else float("nan")
    return out


def pick(auprc: Dict[str, float]) -> str:
    """The polarity with the highest AUPRC; the authors' on ties or when nothing was measured."""
    finite = {k: v for k, v in auprc.items() if np.isfinite(v)}
    if not finite:
        return AUTHORS_POLARITY
    best = max(finite.values())
    return AUTHORS_POLARITY if finite.get(AUTHORS_POLARITY) == best else max(finite, key=finite.get)


AttentionMap = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def choose_polarity(mp: Dict[str, Any], channel_names: Sequence[str], context, seed: int,
                    attention_map: AttentionMap) -> Dict[str, Any]:
    """calibration.json keys of the "auto" polarity: generated lesions in healthy validation scans (this rank's
    share, gathered), `attention_map(data, brain) -> (map read as "high", region)` per scan."""
    cases = evenly_spread([c for c in context.cases if VARIANT_SEPARATOR not in c], int(mp["polarity_cases"]))
    local = {}
    for case in context.progress(cases[context.ranks.rank::context.ranks.world_size],
                                 "map polarity: generated lesions in healthy validation cases"):
        data, _, brain, _ = context.load_unscored(case)
        rng = np.random.default_rng([seed, cases.index(case)])
        changed, label = with_generated_lesions(data, brain, context.spacing, channel_names, mp["intensity_range"], rng,
                                                mp["polarity_lesions"])
        amap, region = attention_map(changed, brain)
        local[case] = (amap[region], label[region])    # the region's values only: cheap to gather across ranks
    gathered = context.gather(local)
    auprc = polarity_auprc([gathered[c][0] for c in cases], [gathered[c][1] for c in cases])
    chosen = pick(auprc)
    logger.info("map polarity '%s' chosen on generated lesions in %d healthy validation cases (AUPRC %s)", chosen,
                len(cases), ", ".join(f"{k} {v:.3f}" for k, v in auprc.items()))
    return {"map_polarity": chosen, "polarity_auprc": auprc, "polarity_cases": cases,
            "polarity_rule": "highest pooled voxel AUPRC on generated lesions (project intensity rule, sign from "
                             "the channel name) written into healthy validation cases; no test scan, no mask file"}
