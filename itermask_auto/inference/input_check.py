"""Is an input like the training data? Compare each case with the training fingerprint (dataset_fingerprint.json).

A model trained on phantoms scores a real scan as anomalous everywhere; a model trained at 1 mm sees other
textures at 3 mm. Neither is an anomaly of the subject, so such a case gets a warning with the reason (log,
CASE.json "input_check", QC report) instead of a silently meaningless score. Checked, per case:

- voxel spacing, per axis (canonical order)          within [min / 1.25, max x 1.25] of the training cases
- field of view = image size x spacing, per axis     within [min / 1.5,  max x 1.5]
- brain volume (ml)                                  within [min / 1.3,  max x 1.3]
- intensity after normalisation, per channel:        within the training range widened by half its width
  (median - mean) / std of the brain voxels            (at least 0.15 on each side)

The intensity statistic is the skew of the brain's histogram in z units: scanner scale and offset cancel out,
and a lesion of a few percent of the brain barely moves a median (an upper percentile would flag the very
lesions the model is there to find). The tolerances allow for a training set that samples its population
sparsely; the training range itself comes from every training case of the fingerprint."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from itermask_auto.utilities.atomic import read_json

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "dataset_fingerprint.json"
SPACING_FACTOR = 1.25
FOV_FACTOR = 1.5
BRAIN_VOLUME_FACTOR = 1.3
INTENSITY_WIDENING = 0.5
INTENSITY_MIN_MARGIN = 0.15


def find_fingerprint(fold_dir: Optional[Path], dataset_name: str) -> Tuple[Optional[Path], List[str]]:
    """The fold folder's copy (trained models carry one), else the preprocessed dataset's; and where it looked."""
    looked = []
    if fold_dir is not None:
        looked.append(Path(fold_dir) / FINGERPRINT_FILE)
    try:
        from itermask_auto.paths import preprocessed_root
        looked.append(preprocessed_root() / dataset_name / FINGERPRINT_FILE)
    except Exception:  # noqa: BLE001 - $ITERMASK_preprocessed unset: the check is optional, prediction is not
        pass
    return next((p for p in looked if p.is_file()), None), [str(p) for p in looked]


@dataclass
class Range:
    name: str
    low: float
    high: float
    unit: str
    factor: Optional[float] = None    # multiplicative tolerance (positive quantities)
    margin: float = 0.0               # additive tolerance

    def allows(self, value: float) -> bool:
        if self.factor is not None:
            return self.low / self.factor <= value <= self.high * self.factor
        return self.low - self.margin <= value <= self.high + self.margin

    def describe(self, value: float) -> str:
        return f"{self.name} {_num(value)}{self.unit} (training {_num(self.low)} to {_num(self.high)}{self.unit})"


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _skew(median: float, mean: float, std: float) -> float:
    return (median - mean) / std if std > 0 else 0.0


class TrainingRanges:
    """Per-quantity ranges over the training cases of a fingerprint."""

    def __init__(self, fingerprint: Dict[str, Any], source: Path):
        cases = fingerprint["cases"]
        self.source = source
        spacing = np.array([c["spacing"] for c in cases], float)
        fov = np.array([np.multiply(c["shape"], c["spacing"]) for c in cases], float)
        axes = ("axis 0", "axis 1", "axis 2")
        self.spacing = [Range(f"voxel spacing ({a})", lo, hi, " mm", SPACING_FACTOR)
                        for a, lo, hi in zip(axes, spacing.min(0), spacing.max(0))]
        self.fov = [Range(f"field of view ({a})", lo, hi, " mm", FOV_FACTOR)
                    for a, lo, hi in zip(axes, fov.min(0), fov.max(0))]
        volumes = [c["brain_volume_ml"] for c in cases]
        self.brain_volume = Range("brain volume", min(volumes), max(volumes), " ml", BRAIN_VOLUME_FACTOR)
        self.intensity = []
        for k in range(len(cases[0]["channels"])):
            skews = [_skew(c["channels"][k]["percentiles"]["50.0"], c["channels"][k]["mean"], c["channels"][k]["std"])
                     for c in cases]
            lo, hi = min(skews), max(skews)
            margin = max(INTENSITY_WIDENING * (hi - lo), INTENSITY_MIN_MARGIN)
            self.intensity.append(Range(f"channel {k} intensity (median - mean) / std after normalisation",
                                        lo, hi, "", margin=margin))

    @classmethod
    def load(cls, fold_dir: Optional[Path], dataset_name: str) -> Optional["TrainingRanges"]:
        path, looked = find_fingerprint(fold_dir, dataset_name)
        if path is None:
            logger.info("no %s (looked in %s): inputs are not compared with the training data", FINGERPRINT_FILE,
                        " and ".join(looked) or "no folder")
            return None
        try:
            return cls(read_json(path), path)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            logger.info("%s: unreadable (%s): inputs are not compared with the training data", path,
                        type(e).__name__)
            return None

    def check(self, properties: Dict[str, Any], data: np.ndarray, brain: np.ndarray) -> List[str]:
        """Reasons why this preprocessed case lies outside the training range (empty: inside)."""
        spacing = np.asarray(properties["canonical_spacing"], float)
        fov = np.asarray(properties["canonical_shape"], float) * spacing
        pairs: List[Tuple[Range, float]] = list(zip(self.spacing, spacing)) + list(zip(self.fov, fov))
        pairs.append((self.brain_volume, float(properties["brain_volume_ml"])))
        pairs += list(zip(self.intensity, intensity_skews(data, brain)))
        return [r.describe(v) for r, v in pairs if not r.allows(v)]


def intensity_skews(data: np.ndarray, brain: np.ndarray) -> List[float]:
    """(median - mean) / std of each normalised channel in the brain: the statistic the ranges hold."""
    out = []
    for channel in data:
        values = channel[brain.astype(bool)].astype(np.float64)
        out.append(_skew(float(np.median(values)), float(values.mean()), float(values.std())) if values.size else 0.0)
    return out


def input_check_record(ranges: Optional[TrainingRanges], reasons: Sequence[str]) -> Dict[str, Any]:
    """What CASE.json keeps under "input_check"."""
    if ranges is None:
        return {"in_training_range": None, "warnings": [], "note": f"no {FINGERPRINT_FILE}: not checked"}
    return {"in_training_range": not reasons, "warnings": list(reasons), "fingerprint": str(ranges.source)}
