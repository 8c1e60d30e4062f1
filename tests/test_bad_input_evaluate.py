"""Issue 7 bad-input suite, itermask_evaluate: labels on another grid are resampled or refused, broken labels get
one line naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.evaluation.cli import main as evaluate_main  # noqa: E402
from bad_input_fixtures import NIFTI, _errors  # noqa: E402


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
