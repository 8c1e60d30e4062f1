"""Issue 7 bad-input suite: every kind of broken input to the four commands gets a one-line error naming the file
and the problem, a non-zero exit and no partial output; in itermask_predict the other cases are still processed.

Kinds run through the CLI `main()` functions in-process (fast); the SIGKILL tests are in test_crash_restart.py."""
from __future__ import annotations

import errno
import gzip
import json
import logging
import shutil
import struct
from pathlib import Path
from typing import Callable, Dict, List

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.dataset_conversion.phantom import make_phantom, write_phantom_dataset  # noqa: E402
from itermask_auto.evaluation.cli import main as evaluate_main  # noqa: E402
from itermask_auto.experiment_planning.cli import main as plan_main  # noqa: E402
from itermask_auto.inference.cli import main as predict_main  # noqa: E402
from itermask_auto.training.cli import main as train_main  # noqa: E402

NIFTI = ".nii.gz"


# ---- ways to break a NIfTI file (shared by the plan and predict stages) -------------------------------------
def _rewrite(path: Path, array: np.ndarray, spacing=None) -> None:
    ref = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(ref)
    if spacing is not None:
        out.SetSpacing(spacing)
    sitk.WriteImage(out, str(path))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def corrupt_gzip(p: Path) -> None:
    p.write_bytes(gzip.compress(b"not a nifti at all")[:20])


