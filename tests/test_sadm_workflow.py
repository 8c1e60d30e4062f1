"""sadm through the commands, with weak supervision: `itermask_train --labelled` (refused by methods that do not
accept it), the labelled cases on the plan's grid reaching stage 2, training_data.json and the model card, `--c`
kept consistent, itermask_predict, and itermask_evaluate refusing to report on the labelled training cases."""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from itermask_auto.evaluation.cli import main as evaluate_main
from itermask_auto.inference.cli import main as predict_main
from itermask_auto.methods.sadm import training as sadm_training
from itermask_auto.model_sharing.model_card import model_card, model_card_markdown
from itermask_auto.training import api
from itermask_auto.training.cli import main as train_main
from itermask_auto.utilities.atomic import read_json, write_json
from sadm_fixtures import SIZE_XYZ, set_method_plan, tiny_plan
from trainer_fixtures import make_preprocessed_phantom_dataset


def _labelled_dataset(raw):
    """Dataset995_Labelled: two lesion phantoms with lesion labels, in imagesTr/labelsTr/masksTr."""
    from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
    folder = write_phantom_dataset(raw, 995, "Labelled", n_train=0, n_test_healthy=0, n_test_lesion=2,
                                   size=SIZE_XYZ, anatomy_scale=0.5)
    for part in ("images", "labels", "masks"):
        os.replace(folder / f"{part}Ts", folder / f"{part}Tr")
    meta = read_json(folder / "dataset.json")
    write_json(folder / "dataset.json", {**meta, "numTraining": 2, "numTest": 0})
    return folder


def test_labelled_opt_in_recorded_refused_elsewhere_and_never_evaluated(tmp_path, monkeypatch, capsys, caplog):
    make_preprocessed_phantom_dataset(tmp_path, n_cases=4, size_xyz=SIZE_XYZ)
    set_method_plan(tmp_path, tiny_plan((1, 1), (2, 3), labelled_fraction=0.5))
    for sub in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"ITERMASK_{sub}", str(tmp_path / sub))
    labelled = _labelled_dataset(tmp_path / "raw")
    common = ["-d", "990", "-c", "2d", "--threads", "1"]

    assert train_main(common + ["-m", "ae", "--labelled", "995"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not train on labelled data" in err[0] and "sadm" in err[0]

    kinds = []
    inputs = sadm_training.delineation_inputs
    monkeypatch.setattr(sadm_training, "delineation_inputs",
                        lambda *a, **k: (lambda out: kinds.extend(out[3]) or out)(inputs(*a, **k)))
    from itermask_auto.methods.sadm import method as sadm_method
    monkeypatch.setattr(sadm_method, "delineation_inputs", sadm_training.delineation_inputs)
    assert train_main(common + ["-m", "sadm", "--labelled", "995"]) == 0
    fold = next((tmp_path / "results").glob("*/sadm__*__2d/fold_0"))
    assert "labelled" in kinds                                          # labelled slices reached stage 2
    note = read_json(fold / "training_data.json")
    assert note["labelled_dataset"] == "Dataset995_Labelled" and note["labelled_cases"] == 2
    assert note["labelled_case_ids"] == ["phantom_lesion_000", "phantom_lesion_001"]
    assert note["synthetic_anomalies"]["kinds"] == {"noise_blend": 0.5, "lesion_blobs": 0.5}
    cache = next((tmp_path / "preprocessed").glob("*/labelled/Dataset995_Labelled_*"))
    with np.load(cache / "phantom_lesion_000_label.npz") as z:
        assert z["label"].sum() > 10                                     # the label on the plan's grid
    assert "weakly supervised" in model_card_markdown(model_card(fold))
    with pytest.raises(ValueError, match="--labelled"):                # --c must keep the labelled dataset
        api.run_training(990, "2d", 0, method="sadm", continue_training=True, num_threads=1)

    out = tmp_path / "pred"
    assert predict_main(["-i", str(labelled / "imagesTr"), "-o", str(out), "-d", "990", "-c", "2d", "-m", "sadm",
                         "-masks", str(labelled / "masksTr"), "--quiet"]) == 0
    case = read_json(out / "phantom_lesion_000.json")
    assert case["method"] == "sadm" and case["voxel_threshold"] is not None
    with caplog.at_level(logging.ERROR):
        assert evaluate_main(["-pred", str(out), "-ref", str(labelled / "labelsTr"), "--no_report"]) == 1
    assert "labelled training data" in caplog.text and not (out / "summary.json").exists()

    # the same outputs under ids that are not training cases evaluate normally (three commands, end to end)
    other, labels = tmp_path / "other", tmp_path / "other_labels"
    labels.mkdir()
    other.mkdir()
    for p in out.glob("phantom_lesion_000*"):
        shutil.copy(p, other / p.name.replace("phantom_lesion_000", "elsewhere_000"))
    shutil.copy(labelled / "labelsTr" / "phantom_lesion_000.nii.gz", labels / "elsewhere_000.nii.gz")
    assert evaluate_main(["-pred", str(other), "-ref", str(labels), "--no_report"]) == 0
    summary = json.loads((other / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["voxel_ranking"]["pooled_auroc"] is not None
