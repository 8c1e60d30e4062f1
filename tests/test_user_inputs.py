"""Issue 18, points 4 and 6: the formats users have (.nii, .mha, .nrrd, DICOM series) and inputs unlike the
training data (compared with dataset_fingerprint.json), through itermask_predict on a tiny phantom model."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk

pytest.importorskip("torch")
trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.dataset_conversion.phantom import make_phantom  # noqa: E402
from itermask_auto.evaluation.cli import main as evaluate_main  # noqa: E402
import user_report_fixtures  # noqa: E402
from user_report_fixtures import (NIFTI, ROTATED, _mask_on, assert_same_geometry, phantom, predict,  # noqa: E402
                                  read_series, summary_of, write_case, write_dicom_series)

model, roots = user_report_fixtures.model, user_report_fixtures.roots   # the shared fixtures


# ---- 4. the formats users have ----------------------------------------------------------------------------------
def test_nii_mha_nrrd_and_dicom_inputs(roots, tmp_path, caplog):
    """Each format is read whatever the model's file ending (.nii.gz); outputs are NIfTI on the input's exact grid;
    what cannot be read is one failure naming the file (or DICOM folder) and the reason."""
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    inputs = {"plain": write_case(images, masks, "plain", 1, ".nii"),
              "meta": write_case(images, masks, "meta", 2, ".mha", direction=ROTATED),
              "nrrd": write_case(images, masks, "nrrd", 3, ".nrrd")}
    write_dicom_series(phantom(4).image, images / "dicom", "T1 MPRAGE", "1.2.3.4.1")
    write_dicom_series(phantom(4).image, images / "dicom", "localizer", "1.2.3.4.2", prefix="LOC")
    inputs["dicom"] = read_series(images / "dicom", "1.2.3.4.1")
    sitk.WriteImage(_mask_on(inputs["dicom"], 4), str(masks / f"dicom{NIFTI}"))
    write_dicom_series(phantom(5).image, images / "no_t1", "FLAIR", "1.2.3.5.1")
    write_dicom_series(phantom(5).image, images / "no_t1", "DWI", "1.2.3.5.2", prefix="DW")
    (images / "broken_0000.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nElementDataFile = LOCAL\n\x00\x01")
    rc = predict(fold_dir, images, out, masks, "--quiet")
    failures = summary_of(out)["failures"]
    assert rc == 1 and set(failures) == {"broken", "no_t1"}, failures
    assert "broken_0000.mha" in failures["broken"] and "cannot be read" in failures["broken"]
    assert "no_t1" in failures["no_t1"] and "'FLAIR'" in failures["no_t1"] and "-dicom_channels" in failures["no_t1"]
    for case, reference in inputs.items():
        for kind in ("anomaly", "seg"):
            assert_same_geometry(sitk.ReadImage(str(out / f"{case}_{kind}{NIFTI}")), reference)
    assert "T1 MPRAGE" in json.loads((out / "dicom.json").read_text())["input_files"][0]


def test_output_in_the_input_format_on_request(roots, tmp_path):
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    reference = write_case(images, masks, "meta", 2, ".mha", direction=ROTATED)
    assert predict(fold_dir, images, out, masks, "--quiet", "--output_format", "input") == 0
    for kind in ("anomaly", "seg"):
        assert_same_geometry(sitk.ReadImage(str(out / f"meta_{kind}.mha")), reference)
    files = json.loads((out / "meta.json").read_text())["files"]
    assert files == {"anomaly": "meta_anomaly.mha", "seg": "meta_seg.mha"}
    (tmp_path / "labels").mkdir()
    shutil.copyfile(out / "meta_seg.mha", tmp_path / "labels" / "meta.mha")  # evaluation reads .mha as well
    assert evaluate_main(["-pred", str(out), "-ref", str(tmp_path / "labels"), "--no_report"]) == 0


# ---- 6. inputs unlike the training data are flagged -------------------------------------------------------------
def _fold_with_fingerprint(fold_dir: Path, tmp_path: Path) -> Path:
    """A copy of the fold with dataset_fingerprint.json of three phantoms like the in-distribution inputs."""
    from itermask_auto.experiment_planning.fingerprint import aggregate, case_fingerprint
    train, masks, cache = tmp_path / "train", tmp_path / "train_masks", tmp_path / "cache"
    cache.mkdir()
    cases = []
    for seed in (11, 12, 13):
        write_case(train, masks, f"t{seed}", seed)
        cases.append(case_fingerprint(f"t{seed}", [train / f"t{seed}_0000{NIFTI}"], masks / f"t{seed}{NIFTI}", cache))
    fold = tmp_path / "fold_0"
    shutil.copytree(fold_dir, fold)
    (fold / "dataset_fingerprint.json").write_text(json.dumps({"cases": cases, "aggregate": aggregate(cases)}))
    return fold


def test_input_unlike_the_training_data_is_flagged(roots, tmp_path, caplog):
    _, fold_dir = roots
    fold = _fold_with_fingerprint(fold_dir, tmp_path)
    images, masks, out, labels = tmp_path / "in", tmp_path / "masks", tmp_path / "out", tmp_path / "labels"
    write_case(images, masks, "alike", 1)
    write_case(images, masks, "coarse", 2, spacing=(3.0, 3.15, 3.3), size=(18, 19, 16))  # same view, coarser
    assert predict(fold, images, out, masks, "--quiet") == 0
    alike, coarse = (json.loads((out / f"{c}.json").read_text())["input_check"] for c in ("alike", "coarse"))
    assert alike["in_training_range"] is True and alike["warnings"] == []
    assert coarse["in_training_range"] is False and any("voxel spacing" in w for w in coarse["warnings"])
    assert coarse["fingerprint"].endswith("fold_0/dataset_fingerprint.json")
    lines = [m for m in caplog.messages if "training data" in m]
    assert len(lines) == 1 and lines[0].startswith("coarse: outside the training data (voxel spacing")
    table = {c["case"]: c["in_training_range"] for c in summary_of(out)["cases"]}
    assert table == {"alike": True, "coarse": False}
    labels.mkdir()
    for case in ("alike", "coarse"):
        empty = sitk.Image(sitk.ReadImage(str(out / f"{case}_seg{NIFTI}")))
        sitk.WriteImage(empty * 0, str(labels / f"{case}{NIFTI}"))
    assert evaluate_main(["-pred", str(out), "-ref", str(labels)]) == 0
    report = (out / "qc" / "index.html").read_text()
    assert report.count("input outside the training data") == 1
    assert re.search(r"id='coarse'.*input outside the training data: voxel spacing", report)


@pytest.mark.shared_data
def test_real_ixi_scan_is_flagged_against_phantom_training_data(tmp_path):
    """The issue's case: a healthy IXI T1 scan against the fingerprint of phantom heads (the demo's data)."""
    from conftest import shared_data_or_skip

    from itermask_auto.experiment_planning.fingerprint import case_fingerprint
    from itermask_auto.inference.input_check import TrainingRanges
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    ixi = shared_data_or_skip("ixi_t1_2mm")
    image = sorted((ixi / "images").glob(f"*{NIFTI}"))[0]
    mask = ixi / "brainmasks" / image.name.replace("_T1", "_brainmask")
    cache = tmp_path / "cache"
    cache.mkdir()
    cases = []
    for seed in (1, 2, 3):  # demo-sized phantom heads
        ph = make_phantom(seed, size=(64, 76, 64), spacing=(2.0, 2.0, 2.0), skull=False, anatomy_scale=0.8)
        sitk.WriteImage(ph.image, str(tmp_path / f"p{seed}{NIFTI}"))
        sitk.WriteImage(ph.brain_mask, str(tmp_path / f"m{seed}{NIFTI}"))
        cases.append(case_fingerprint(f"p{seed}", [tmp_path / f"p{seed}{NIFTI}"], tmp_path / f"m{seed}{NIFTI}", cache))
    ranges = TrainingRanges({"cases": cases}, tmp_path / "fingerprint.json")
    data, _, brain, props = preprocess_case([image], trainer_fixtures.make_plans(), "3d", mask)
    reasons = ranges.check(props, data, brain)
    assert any("brain volume" in r for r in reasons) and any("intensity" in r for r in reasons), reasons
