"""Refuse to report on cases a model was trained on with their labels (weak supervision, `itermask_train
--labelled`): their ids are in the model folder's training_data.json (`labelled_case_ids`), found through the
`model_folder` each CASE.json names. A model folder that is not reachable from here cannot be checked."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

from itermask_auto.imageio.errors import InputError
from itermask_auto.utilities.atomic import read_json

TRAINING_DATA_NOTE = "training_data.json"   # model_sharing.model_card.TRAINING_DATA_NOTE (not imported: no torch)
NIFTI = ".nii.gz"


def refuse_labelled_training_cases(pred_dirs: Sequence[Path]) -> None:
    """InputError (one line) when a prediction in one of `pred_dirs` is of a case its model was trained on."""
    notes: Dict[str, Dict] = {}
    for pred_dir in pred_dirs:
        hits: List[str] = []
        datasets = set()
        for info_path in sorted(Path(pred_dir).glob("*.json")):
            case = info_path.name[:-len(".json")]
            if not (Path(pred_dir) / f"{case}_anomaly{NIFTI}").is_file():
                continue   # not a prediction's CASE.json (summary.json, ...)
            folder = str(read_json(info_path).get("model_folder") or "")
            if folder not in notes:
                note = Path(folder) / TRAINING_DATA_NOTE
                notes[folder] = read_json(note) if folder and note.is_file() else {}
            if case in (notes[folder].get("labelled_case_ids") or []):
                hits.append(case)
                datasets.add(str(notes[folder].get("labelled_dataset")))
        if hits:
            shown = ", ".join(hits[:5]) + (", ..." if len(hits) > 5 else "")
            raise InputError(pred_dir, f"{len(hits)} case(s) ({shown}) were labelled training data of their model "
                                       f"(--labelled {', '.join(sorted(datasets))}): not evaluated, they are not "
                                       "test cases")
