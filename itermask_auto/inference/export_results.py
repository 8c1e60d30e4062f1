"""Write one case's results in the input's geometry: CASE_anomaly.nii.gz (float32), CASE_seg.nii.gz (uint8),
optional CASE_masks/pass_XX.nii.gz, and CASE.json last (its presence marks the case as finished).

Every file is written under a temporary name and renamed. `export_case` takes plain arrays + properties so
it can run in a worker process (-nps). Images are NIfTI unless the caller asks for another ending (the input's
own format: .nii, .mha, .nrrd); CASE.json names the files it belongs to."""
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
NOT_CASE_FILES = {SUMMARY_FILE, "summary.json"}   # JSON files in an output folder that are not CASE.json
TABLE_KEYS = ("volume_score", "anomalous", "tau", "network_passes", "windows", "seconds", "segmentation_rule")


def case_files(output_dir: Path, case_id: str, ending: str = NIFTI) -> Dict[str, Path]:
    output_dir = Path(output_dir)
    return {"anomaly": output_dir / f"{case_id}_anomaly{ending}", "seg": output_dir / f"{case_id}_seg{ending}",
            "json": output_dir / f"{case_id}.json"}


def _recorded_files(output_dir: Path, case_id: str) -> Optional[Dict[str, Path]]:
    """The files CASE.json says it belongs to (NIfTI names for a CASE.json without the list); None if absent."""
    path = Path(output_dir) / f"{case_id}.json"
    if not path.is_file():
        return None
    try:
        info = read_json(path)
    except (OSError, ValueError):
        return None
    names = info.get("files") if isinstance(info, dict) else None
    if not isinstance(names, dict) or not {"anomaly", "seg"} <= set(names):
        return {k: p for k, p in case_files(output_dir, case_id).items() if k != "json"} if isinstance(info, dict) \
            else None
    return {k: Path(output_dir) / str(names[k]) for k in ("anomaly", "seg")}


def is_case_done(output_dir: Path, case_id: str) -> bool:
    files = _recorded_files(output_dir, case_id)
    return files is not None and all(p.is_file() for p in files.values())


def export_case(output_dir: Path, case_id: str, anomaly: np.ndarray, seg: np.ndarray, properties: Dict[str, Any],
                summary: Dict[str, Any], masks: Optional[Sequence[np.ndarray]] = None,
                ending: str = NIFTI) -> Dict[str, Any]:
    """Arrays on the preprocessed grid -> files in the input's geometry. Returns the summary written.

    All images are written to temporary names first and renamed only once every one of them is complete, so a
    failure part-way (disk full) leaves neither a new file nor a damaged old one; CASE.json comes last."""
    from itermask_auto.preprocessing.export import to_original_geometry
    files = case_files(output_dir, case_id, ending)
    images = [(sitk.Cast(to_original_geometry(anomaly.astype(np.float32), properties, order=1), sitk.sitkFloat32),
               files["anomaly"]),
              (sitk.Cast(to_original_geometry(seg.astype(np.uint8), properties, order=0), sitk.sitkUInt8),
               files["seg"])]
    for k, m in enumerate(masks or []):
        images.append((sitk.Cast(to_original_geometry(m.astype(np.uint8), properties, order=0), sitk.sitkUInt8),
                       Path(output_dir) / f"{case_id}_masks" / f"pass_{k:02d}{ending}"))
    with ExitStack() as stack:  # every rename happens on a clean exit; on an error every temporary is removed
        for image, path in images:
            sitk.WriteImage(image, str(stack.enter_context(atomic_path(path, ending))), True)
    summary = {"case": case_id, **summary, "files": {k: p.name for k, p in files.items() if k != "json"},
               "input_files": properties.get("channel_files"),
               "brain_mask_source": properties.get("brain_mask_source")}
    write_json(files["json"], summary)
    return summary


def read_case_summary(output_dir: Path, case_id: str) -> Dict[str, Any]:
    return read_json(Path(output_dir) / f"{case_id}.json")


def finished_cases(output_dir: Path) -> Dict[str, Dict[str, Any]]:
    """Every finished case in the folder, whichever run wrote it: {case: CASE.json content}."""
    found = {}
    for path in sorted(Path(output_dir).glob("*.json")):
        case = path.name[: -len(".json")]
        if path.name in NOT_CASE_FILES or path.name.startswith(".") or not is_case_done(output_dir, case):
            continue
        try:
            info = read_json(path)
        except (OSError, ValueError):
            continue  # being replaced right now by another run (rename): that run's summary will list it
        if isinstance(info, dict) and info.get("case") == case:
            found[case] = info
    return found


def write_folder_summary(output_dir: Path, header: Dict[str, Any], attempted: Sequence[str],
                         failures: Dict[str, str]) -> Path:
    """predictions.json from the CASE.json files present, so that runs writing into one folder at the same time
    (or one after the other) lose none of each other's cases; the failures of this run replace those of earlier
    runs for the cases (or files) it attempted, the others are kept until a run finishes them.

    The read-merge-write happens under an exclusive lock on OUT/.predictions.json.lock: `filelock` (already
    installed as a dependency of torch) takes an flock on Linux and works on the other platforms too."""
    from filelock import FileLock
    output_dir = Path(output_dir)
    path = output_dir / SUMMARY_FILE
    with FileLock(str(output_dir / f".{SUMMARY_FILE}.lock")):
        cases = finished_cases(output_dir)
        earlier = _earlier_failures(path)
        merged = {c: m for c, m in earlier.items() if c not in set(attempted) and c not in cases}
        merged.update(failures)  # even for a case with older outputs: this run could not redo it
        table: List[Dict[str, Any]] = [{"case": c, **{k: s.get(k) for k in TABLE_KEYS},
                                        "in_training_range": (s.get("input_check") or {}).get("in_training_range")}
                                       for c, s in sorted(cases.items())]
        write_json(path, {**header, "n_cases": len(cases), "n_failed": len(merged), "cases": table,
                          "failures": dict(sorted(merged.items()))})
    return path


def _earlier_failures(path: Path) -> Dict[str, str]:
    try:
        failures = read_json(path).get("failures", {}) if path.is_file() else {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in failures.items()} if isinstance(failures, dict) else {}
