"""Cross-validation folds over the healthy (= all preprocessed) cases, nnU-Net style.

`$ITERMASK_preprocessed/DatasetXXX/splits.json` = [{"train": [...], "val": [...]}, ...], created once with a
seeded shuffle and reused, so every method and configuration sees the same folds."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from itermask_auto.imageio.errors import InputError
from itermask_auto.utilities.atomic import read_json, write_json

logger = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
Split = Dict[str, List[str]]


def make_splits(case_ids: Sequence[str], num_folds: int, seed: int) -> List[Split]:
    """K folds (K = min(num_folds, n)); every case is validation in exactly one fold."""
    cases = sorted(case_ids)
    if len(cases) < 2:
        raise ValueError(f"need at least 2 cases for a train/validation split, got {len(cases)}")
    k = max(2, min(num_folds, len(cases)))
    order = np.random.default_rng(seed).permutation(len(cases))
    folds = np.array_split(order, k)
    return [{"train": sorted(cases[i] for j, f in enumerate(folds) if j != fi for i in f),
             "val": sorted(cases[i] for i in fold)} for fi, fold in enumerate(folds)]


def load_or_create_splits(dataset_folder: Path, case_ids: Sequence[str], num_folds: int, seed: int) -> List[Split]:
    path = Path(dataset_folder) / SPLITS_FILE
    if path.is_file():
        splits = read_json(path)
        if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
            raise InputError(path, 'must be a list of {"train": [...], "val": [...]}')
        missing = sorted({c for s in splits for c in s["train"] + s["val"]} - set(case_ids))
        if missing:
            raise InputError(path, f"names case(s) that are not preprocessed: {missing[:5]}")
        unused = sorted(set(case_ids) - {c for s in splits for c in s["train"] + s["val"]})
        if unused:
            logger.warning("%s: %d preprocessed case(s) are in no fold (e.g. %s)", path, len(unused), unused[0])
        return splits
    splits = make_splits(case_ids, num_folds, seed)
    write_json(path, splits)
    logger.info("created %s (%d folds over %d cases)", path, len(splits), len(case_ids))
    return splits


def fold_cases(splits: List[Split], fold: int | str, all_cases: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(train, val) of a fold; fold "all" trains on every case and validates on every case (no held-out data)."""
    if str(fold) == "all":
        return sorted(all_cases), sorted(all_cases)
    fold = int(fold)
    if not 0 <= fold < len(splits):
        raise ValueError(f"fold {fold} does not exist (splits.json has folds 0..{len(splits) - 1})")
    return list(splits[fold]["train"]), list(splits[fold]["val"])
