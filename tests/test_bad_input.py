"""Issue 7 bad-input suite: every kind of broken input to the four commands gets a one-line error naming the file
and the problem, a non-zero exit and no partial output; in itermask_predict the other cases are still processed.
This file: itermask_plan_and_preprocess and itermask_train; test_bad_input_predict.py and test_bad_input_evaluate.py
the others; the ways to break a file in bad_input_fixtures.py.

Kinds run through the CLI `main()` functions in-process (fast); the SIGKILL tests are in test_crash_restart.py."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.dataset_conversion.phantom import write_phantom_dataset  # noqa: E402
from itermask_auto.experiment_planning.cli import main as plan_main  # noqa: E402
from itermask_auto.training.cli import main as train_main  # noqa: E402
from bad_input_fixtures import IMAGE_BREAKERS, NIFTI, _errors, _temporaries, train_tiny_model  # noqa: E402


# ---- itermask_plan_and_preprocess ---------------------------------------------------------------------------
@pytest.fixture
def raw(data_roots) -> Path:
    return write_phantom_dataset(data_roots["raw"], dataset_id=990, n_train=3, n_test_healthy=0, n_test_lesion=0,
                                 size=(28, 32, 28), spacing=(5.0, 5.0, 5.0), with_masks=False)


def _victim(raw: Path) -> Path:
    return sorted((raw / "imagesTr").glob(f"*_0000{NIFTI}"))[1]


def _edit_json(raw: Path, fn: Callable[[dict], None]) -> str:
    meta = json.loads((raw / "dataset.json").read_text())
    fn(meta)
    (raw / "dataset.json").write_text(json.dumps(meta))
    return "dataset.json"


def _two_channels(raw: Path) -> None:
    _edit_json(raw, lambda m: m.update(channel_names={"0": "T1", "1": "T2"}))


def p_extra_channel(raw, mp, roots) -> str:
    v = _victim(raw)
    shutil.copyfile(v, str(v).replace("_0000", "_0001"))
    return v.name.replace("_0000", "_0001")


def p_missing_channel(raw, mp, roots) -> str:
    _two_channels(raw)
    v = _victim(raw)
    for p in sorted((raw / "imagesTr").glob(f"*_0000{NIFTI}")):
        if p != v:
            shutil.copyfile(p, str(p).replace("_0000", "_0001"))
    return v.name.replace("_0000", "_0001")


def p_channel_geometry(raw, mp, roots) -> str:
    _two_channels(raw)
    v = _victim(raw)
    for p in sorted((raw / "imagesTr").glob(f"*_0000{NIFTI}")):
        im = sitk.ReadImage(str(p))
        if p == v:
            im.SetOrigin([o + 7.0 for o in im.GetOrigin()])
        sitk.WriteImage(im, str(p).replace("_0000", "_0001"))
    return v.name.replace("_0000", "_0001")


def p_empty_given_mask(raw, mp, roots) -> str:
    v = _victim(raw)
    im = sitk.ReadImage(str(v))
    a = np.zeros(sitk.GetArrayViewFromImage(im).shape, np.uint8)
    a[10, 10, 10] = 1
    mask = sitk.GetImageFromArray(a)
    mask.CopyInformation(im)
    (raw / "masksTr").mkdir()
    name = v.name.replace("_0000", "")
    sitk.WriteImage(mask, str(raw / "masksTr" / name))
    return name


def p_non_nifti(raw, mp, roots) -> str:
    (raw / "imagesTr" / "notes.txt").write_text("acquisition notes")
    return "notes.txt"


def p_json_missing_key(raw, mp, roots) -> str:
    return _edit_json(raw, lambda m: m.pop("file_ending"))


def p_json_wrong_key(raw, mp, roots) -> str:
    return _edit_json(raw, lambda m: m.update(channel_names={"1": "T1"}))


def p_json_num_training(raw, mp, roots) -> str:
    return _edit_json(raw, lambda m: m.update(numTraining=99))


def p_json_invalid(raw, mp, roots) -> str:
    (raw / "dataset.json").write_text("{\"name\": \"Phantom\", ")
    return "dataset.json"


def p_output_unwritable(raw, mp, roots) -> str:
    """The preprocessed root is a file (chmod does not stop root, a file in the way stops everyone)."""
    blocked = roots["preprocessed"].parent / "blocked"
    blocked.write_text("a file, not a folder")
    mp.setenv("ITERMASK_preprocessed", str(blocked))
    return "blocked"


def p_disk_full(raw, mp, roots) -> str:
    """The second preprocessed case hits a full disk half-way through writing its arrays."""
    calls = []
    real = np.savez_compressed

    def full(file, *a, **k):
        calls.append(file)
        if len(calls) == 2:
            Path(file).write_bytes(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(file, *a, **k)
    mp.setattr(np, "savez_compressed", full)
    return ".npz"


def _image_kind(name: str):
    breaker, _ = IMAGE_BREAKERS[name]

    def apply(raw, mp, roots) -> str:
        v = _victim(raw)
        breaker(v)
        return v.name
    return apply


PLAN_KINDS = {**{k: (_image_kind(k), words) for k, (_, words) in IMAGE_BREAKERS.items()},
              "extra_channel": (p_extra_channel, "unexpected channel"),
              "missing_channel": (p_missing_channel, "missing channel"),
              "channel_geometry": (p_channel_geometry, "geometry differs"),
              "empty_given_mask": (p_empty_given_mask, "empty brain in the given brain mask"),
              "non_nifti_file": (p_non_nifti, "not named CASE_XXXX"),
              "json_missing_key": (p_json_missing_key, "missing key"),
              "json_wrong_key": (p_json_wrong_key, "'channel_names' keys"),
              "json_num_training": (p_json_num_training, "numTraining is 99"),
              "json_invalid": (p_json_invalid, "not valid JSON"),
              "output_unwritable": (p_output_unwritable, "is an existing file"),
              "disk_full": (p_disk_full, "No space left on device")}


@pytest.mark.parametrize("kind", sorted(PLAN_KINDS))
def test_plan_and_preprocess_bad_input(kind, raw, data_roots, monkeypatch, caplog):
    breaker, words = PLAN_KINDS[kind]
    file_part = breaker(raw, monkeypatch, data_roots)
    rc = plan_main(["-d", "990", "-np", "1", "--profile", "cpu", "-c", "3d"])
    errors = _errors(caplog)
    assert rc == 1, errors
    assert any(words in m and file_part in m for m in errors), (words, file_part, errors)
    assert all("\n" not in m for m in errors), errors
    left = list(data_roots["preprocessed"].rglob("*"))
    assert left == [], f"partial output left behind: {left}"


# ---- a tiny trained model shared by this module's kinds ------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_tiny_model(tmp_path_factory)


def _roots_copy(model, tmp_path, monkeypatch, results: bool = False) -> Path:
    root, _, _ = model
    for sub in ("raw", "preprocessed") + (("results",) if results else ()):
        shutil.copytree(root / sub, tmp_path / sub)
    (tmp_path / "results").mkdir(exist_ok=True)
    trainer_fixtures.set_roots(monkeypatch, tmp_path)
    return tmp_path


# ---- itermask_train -----------------------------------------------------------------------------------------
def t_unknown_dataset(r: Path, mp) -> tuple[list, str]:
    return ["-d", "777"], "no dataset '777'"


def t_results_unwritable(r, mp):
    (r / "blocked").write_text("file")
    mp.setenv("ITERMASK_results", str(r / "blocked"))
    return [], "blocked: output folder is an existing file"


def _fold(r: Path) -> Path:
    return next((r / "results").rglob("fold_0"))


def t_resume_other_plan(r, mp):
    plans_path = next((r / "preprocessed").glob("Dataset*/itermask_plans.json"))
    plans = json.loads(plans_path.read_text())
    plans["hf_radius_cycles_per_mm"] = 0.11  # same plans_name, another plan
    plans_path.write_text(json.dumps(plans))
    return ["--c"], "checkpoint_latest.pth: was written by another plan"


def t_resume_corrupt_checkpoint(r, mp):
    ckpt = _fold(r) / "checkpoint_latest.pth"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    return ["--c"], "checkpoint_latest.pth: not a readable itermask checkpoint"


def t_disk_full(r, mp):
    """The disk is full when the first checkpoint is saved: half a file is written, then ENOSPC."""
    import torch

    def full(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    mp.setattr(torch, "save", full)
    shutil.rmtree(r / "results")
    (r / "results").mkdir()
    return [], "No space left on device (while writing): '"


def t_corrupt_preprocessed_case(r, mp):
    npz = sorted((r / "preprocessed").rglob("*.npz"))[0]
    npz.write_bytes(npz.read_bytes()[:200])
    return [], npz.name


TRAIN_KINDS = {"unknown_dataset": t_unknown_dataset, "results_unwritable": t_results_unwritable,
               "resume_other_plan": t_resume_other_plan, "resume_corrupt_checkpoint": t_resume_corrupt_checkpoint,
               "disk_full": t_disk_full,
               "corrupt_preprocessed_case": t_corrupt_preprocessed_case}


@pytest.mark.parametrize("breaker", list(TRAIN_KINDS.values()), ids=list(TRAIN_KINDS))
def test_train_bad_input(breaker, model, tmp_path, monkeypatch, capsys):
    r = _roots_copy(model, tmp_path, monkeypatch, results=True)
    args, words = breaker(r, monkeypatch)
    rc = train_main(["-d", model[1], "--epochs", "1", "--iterations", "1", "--threads", "1", *args])  # last -d wins
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("itermask_train: error:")]
    assert rc == 1 and len(errors) == 1, err
    assert words in errors[0], (words, errors)
    results = r / "results"
    if results.is_dir():
        assert _temporaries(results) == []
    if breaker is t_disk_full:  # the failed save left neither half a checkpoint nor a temporary file
        assert not list(results.rglob("*.pth")), list(results.rglob("*"))
