"""Write one case's results in the input's geometry: CASE_anomaly.nii.gz (float32), CASE_seg.nii.gz (uint8),
optional CASE_masks/pass_XX.nii.gz, and CASE.json last (its presence marks the case as finished).

Every file is written under a temporary name and renamed. `export_case` takes plain arrays + properties so
it can run in a worker process (-nps)."""
from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from itermask_auto.utilities.atomic import atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

NIFTI = ".nii.gz"
SUMMARY_FILE = "predictions.json"


def case_files(output_dir: Path, case_id: str) -> Dict[str, Path]:
    output_dir = Path(output_dir)
    return {"anomaly": output_dir / f"{case_id}_anomaly{NIFTI}", "seg": output_dir / f"{case_id}_seg{NIFTI}",
            "json": output_dir / f"{case_id}.json"}


def is_case_done(output_dir: Path, case_id: str) -> bool:
    return all(p.is_file() for p in case_files(output_dir, case_id).values())


def write_image(image: sitk.Image, path: Path) -> None:
    with atomic_path(path, NIFTI) as tmp:
        sitk.WriteImage(image, str(tmp), True)


def export_case(output_dir: Path, case_id: str, anomaly: np.ndarray, seg: np.ndarray, properties: Dict[str, Any],
                summary: Dict[str, Any], masks: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Any]:
    """Arrays on the preprocessed grid -> files in the input's geometry. Returns the summary written.

    All images are written to temporary names first and renamed only once every one of them is complete, so a
    failure part-way (disk full) leaves neither a new file nor a damaged old one; CASE.json comes last."""
    from itermask_auto.preprocessing.export import to_original_geometry
    files = case_files(output_dir, case_id)
    images = [(sitk.Cast(to_original_geometry(anomaly.astype(np.float32), properties, order=1), sitk.sitkFloat32),
               files["anomaly"]),
              (sitk.Cast(to_original_geometry(seg.astype(np.uint8), properties, order=0), sitk.sitkUInt8),
               files["seg"])]
    for k, m in enumerate(masks or []):
        images.append((sitk.Cast(to_original_geometry(m.astype(np.uint8), properties, order=0), sitk.sitkUInt8),
                       Path(output_dir) / f"{case_id}_masks" / f"pass_{k:02d}{NIFTI}"))
    with ExitStack() as stack:  # every rename happens on a clean exit; on an error every temporary is removed
        for image, path in images:
            sitk.WriteImage(image, str(stack.enter_context(atomic_path(path, NIFTI))), True)
    summary = {"case": case_id, **summary, "files": {k: p.name for k, p in files.items() if k != "json"},
               "input_files": properties.get("channel_files"),
               "brain_mask_source": properties.get("brain_mask_source")}
    write_json(files["json"], summary)
    return summary


def read_case_summary(output_dir: Path, case_id: str) -> Dict[str, Any]:
    return read_json(case_files(output_dir, case_id)["json"])


def write_folder_summary(output_dir: Path, header: Dict[str, Any], cases: Dict[str, Dict[str, Any]],
                         failures: Dict[str, str]) -> Path:
    """predictions.json: model, per-case scores/decisions and the failed cases with their one-line errors."""
    keys = ("volume_score", "anomalous", "tau", "network_passes", "windows", "seconds", "segmentation_rule")
    table: List[Dict[str, Any]] = [{"case": c, **{k: s.get(k) for k in keys}} for c, s in sorted(cases.items())]
    path = Path(output_dir) / SUMMARY_FILE
    write_json(path, {**header, "n_cases": len(cases), "n_failed": len(failures), "cases": table,
                      "failures": dict(sorted(failures.items()))})
    return path
