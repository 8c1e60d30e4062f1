"""Dataset fingerprint: per case and channel the geometry and brain intensity statistics, plus aggregates.

The brain mask each case used (given, derived from a skull-stripped scan, or from deepbet) is cached under
`<preprocessed dataset>/brain_masks/` so preprocessing does not skull-strip twice."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from itermask_auto.imageio.reader import read_channels
from itermask_auto.preprocessing.brain_mask import obtain_brain_mask
from itermask_auto.preprocessing.cropping import brain_bbox
from itermask_auto.preprocessing.orientation import orientation_code, reorientation_for
from itermask_auto.utilities.atomic import atomic_path
from itermask_auto.utilities.parallel import run_parallel

logger = logging.getLogger(__name__)

PERCENTILES = (0.5, 50.0, 99.5)


def case_fingerprint(case_id: str, channel_paths: List[Path], mask_path: Optional[Path],
                     mask_cache: Path) -> Dict[str, Any]:
    """Fingerprint one case and cache its brain mask (SimpleITK grid of the input) in `mask_cache`."""
    images = read_channels(channel_paths)
    brain_sitk, source, reason = obtain_brain_mask(images, channel_paths, mask_path)
    mask_image = sitk.GetImageFromArray(brain_sitk.astype(np.uint8))
    mask_image.CopyInformation(images[0])
    with atomic_path(mask_cache / f"{case_id}.nii.gz", ".nii.gz") as tmp:
        sitk.WriteImage(mask_image, str(tmp), useCompression=True)

    reo = reorientation_for(images[0].GetDirection())
    brain = reo.to_canonical(brain_sitk)
    spacing = reo.spacing_to_canonical(images[0].GetSpacing())
    bbox = brain_bbox(brain, [0, 0, 0])
    channels = []
    for path, image in zip(channel_paths, images):
        values = sitk.GetArrayViewFromImage(image)[brain_sitk].astype(np.float64)
        channels.append({
            "file": path.name,
            "percentiles": dict(zip([str(p) for p in PERCENTILES], map(float, np.percentile(values, PERCENTILES)))),
            "mean": float(values.mean()),
            "std": float(values.std()),
        })
    return {
        "case_id": case_id,
        "spacing": spacing,
        "shape": list(brain.shape),
        "orientation": orientation_code(images[0].GetDirection()),
        "direction": list(images[0].GetDirection()),
        "shape_after_crop": [b - a for a, b in bbox],
        "brain_volume_ml": float(brain.sum() * np.prod(spacing) / 1000.0),
        "brain_mask_source": source,
        "skull_stripped": source == "skull_stripped_input",
        "skull_strip_reason": reason,
        "channels": channels,
    }


def aggregate(cases: List[Dict[str, Any]]) -> Dict[str, Any]:
    spacings = np.array([c["spacing"] for c in cases])
    crops_mm = np.array([np.array(c["shape_after_crop"]) * np.array(c["spacing"]) for c in cases])
    n_channels = len(cases[0]["channels"])
    intensity = []
    for ch in range(n_channels):
        per_case = [c["channels"][ch] for c in cases]
        intensity.append({
            "median_of_percentiles": {p: float(np.median([c["percentiles"][p] for c in per_case]))
                                      for p in per_case[0]["percentiles"]},
            "median_mean": float(np.median([c["mean"] for c in per_case])),
            "median_std": float(np.median([c["std"] for c in per_case])),
        })
    orientations: Dict[str, int] = {}
    for c in cases:
        orientations[c["orientation"]] = orientations.get(c["orientation"], 0) + 1
    return {
        "num_cases": len(cases),
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "spacing_10th_percentile": np.percentile(spacings, 10, axis=0).tolist(),
        "median_shape_after_crop_mm": np.median(crops_mm, axis=0).tolist(),
        "median_brain_volume_ml": float(np.median([c["brain_volume_ml"] for c in cases])),
        "fraction_skull_stripped": float(np.mean([c["skull_stripped"] for c in cases])),
        "brain_mask_sources": sorted({c["brain_mask_source"] for c in cases}),
        "orientations": orientations,
        "intensity_per_channel": intensity,
    }


def extract_fingerprint(cases: Dict[str, List[Path]], masks: Dict[str, Path], mask_cache: Path,
                        num_processes: int = 1) -> Dict[str, Any]:
    """Fingerprint every case (in `num_processes` worker processes) and aggregate."""
    jobs = [(case_id, paths, masks.get(case_id), mask_cache) for case_id, paths in sorted(cases.items())]
    per_case = run_parallel(case_fingerprint, jobs, num_processes, desc="fingerprint")
    return {"cases": per_case, "aggregate": aggregate(per_case)}
