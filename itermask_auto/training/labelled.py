"""A small labelled dataset for methods that accept weak supervision (`itermask_train --labelled DATASET`).

The labelled dataset is a raw dataset with `imagesTr/` (+ optional `masksTr/` brain masks) and `labelsTr/`
(CASE<ending>, lesion > 0); its `labelsTs/` and `imagesTs/` are never read. Its cases are preprocessed with the
TRAINING dataset's plan (so they share spacing, normalisation and grid conventions) and every label is moved onto
its case's grid like the brain mask (preprocessing/labels.py). The result is cached under
$ITERMASK_preprocessed/<training dataset>/labelled/<labelled dataset>_<data identifier>/ and remade when the plan's
preprocessing or the case list changes. The fold's training_data.json records the dataset and its case ids; the
model card says so and itermask_evaluate refuses to report on those cases."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.imageio.errors import InputError
from itermask_auto.paths import raw_root
from itermask_auto.utilities.atomic import read_json, write_json
from itermask_auto.utilities.dataset import find_dataset, list_cases, load_dataset_json

logger = logging.getLogger(__name__)

STAMP = "labelled.json"


@dataclass
class LabelledCase:
    case_id: str
    data: np.ndarray      # (C, Z, Y, X) float32, preprocessed like the training cases
    brain: np.ndarray     # (Z, Y, X) bool
    label: np.ndarray     # (Z, Y, X) bool, inside the brain


@dataclass
class LabelledData:
    dataset: str                 # raw dataset folder name
    cases: List[LabelledCase]

    @property
    def case_ids(self) -> List[str]:
        return [c.case_id for c in self.cases]


def collect_labelled_cases(raw_folder: Path, plans: Plans) -> tuple[Dict[str, List[Path]], Dict[str, Path],
                                                                    Dict[str, Path]]:
    """(channel files, label file, brain mask file) per case of imagesTr/labelsTr/masksTr."""
    meta = load_dataset_json(raw_folder)
    if list(meta["channel_names"].values()) != list(plans.channel_names.values()):
        raise InputError(raw_folder / "dataset.json", f"channels {list(meta['channel_names'].values())} differ from "
                                                      f"the training plan's {list(plans.channel_names.values())}")
    ending = meta["file_ending"]
    cases = list_cases(raw_folder / "imagesTr", len(meta["channel_names"]), ending)
    if not cases:
        raise InputError(raw_folder / "imagesTr", "no labelled cases found")
    labels, masks = {}, {}
    for case in cases:
        label = raw_folder / "labelsTr" / f"{case}{ending}"
        if not label.is_file():
            raise InputError(label, f"lesion label of labelled case '{case}' missing (labelsTr/CASE{ending})")
        labels[case] = label
        if (raw_folder / "masksTr" / f"{case}{ending}").is_file():
            masks[case] = raw_folder / "masksTr" / f"{case}{ending}"
    return cases, labels, masks


def _cache_folder(dataset_dir: Path, raw_name: str, plans: Plans, configuration: str) -> Path:
    return Path(dataset_dir) / "labelled" / f"{raw_name}_{plans.configuration(configuration).data_identifier}"


def prepare_labelled(dataset: str | int, plans: Plans, configuration: str, dataset_dir: Path) -> Path:
    """Preprocess the labelled dataset with the training plan (unless the cache is current); its cache folder."""
    from itermask_auto.preprocessing.provenance import preprocessing_inputs
    from itermask_auto.preprocessing.labels import label_on_preprocessed_grid
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    from itermask_auto.preprocessing.storage import save_case
    raw_folder = find_dataset(raw_root(), dataset)
    cases, labels, masks = collect_labelled_cases(raw_folder, plans)
    folder = _cache_folder(dataset_dir, raw_folder.name, plans, configuration)
    stamp = {"dataset": raw_folder.name, "preprocessing": preprocessing_inputs(plans, configuration),
             "cases": sorted(cases)}
    if (folder / STAMP).is_file() and read_json(folder / STAMP) == stamp:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for case in sorted(cases):
        data, hf, brain, properties = preprocess_case(cases[case], plans, configuration, masks.get(case))
        label = label_on_preprocessed_grid(labels[case], properties, brain)
        save_case(folder, case, data, hf, brain, properties)
        np.savez_compressed(folder / f"{case}_label.npz", label=label.astype(np.uint8))
        logger.info("labelled case %s: %d lesion voxels on the plan's grid", case, int(label.sum()))
    write_json(folder / STAMP, stamp)   # last: a killed run leaves no stamp and is redone
    return folder


def load_labelled(dataset: str | int, plans: Plans, configuration: str, dataset_dir: Path) -> LabelledData:
    """The prepared labelled cases, in memory."""
    from itermask_auto.preprocessing.storage import load_case
    raw_name = find_dataset(raw_root(), dataset).name
    folder = _cache_folder(dataset_dir, raw_name, plans, configuration)
    if not (folder / STAMP).is_file():
        raise FileNotFoundError(f"{folder}: labelled cases not prepared")
    cases = []
    for case in read_json(folder / STAMP)["cases"]:
        data, _, brain, _ = load_case(folder, case)
        with np.load(folder / f"{case}_label.npz") as z:
            label = z["label"].astype(bool)
        cases.append(LabelledCase(case, data.astype(np.float32), brain, label & brain))
    logger.info("labelled dataset %s: %d cases, %d lesion voxels", raw_name, len(cases),
                sum(int(c.label.sum()) for c in cases))
    return LabelledData(raw_name, cases)
