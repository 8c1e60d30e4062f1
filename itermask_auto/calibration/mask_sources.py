"""Calibrating on what prediction will see. Training cases are preprocessed with the brain masks the dataset
gives; a user who predicts without masks gets automatic ones (deepbet, or the non-zero region of a skull-stripped
scan), whose rim differs. With `calibration.brain_masks` "automatic" or "both", each healthy validation scan is
also preprocessed again from its raw files WITHOUT its mask ("CASE@automatic"), so the thresholds hold for either
source. Only healthy training images are read (imagesTr); never a label."""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import List

from itermask_auto.calibration.context import VARIANT_SEPARATOR
from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.imageio.errors import InputError
from itermask_auto.paths import raw_root
from itermask_auto.preprocessing.storage import load_case
from itermask_auto.utilities.dataset import find_dataset

logger = logging.getLogger(__name__)

AUTOMATIC = "automatic"
SOURCES = ("preprocessed", AUTOMATIC, "both")


def calibration_variants(cases: List[str], rule: str) -> List[str]:
    if rule not in SOURCES:
        raise ValueError(f"unknown calibration.brain_masks '{rule}' ({' | '.join(SOURCES)})")
    automatic = [f"{c}{VARIANT_SEPARATOR}{AUTOMATIC}" for c in cases]
    return {"preprocessed": list(cases), AUTOMATIC: automatic, "both": list(cases) + automatic}[rule]


def automatic_mask_loader(plans: Plans, configuration: str, dataset_name: str, data_folder: Path):
    """loader("CASE@automatic") -> the case re-preprocessed from its raw images without a mask (cached)."""
    from itermask_auto.preprocessing.preprocessor import preprocess_case

    @lru_cache(maxsize=None)
    def load(case_variant: str):
        case = case_variant.split(VARIANT_SEPARATOR)[0]
        props = load_case(data_folder, case)[3]
        images = find_dataset(raw_root(), dataset_name) / "imagesTr"
        paths = [images / name for name in props["channel_files"]]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InputError(missing[0], "raw image of a calibration case is missing: needed to calibrate with "
                                         "automatic brain masks (calibration.brain_masks)")
        data, hf, brain, new_props = preprocess_case(paths, plans, configuration, None)
        logger.info("%s: automatic brain mask (%s), %.0f ml", case, new_props["brain_mask_source"],
                    new_props["brain_volume_ml"])
        return data, hf, brain, new_props
    return load