def truncated(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def four_d(p: Path) -> None:
    n = nib.load(str(p))
    d = np.asanyarray(n.dataobj)
    nib.save(nib.Nifti1Image(np.stack([d, d], -1), n.affine), str(p))


def two_d(p: Path) -> None:
    n = nib.load(str(p))
    nib.save(nib.Nifti1Image(np.asanyarray(n.dataobj)[:, :, 10], n.affine), str(p))


def with_nan(p: Path) -> None:
    a = _array(p)
    a[tuple(s // 2 for s in a.shape)] = np.nan
    _rewrite(p, a)


def with_inf(p: Path) -> None:
    a = _array(p)
    a[a > np.percentile(a, 99)] = np.inf
    _rewrite(p, a)


def all_zero(p: Path) -> None:
    _rewrite(p, np.zeros_like(_array(p)))


def tiny_brain(p: Path) -> None:
    """A 'skull-stripped' scan whose brain is a few voxels: the brain mask is empty for any purpose."""
    a = np.zeros_like(_array(p))
    c = [s // 2 for s in a.shape]
    a[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2] - 1:c[2] + 1] = 500.0
    a[tuple(c)] = 600.0
    _rewrite(p, a)


def zero_spacing(p: Path) -> None:
    """pixdim[1] = 0 in the raw header bytes (nibabel/ITK would both silently make it 1 mm)."""
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[80:84] = struct.pack("<f", 0.0)
    p.write_bytes(gzip.compress(bytes(raw)))


def absurd_spacing(p: Path) -> None:
    _rewrite(p, _array(p), spacing=(100.0, 5.0, 5.0))


IMAGE_BREAKERS: Dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt_gzip": (corrupt_gzip, "corrupt"), "truncated": (truncated, "truncated"),
    "four_d": (four_d, "expected a 3-D image, got 4-D"), "two_d": (two_d, "expected a 3-D image, got 2-D"),
    "nan": (with_nan, "NaN/inf"), "inf": (with_inf, "NaN/inf"), "all_zero": (all_zero, "constant"),
    "empty_brain": (tiny_brain, "empty brain"), "zero_spacing": (zero_spacing, "zero or non-finite voxel spacing"),
    "absurd_spacing": (absurd_spacing, "implausible voxel spacing"),
}


def _errors(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _temporaries(folder: Path) -> List[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or ".partial" in p.name]


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


# ---- a tiny trained model shared by the train, predict and evaluate kinds ------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input_model")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_roots(mp, root)
    dataset, _ = trainer_fixtures.make_cheap_phantom_dataset(root, n_cases=4)
    from itermask_auto.training.api import run_training
    fold_dir = run_training(dataset, "3d", fold=0, device="cpu", epochs=1, iterations=1, run_calibration=False,
                            num_threads=1)
    mp.undo()
    yield root, dataset, Path(fold_dir)


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


# ---- itermask_evaluate: labels on another grid --------------------------------------------------------------
def _prediction_folder(folder: Path) -> sitk.Image:
    """A finished itermask_predict case made by hand: a 'lesion' cube in the segmentation and the map."""
    folder.mkdir()
    a = np.zeros((20, 24, 22), np.float32)
    a[4:16, 4:20, 4:18] = 0.1
    a[8:12, 10:14, 8:12] = 2.0
    ref = sitk.GetImageFromArray(a)
    ref.SetSpacing((2.0, 2.0, 2.0))
    ref.SetOrigin((-20.0, -22.0, -18.0))
    sitk.WriteImage(ref, str(folder / f"case_anomaly{NIFTI}"))
    seg = sitk.GetImageFromArray((a > 1).astype(np.uint8))
    seg.CopyInformation(ref)
    sitk.WriteImage(seg, str(folder / f"case_seg{NIFTI}"))
    (folder / "case.json").write_text(json.dumps({"case": "case", "volume_score": 1.0, "anomalous": True}))
    return seg


def _label_on(seg: sitk.Image, spacing, shift_mm: float) -> sitk.Image:
    """The segmentation, resampled (nearest) onto a grid of another spacing and origin, shifted by shift_mm."""
    size = [int(round(n * s / t)) for n, s, t in zip(seg.GetSize(), seg.GetSpacing(), spacing)]
    origin = [o + shift_mm for o in seg.GetOrigin()]
    return sitk.Resample(seg, size, sitk.TranslationTransform(3, [-shift_mm] * 3), sitk.sitkNearestNeighbor,
                         origin, spacing, seg.GetDirection(), 0, sitk.sitkUInt8)


def test_evaluate_label_on_another_grid_is_resampled(tmp_path, caplog):
    seg = _prediction_folder(tmp_path / "pred")
    (tmp_path / "labels").mkdir()
    label = _label_on(seg, (1.0, 1.0, 1.0), 0.0)  # 1 mm grid over the same field of view
    assert label.GetSize() != seg.GetSize()
    sitk.WriteImage(label, str(tmp_path / "labels" / f"case{NIFTI}"))
    assert evaluate_main(["-pred", str(tmp_path / "pred"), "-ref", str(tmp_path / "labels"), "--no_report"]) == 0
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["segmentation"]["pooled_dice"] == pytest.approx(1.0)
    assert any("resampled" in r.getMessage() and "case.nii.gz" in r.getMessage() for r in caplog.records)
    # issue 18.2: summary.json names every label that was not scored on its own grid
    [record] = summary["resampled_labels"]
    assert record["case"] == "case" and record["file"].endswith(f"case{NIFTI}") and record["spacing"] == [1.0] * 3
    assert summary["cases"][0]["label_resampled"] is True


def test_evaluate_refuses_a_label_over_another_field_of_view(tmp_path, caplog):
    """Issue 18.2: a transposed label (same spacing and origin, another shape) used to be resampled with a warning
    and scored (Dice 0, exit 0); now it is one error line naming the label, and nothing is written."""
    seg = _prediction_folder(tmp_path / "pred")
    (tmp_path / "labels").mkdir()
    label = sitk.GetImageFromArray(np.transpose(sitk.GetArrayFromImage(seg), (2, 1, 0)).copy())
    label.SetSpacing(seg.GetSpacing())
    label.SetOrigin(seg.GetOrigin())
    assert label.GetSize() != seg.GetSize()
    sitk.WriteImage(label, str(tmp_path / "labels" / f"case{NIFTI}"))
    assert evaluate_main(["-pred", str(tmp_path / "pred"), "-ref", str(tmp_path / "labels"), "--no_report"]) == 1
    errors = _errors(caplog)
    assert len(errors) == 1 and f"case{NIFTI}" in errors[0] and "another field of view" in errors[0], errors
    assert not (tmp_path / "pred" / "summary.json").exists()


@pytest.mark.parametrize("kind", ["no_overlap", "corrupt", "missing"])
def test_evaluate_bad_label(kind, tmp_path, caplog):
    seg = _prediction_folder(tmp_path / "pred")
    labels = tmp_path / "labels"
    labels.mkdir()
    path = labels / f"case{NIFTI}"
    if kind == "no_overlap":
        sitk.WriteImage(_label_on(seg, (2.0, 2.0, 2.0), 500.0), str(path))
        words = "does not overlap the prediction's grid"
    elif kind == "corrupt":
        path.write_bytes(b"\x1f\x8b\x08\x00broken")
        words = "cannot read image"
    else:
        words = "label missing"
    assert evaluate_main(["-pred", str(tmp_path / "pred"), "-ref", str(labels), "--no_report"]) == 1
    errors = _errors(caplog)
    assert len(errors) == 1 and f"case{NIFTI}" in errors[0] and words in errors[0] and "\n" not in errors[0], errors
    assert not (tmp_path / "pred" / "summary.json").exists()
