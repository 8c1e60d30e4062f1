"""Two-sequence phantoms for method `mmccd`: FLAIR + T2 heads of the same anatomy (one seed), preprocessed the
way the engine stores them, with lesions visible in FLAIR only (T2 lesion contrast 0) on the test cases.

Layout under tmp_root as in trainer_fixtures: raw/ (only poisoned labelsTs), preprocessed/, results/."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.preprocessing.storage import save_case
from itermask_auto.utilities.atomic import write_json
from itermask_auto.utilities.frequency import high_frequency
from trainer_fixtures import HF_RADIUS, SPACING, _normalise, make_plans

DATASET = "Dataset993_TwoSeqPhantom"
SIZE_XYZ = (40, 48, 24)          # 24 axial slices at 2 mm: a thin brain keeps the tests fast
CHANNELS = ("FLAIR", "T2")
TINY_NETWORK = {"channels": [8, 8, 16], "attention_levels": [False, False, True], "num_res_blocks": 1,
                "norm_num_groups": 8}


def two_sequence_case(seed: int, n_lesions: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data (2, Z, Y, X) normalised, brain (Z, Y, X) bool, label (Z, Y, X) bool): the lesion shows in FLAIR only."""
    images, brain, label = [], None, None
    for sequence, contrast in (("FLAIR", 1.5), ("T2", 0.0)):
        ph = make_phantom(seed, size=SIZE_XYZ, spacing=SPACING[::-1], skull=False, n_lesions=n_lesions,
                          lesion_radius_mm=(6.0, 9.0), lesion_contrast=contrast, sequence=sequence,
                          anatomy_scale=0.5)
        images.append(sitk.GetArrayFromImage(ph.image).astype(np.float32))
        brain = sitk.GetArrayFromImage(ph.brain_mask).astype(bool)
        label = sitk.GetArrayFromImage(ph.label).astype(bool)
    data = np.stack([_normalise(im, brain) for im in images])
    return data, brain, label


def mmccd_plans(overrides: Dict | None = None) -> Plans:
    plans = make_plans(patch=(24, 48, 40), features=(8, 16, 32))
    plans.dataset_name = DATASET
    plans.channel_names = {"0": CHANNELS[0], "1": CHANNELS[1]}
    config = plans.configurations["2d"]
    config.patch_size, config.median_shape, config.batch_size = [48, 40], [24, 48, 40], 8
    plans.method_plans["mmccd"] = {"network": dict(TINY_NETWORK), "stripe_positions": 3, "ddim_steps": 2,
                                   "mask_batch": 12, "batch_size": 8, "initial_lr": 2e-3, "forward_epochs": 1,
                                   "backward_epochs": 1, "iterations_per_epoch": 4, **(overrides or {})}
    return plans


def make_two_sequence_dataset(tmp_root: Path, n_cases: int = 4, overrides: Dict | None = None,
                              seeds: Sequence[int] = ()) -> Tuple[str, Plans]:
    """Healthy two-sequence cases in tmp_root/preprocessed/<DATASET>/ and poisoned raw labelsTs."""
    tmp_root = Path(tmp_root)
    plans = mmccd_plans(overrides)
    ds = tmp_root / "preprocessed" / DATASET
    folder = ds / plans.configuration("2d").data_identifier
    for i, seed in enumerate(list(seeds) or range(n_cases)):
        data, brain, _ = two_sequence_case(seed)
        hf = np.stack([high_frequency(c, SPACING, HF_RADIUS) for c in data])
        save_case(folder, f"twoseq_{i:03d}", data, hf, brain.astype(np.uint8),
                  {"case": f"twoseq_{i:03d}", "spacing": list(SPACING)})
    plans.save(ds / "itermask_plans.json")
    write_json(ds / "dataset.json", {"name": "TwoSeqPhantom", "channel_names": dict(plans.channel_names),
                                     "file_ending": ".nii.gz", "numTraining": n_cases})
    labels = tmp_root / "raw" / DATASET / "labelsTs"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "twoseq_000.nii.gz").write_bytes(b"POISON: lesion labels must never be read in training")
    for sub in ("raw", "preprocessed", "results"):
        (tmp_root / sub).mkdir(parents=True, exist_ok=True)
    return DATASET, plans
