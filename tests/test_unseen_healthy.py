"""benchmarks/unseen_healthy.py: the per-scan figures read from a prediction folder and their comparison with the
bounds calibration.json states (files written by hand, so each figure is known)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from benchmark_scripts import load_benchmark


def _write_case(folder: Path, case: str, above: int, segmented: int, anomalous: bool) -> None:
    """A 10x10x10 map: brain = the inner 8x8x4 block (256 voxels, 0.5 elsewhere above 0), `above` of them at 3.0
    (over the voxel threshold 2.0); the segmentation marks `segmented` brain voxels and one voxel outside it."""
    anomaly = np.zeros((10, 10, 10), np.float32)
    brain = np.zeros_like(anomaly, bool)
    brain[1:9, 1:9, 3:7] = True
    anomaly[brain] = 0.5
    idx = np.nonzero(brain)
    anomaly[idx[0][:above], idx[1][:above], idx[2][:above]] = 3.0
    anomaly[idx[0][-1], idx[1][-1], idx[2][-1]] = 2.0   # at the threshold: not above it
    seg = np.zeros_like(anomaly, np.uint8)
    seg[idx[0][:segmented], idx[1][:segmented], idx[2][:segmented]] = 1
    seg[0, 0, 0] = 1   # outside the brain: not counted
    nib.save(nib.Nifti1Image(anomaly, np.eye(4)), folder / f"{case}_anomaly.nii.gz")
    nib.save(nib.Nifti1Image(seg, np.eye(4)), folder / f"{case}_seg.nii.gz")
    (folder / f"{case}.json").write_text(json.dumps({
        "case": case, "volume_score": 1.0, "anomalous": anomalous, "voxel_threshold": 2.0, "seconds": 1.0,
        "brain_mask_source": "deepbet", "files": {"anomaly": f"{case}_anomaly.nii.gz", "seg": f"{case}_seg.nii.gz"}}))


def test_unseen_healthy_figures_against_the_calibrated_bounds(tmp_path):
    module = load_benchmark("unseen_healthy")
    _write_case(tmp_path, "a", above=0, segmented=0, anomalous=False)
    _write_case(tmp_path, "b", above=64, segmented=32, anomalous=True)
    _write_case(tmp_path, "c", above=8, segmented=0, anomalous=False)
    _write_case(tmp_path, "old", above=200, segmented=200, anomalous=True)   # an earlier run's: not counted
    rows = module.scan_figures(tmp_path, ["c", "a", "b"])
    assert [r["case"] for r in rows] == ["a", "b", "c"]
    assert [r["voxel_fpr"] for r in rows] == pytest.approx([0.0, 0.25, 8 / 256])
    assert [r["segmented_fraction"] for r in rows] == pytest.approx([0.0, 0.125, 0.0])
    calibration = {"alpha": 0.01, "detection_fpr_bound": 0.1, "voxel_fpr_bound": 0.02, "bound_confidence": 0.9,
                   "brain_masks": "both", "voxel_fpr_per_case_mean": 0.009, "healthy_final_mask_fraction": 0.01}
    figures = module.compare(rows, calibration)
    assert figures["n"] == 3 and figures["detection_fpr"] == pytest.approx(1 / 3)
    assert figures["voxel_fpr_mean"] == pytest.approx((0.25 + 8 / 256) / 3)
    assert figures["voxel_fpr_max"] == pytest.approx(0.25)
    assert figures["share_above_voxel_bound"] == pytest.approx(2 / 3)   # b (25 %) and c (3.1 %) exceed 2 %
    assert figures["segmented_fraction_mean"] == pytest.approx(0.125 / 3)
    assert module.compare(rows, {**calibration, "voxel_fpr_bound": None})["share_above_voxel_bound"] is None


def test_unseen_healthy_main_counts_this_runs_scans_and_stops_when_none_came(tmp_path, monkeypatch):
    import itermask_auto.inference.predict_folder as predict_module
    module = load_benchmark("unseen_healthy")
    fold, out = tmp_path / "fold_0", tmp_path / "out"
    fold.mkdir()
    out.mkdir()
    (fold / "calibration.json").write_text(json.dumps({
        "alpha": 0.01, "detection_fpr_bound": 0.2, "voxel_fpr_bound": 0.05, "bound_confidence": 0.9,
        "brain_masks": "both", "inference_mode": "itermask2"}))
    _write_case(out, "old", above=200, segmented=200, anomalous=True)   # left by an earlier run
    calls = []

    def fake_predict(input_dir, output_dir, *args, cases=("a", "b"), **kwargs):
        calls.append(kwargs)
        for case in cases:
            _write_case(Path(output_dir), case, above=2, segmented=1, anomalous=False)
        return {"model_folder": str(fold), "cases": {c: {} for c in cases}, "failures": {}}

    monkeypatch.setattr(predict_module, "predict_folder", fake_predict)
    figures = module.main(["-i", str(tmp_path), "-o", str(out), "-d", "1", "-c", "3d", "--mode", "itermask2"])
    assert figures["n"] == 2 and figures["detection_fpr"] == 0.0
    assert figures["voxel_fpr_mean"] == pytest.approx(2 / 256)
    assert figures["masks"] == "none (automatic)" and calls[0]["masks_dir"] is None
    assert "continue_prediction" not in calls[0]   # every scan predicted again
    assert json.loads((out / "unseen_healthy.json").read_text())["n"] == 2
    monkeypatch.setattr(predict_module, "predict_folder",
                        lambda *a, **k: {"model_folder": str(fold), "cases": {}, "failures": {"x": "unreadable"}})
    with pytest.raises(SystemExit, match="no scan was predicted"):
        module.main(["-i", str(tmp_path), "-o", str(out), "-d", "1", "-c", "3d"])
    assert json.loads((out / "unseen_healthy.json").read_text())["failures"] == {"x": "unreadable"}
