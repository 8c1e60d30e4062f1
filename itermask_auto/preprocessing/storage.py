"""On-disk format of one preprocessed case: `CASE.npz` (arrays, compressed) + `CASE.json` (properties).

Arrays, canonical (z, y, x) order at the configuration's target spacing, cropped to the brain:
- `data`       float32 (C, Z, Y, X): normalised image channels, background = plan background value
- `hf`         float32 (C, Z, Y, X): high-frequency channel of each image channel (whole volume, once)
- `brain_mask` uint8   (Z, Y, X)
Properties hold what is needed to write a result back in the original geometry (see `export.py`)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from itermask_auto.imageio.errors import InputError
from itermask_auto.utilities.atomic import atomic_path, read_json, write_json


def save_case(folder: str | Path, case_id: str, data: np.ndarray, hf: np.ndarray, brain_mask: np.ndarray,
              properties: Dict[str, Any]) -> None:
    folder = Path(folder)
    if data.ndim != 4 or hf.shape != data.shape or brain_mask.shape != data.shape[1:]:
        raise ValueError(f"{case_id}: inconsistent shapes data {data.shape}, hf {hf.shape}, mask {brain_mask.shape}")
    with atomic_path(folder / f"{case_id}.npz", ".npz") as tmp:
        np.savez_compressed(tmp, data=data.astype(np.float32), hf=hf.astype(np.float32),
                            brain_mask=brain_mask.astype(np.uint8))
    write_json(folder / f"{case_id}.json", properties)


def load_case(folder: str | Path, case_id: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
    """Return (data, hf, brain_mask[bool], properties)."""
    folder = Path(folder)
    path = folder / f"{case_id}.npz"
    try:
        with np.load(path) as z:
            data, hf, brain_mask = z["data"], z["hf"], z["brain_mask"].astype(bool)
        properties = read_json(folder / f"{case_id}.json")
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(path, f"unreadable preprocessed case ({type(e).__name__}: {str(e)[:120]}); "
                               "re-run itermask_plan_and_preprocess") from None
    return data, hf, brain_mask, properties


def list_preprocessed_cases(folder: str | Path) -> List[str]:
    """Cases whose array and properties files are both present (a half-finished case is not listed)."""
    folder = Path(folder)
    return sorted(p.name[:-4] for p in folder.glob("*.npz")
                  if not p.name.startswith(".") and (folder / (p.name[:-4] + ".json")).exists())
