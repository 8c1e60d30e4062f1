"""Raw dataset layout (nnU-Net v2's): DatasetXXX_Name/{dataset.json, imagesTr, masksTr, imagesTs, labelsTs}."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

from itermask_auto.imageio.errors import InputError

DATASET_RE = re.compile(r"^Dataset(\d{3})_(.+)$")
REQUIRED_KEYS = ("channel_names", "file_ending")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


def find_dataset(root: Path, dataset: str | int) -> Path:
    """Resolve a dataset given as an ID (`4`, `004`), a name (`IXI_T1`) or a full folder name."""
    root = Path(root)
    text = str(dataset)
    candidates = [p for p in (root.iterdir() if root.is_dir() else []) if p.is_dir() and DATASET_RE.match(p.name)]
    if text.isdigit():
        hits = [p for p in candidates if int(DATASET_RE.match(p.name).group(1)) == int(text)]
    else:
        hits = [p for p in candidates if p.name == text or DATASET_RE.match(p.name).group(2) == text]
    if not hits:
        raise FileNotFoundError(f"no dataset '{text}' under {root} (found: {sorted(p.name for p in candidates)})")
    if len(hits) > 1:
        raise FileNotFoundError(f"dataset '{text}' is ambiguous under {root}: {sorted(p.name for p in hits)}")
    return hits[0]


def load_dataset_json(folder: Path) -> Dict:
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise InputError(path, "dataset.json not found")
    try:
        with open(path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise InputError(path, "must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise InputError(path, f"missing key(s) {missing}")
    if not isinstance(meta["channel_names"], dict) or not meta["channel_names"]:
        raise InputError(path, "'channel_names' must be a non-empty object like {\"0\": \"T1\"}")
    keys = sorted(meta["channel_names"], key=lambda k: int(k) if str(k).isdigit() else -1)
    if keys != [str(i) for i in range(len(keys))]:
        raise InputError(path, f"'channel_names' keys must be 0..N-1, got {list(meta['channel_names'])}")
    if not str(meta["file_ending"]).startswith("."):
        raise InputError(path, f"'file_ending' must start with '.', got {meta['file_ending']!r}")
    return meta


def list_cases(images_dir: Path, num_channels: int, file_ending: str,
               problems: Optional[Dict[str, str]] = None) -> Dict[str, List[Path]]:
    """Map case id -> its channel files (CASE_0000<ending>, ...).

    A misnamed file or a case with missing/extra channels is an InputError; with a `problems` dict (prediction:
    one bad case must not stop the folder) it is recorded there instead ({case or file name: one-line error})
    and left out."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(images_dir, "folder not found")

    def bad(key: str, error: InputError) -> None:
        if problems is None:
            raise error
        problems[key] = str(error)

    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    found: Dict[str, Dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if p.name.startswith("."):
            continue
        m = pattern.match(p.name)
        if not m:
            bad(p.name, InputError(p, f"not named CASE_XXXX{file_ending} (nnU-Net channel naming)"))
            continue
        found.setdefault(m.group(1), {})[int(m.group(2))] = p
    cases: Dict[str, List[Path]] = {}
    for case, channels in found.items():
        expected = set(range(num_channels))
        if set(channels) != expected:
            missing = sorted(expected - set(channels))
            extra = sorted(set(channels) - expected)
            what = f"missing channel file(s) {[f'{case}_{c:04d}{file_ending}' for c in missing]}" if missing \
                else f"unexpected channel(s) {extra} (dataset.json names {num_channels})"
            bad(case, InputError(images_dir / f"{case}_{(missing or extra)[0]:04d}{file_ending}", what))
            continue
        cases[case] = [channels[c] for c in range(num_channels)]
    return cases
