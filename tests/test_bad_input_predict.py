"""Issue 7 bad-input suite, itermask_predict: a broken case fails alone with one line naming its file, the good
cases are still written; folder-level errors write nothing (ways to break a file: bad_input_fixtures.py)."""
from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
import SimpleITK as sitk

trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.dataset_conversion.phantom import make_phantom  # noqa: E402
from itermask_auto.inference.cli import main as predict_main  # noqa: E402
from bad_input_fixtures import IMAGE_BREAKERS, NIFTI, _errors, _temporaries, train_tiny_model  # noqa: E402


# ---- a tiny trained model shared by this module's kinds ------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_tiny_model(tmp_path_factory)


# ---- itermask_predict ---------------------------------------------------------------------------------------
GOOD = ("good_1", "zz_good_2")


def _write_case(images: Path, masks: Path, case: str, seed: int) -> Path:
    ph = make_phantom(seed, size=(26, 28, 24), spacing=(2.0, 2.1, 2.2), skull=False, n_lesions=0)
    path = images / f"{case}_0000{NIFTI}"
    sitk.WriteImage(ph.image, str(path))
    sitk.WriteImage(ph.brain_mask, str(masks / f"{case}{NIFTI}"))
    return path


@pytest.fixture(scope="module")
def predicted(model, tmp_path_factory):
    """One itermask_predict run over a folder holding every broken kind, a disk that fills up half-way through
    one case, and two good cases."""
    _, _, fold_dir = model
    base = tmp_path_factory.mktemp("predict_bad")
    images, masks, out = base / "images", base / "masks", base / "out"
    images.mkdir()
    masks.mkdir()
    for i, case in enumerate(GOOD):
        _write_case(images, masks, case, 40 + i)
    for i, (kind, (breaker, _)) in enumerate(IMAGE_BREAKERS.items()):
        path = _write_case(images, masks, f"bad_{kind}", 60 + i)
        if kind != "empty_brain":
            (masks / f"bad_{kind}{NIFTI}").unlink()  # the image is read before any mask
        breaker(path)
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(masks / f"bad_empty_brain{NIFTI}")))  # tiny given mask
    tiny = np.zeros_like(a)
    tiny[12, 14, 13] = 1
    im = sitk.GetImageFromArray(tiny)
    im.CopyInformation(sitk.ReadImage(str(masks / f"bad_empty_brain{NIFTI}")))
    sitk.WriteImage(im, str(masks / f"bad_empty_brain{NIFTI}"))
    _write_case(images, masks, "disk_full", 80)
    (images / "README.txt").write_text("notes")                    # not an input: skipped with a log line
    (images / "notes").mkdir()                                      # a folder without DICOM: skipped too
    shutil.copyfile(images / f"good_1_0000{NIFTI}", images / f"misnamed{NIFTI}")  # an image, misnamed
    _write_case(images, masks, "extra_channel", 81)                 # one channel too many
    shutil.copyfile(images / f"extra_channel_0000{NIFTI}", images / f"extra_channel_0001{NIFTI}")

    mp = pytest.MonkeyPatch()
    real = sitk.WriteImage

    def full(image, path, *a, **k):  # the disk fills while disk_full's segmentation is written
        if "disk_full_seg" in str(path):
            Path(path).write_bytes(b"\x1f\x8b half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(image, path, *a, **k)
    mp.setattr(sitk, "WriteImage", full)
    records: List[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        rc = predict_main(["-i", str(images), "-o", str(out), "-model_dir", str(fold_dir), "-masks", str(masks),
                           "--quiet"])
    finally:
        logging.getLogger().removeHandler(handler)
        mp.undo()
    return rc, out, json.loads((out / "predictions.json").read_text()), [r.getMessage() for r in records]


PREDICT_CASE_KINDS = {**{f"bad_{k}": (f"bad_{k}_0000{NIFTI}", words) for k, (_, words) in IMAGE_BREAKERS.items()},
                      "disk_full": (f"disk_full_seg{NIFTI}", "No space left on device")}
PREDICT_CASE_KINDS["bad_empty_brain"] = (f"bad_empty_brain{NIFTI}", "empty brain in the given brain mask")
PREDICT_CASE_KINDS[f"misnamed{NIFTI}"] = (f"misnamed{NIFTI}", "not named CASE_XXXX")
PREDICT_CASE_KINDS["extra_channel"] = (f"extra_channel_0001{NIFTI}", "unexpected channel(s) [1]")


@pytest.mark.parametrize("case", sorted(PREDICT_CASE_KINDS))
def test_predict_bad_case_fails_alone(case, predicted):
    rc, out, summary, _ = predicted
    file_name, words = PREDICT_CASE_KINDS[case]
    assert rc == 1
    message = summary["failures"].get(case, "")
    assert file_name in message and words in message and "\n" not in message, message
    assert not (out / f"{case}.json").exists() and not (out / f"{case}_seg{NIFTI}").exists()
    assert not list(out.glob(f"{case}_*")), "partial output of a failed case"


def test_predict_good_cases_still_processed(predicted):
    rc, out, summary, messages = predicted
    assert rc == 1
    assert {c["case"] for c in summary["cases"]} == set(GOOD)
    assert set(summary["failures"]) == set(PREDICT_CASE_KINDS)
    for case in GOOD:
        for kind in ("anomaly", "seg"):
            assert sitk.ReadImage(str(out / f"{case}_{kind}{NIFTI}")).GetSize() == (26, 28, 24)
    assert _temporaries(out) == []
    # the CLI's closing error lists every failed case, one line each
    listing = [m for m in messages if "case(s) failed" in m]
    assert listing and all(any(c in m for m in listing) for c in PREDICT_CASE_KINDS)


def test_predict_skips_what_is_not_an_input(predicted):
    """Issue 18.1: a text file and a folder without DICOM in the input folder are skipped with one log line
    each, never counted as failed cases."""
    rc, out, summary, messages = predicted
    assert not {"README.txt", "notes"} & set(summary["failures"])
    for name in ("README.txt", "notes"):
        lines = [m for m in messages if name in m]
        assert len(lines) == 1 and "skipped" in lines[0] and "\n" not in lines[0], lines


def f_model_other_plan(images, fold_dir, out):
    other = out.parent / "other_fold"
    shutil.copytree(fold_dir, other)
    plans = json.loads((other / "plans.json").read_text())
    plans["hf_radius_cycles_per_mm"] = 0.2
    (other / "plans.json").write_text(json.dumps(plans))
    return ["-model_dir", str(other)], "checkpoint_final.pth: was trained with another plan"


def f_model_other_dataset(images, fold_dir, out):
    ds = fold_dir.parents[2] / "Dataset555_Other"
    (ds / "itermask3d__itermaskPlans__3d").mkdir(parents=True, exist_ok=True)
    return ["-d", "555"], "no trained model"


def f_output_unwritable(images, fold_dir, out):
    out.write_text("a file where the output folder should be")
    return [], "output folder is an existing file"


PREDICT_FOLDER_KINDS = {"model_other_plan": f_model_other_plan, "model_other_dataset": f_model_other_dataset,
                        "output_unwritable": f_output_unwritable}


@pytest.mark.parametrize("kind", sorted(PREDICT_FOLDER_KINDS))
def test_predict_folder_level_errors(kind, model, tmp_path, monkeypatch, caplog):
    root, _, fold_dir = model
    trainer_fixtures.set_roots(monkeypatch, root)
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    _write_case(images, masks, "good_1", 40)
    args, words = PREDICT_FOLDER_KINDS[kind](images, fold_dir, out)
    if "-model_dir" not in args and "-d" not in args:
        args += ["-model_dir", str(fold_dir)]
    rc = predict_main(["-i", str(images), "-o", str(out), "--quiet", *args])
    errors = _errors(caplog)
    assert rc == 2 and len(errors) == 1 and "\n" not in errors[0], errors
    assert words in errors[0], (words, errors)
    if out.is_dir():
        assert list(out.iterdir()) == [], "nothing is written when the whole folder is refused"
