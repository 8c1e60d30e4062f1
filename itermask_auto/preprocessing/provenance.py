"""What a configuration's preprocessed arrays were made with, recorded beside them, so that a plan edited by hand
afterwards is noticed: re-planning keeps only arrays the new plan would make the same way, and training refuses
arrays made with other preprocessing settings than the plan it trains with."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional

PREPROCESSING_INPUTS_FILE = "preprocessing_inputs.json"   # in the data folder; not a case (cases are CASE.npz)


def preprocessing_inputs(plans, configuration: str) -> Dict[str, Any]:
    """What a configuration's preprocessed arrays depend on: if none of it changed, the arrays are still valid.
    JSON-shaped (lists, not tuples), so that it compares equal to the recorded file."""
    config = plans.configuration(configuration)
    return json.loads(json.dumps({
        "channels": plans.channel_names, "normalization": asdict(plans.normalization),
        "hf_radius": plans.hf_radius_cycles_per_mm, "spacing": list(config.spacing),
        "data_identifier": config.data_identifier}))


def recorded_inputs(data_folder: Path) -> Optional[Dict[str, Any]]:
    """The inputs recorded when the folder's arrays were made; None for folders made before the record."""
    path = Path(data_folder) / PREPROCESSING_INPUTS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_arrays_match_plan(data_folder: Path, plans, configuration: str, dataset: str) -> None:
    """ValueError (one line) when the plan preprocesses differently from how the folder's arrays were made, e.g.
    after a hand edit of spacing, normalization or hf_radius_cycles_per_mm."""
    made_with = recorded_inputs(data_folder)
    if made_with is None:
        return
    planned = preprocessing_inputs(plans, configuration)
    moved = sorted(k for k in set(made_with) | set(planned) if made_with.get(k) != planned.get(k))
    if moved:
        raise ValueError(f"{data_folder}: the arrays were preprocessed with other {', '.join(moved)} than the plan "
                         f"says (edited?): run itermask_plan_and_preprocess -d {dataset} -c {configuration} "
                         "--use_existing_plan to preprocess them with it")
