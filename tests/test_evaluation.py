"""itermask_evaluate: metric functions on hand-made arrays, and evaluate_folder on fake phantom predictions."""
from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from itermask_auto.dataset_conversion.phantom import _fit_scale, make_phantom
from itermask_auto.evaluation import metrics as M
from itermask_auto.evaluation.cli import main as cli_main
from itermask_auto.evaluation.evaluate import evaluate_folder
from itermask_auto.imageio.errors import InputError

SIZE, SPACING = (32, 38, 32), (4.0, 4.0, 4.0)


def _write(image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def make_fake_prediction(root: Path, n_lesion: int = 3, n_healthy_test: int = 1, n_healthy: int = 0,
                         alpha: float | None = None) -> dict:
    """Phantom test set (images/labels/masks) + a fake itermask_predict folder: anomaly = 2*label + noise in the
    brain (0 outside), seg = anomaly > 1.2, volume score = mean of the top 1% of the map. Healthy predictions (no
    labels) go to root/healthy_pred."""
    rng = np.random.default_rng(0)
    scale = _fit_scale(SIZE, SPACING, False)
    dirs = {k: root / k for k in ("imagesTs", "labelsTs", "masksTs", "pred", "healthy_pred")}
    cases = ([(f"les_{i}", 700 + i, 1 + i % 3, "pred") for i in range(n_lesion)]
             + [(f"hts_{i}", 500 + i, 0, "pred") for i in range(n_healthy_test)]
             + [(f"hv_{i}", 600 + i, 0, "healthy_pred") for i in range(n_healthy)])
    for case, seed, n_les, out in cases:
        ph = make_phantom(seed, size=SIZE, spacing=SPACING, skull=False, n_lesions=n_les, anatomy_scale=scale)
        brain = sitk.GetArrayFromImage(ph.brain_mask) > 0
        label = sitk.GetArrayFromImage(ph.label) > 0
        anomaly = np.where(brain, 2.0 * label + rng.uniform(0.01, 1.3, brain.shape), 0).astype(np.float32)
        seg = (anomaly > 1.2).astype(np.uint8)
        for arr, name in ((anomaly, f"{case}_anomaly.nii.gz"), (seg, f"{case}_seg.nii.gz")):
            im = sitk.GetImageFromArray(arr)
            im.CopyInformation(ph.image)
            _write(im, dirs[out] / name)
        score = float(np.sort(anomaly[brain])[-max(1, brain.sum() // 100):].mean())
        info = {"case": case, "volume_score": score, "anomalous": bool(label.any()), "tau": 0.5,
                "network_passes": 3, "seconds": 0.1, "voxel_threshold": 1.2}
        if alpha is not None:
            info["alpha"] = alpha
        (dirs[out] / f"{case}.json").write_text(json.dumps(info))
        if out == "pred":
            _write(ph.image, dirs["imagesTs"] / f"{case}_0000.nii.gz")
            _write(ph.label, dirs["labelsTs"] / f"{case}.nii.gz")
        _write(ph.brain_mask, dirs["masksTs"] / f"{case}.nii.gz")
    return dirs


# ---- metric functions ------------------------------------------------------------------------------------------
def test_dice_precision_recall_known():
    pred = np.array([1, 1, 1, 0, 0, 0], bool)
    ref = np.array([1, 1, 0, 1, 0, 0], bool)
    c = M.confusion(pred, ref)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (2, 1, 1, 2)
    assert M.dice(pred, ref) == pytest.approx(2 * 2 / (4 + 1 + 1))
    assert M.precision_from_counts(2, 1) == pytest.approx(2 / 3)
    assert M.recall_from_counts(2, 1) == pytest.approx(2 / 3)
    assert np.isnan(M.dice(np.zeros(4, bool), np.zeros(4, bool)))  # undefined, not 1 or 0
    assert M.dice(np.ones(4, bool), np.ones(4, bool)) == 1.0


def test_auroc_known_cases():
    y = np.array([0, 0, 0, 1, 1], bool)
    assert M.auroc(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), y) == 1.0
    assert M.auroc(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), y) == 0.0
    assert M.auroc(np.ones(5), y) == 0.5  # ties count one half
    # one inversion out of 2*3 pairs
    assert M.auroc(np.array([0.1, 0.2, 0.85, 0.8, 0.9]), y) == pytest.approx(5 / 6)
    rng = np.random.default_rng(1)
    assert abs(M.auroc(rng.random(20000), rng.random(20000) < 0.3) - 0.5) < 0.02
    assert np.isnan(M.auroc(np.ones(3), np.zeros(3, bool)))


def test_average_precision_known_cases():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0], bool)
    assert M.average_precision(np.ones(8), y) == pytest.approx(0.25)  # constant scores: prevalence
    assert M.average_precision(np.array([8, 1, 7, 2, 3, 4, 5, 6.0]), y) == 1.0
    # ranks: pos at 1 and 3 -> AP = (1/1 + 2/3) / 2
    assert M.average_precision(np.array([8, 7, 6, 1, 2, 3, 4, 5.0]), y) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(M.average_precision(np.ones(3), np.zeros(3, bool)))


def test_roc_curve_and_fpr_at_tpr():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0], bool)  # 5 positives, 5 negatives
    fpr, tpr, thr = M.roc_curve(scores, y)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert M.fpr_at_tpr(scores, y, 0.8) == pytest.approx(0.2)  # 4/5 positives above 0.45 with one negative
    assert M.fpr_at_tpr(scores, y, 1.0) == pytest.approx(0.4)
    assert M.fpr_at_tpr(np.array([1.0, 2, 3, 4]), np.array([0, 0, 1, 1], bool), 0.9) == 0.0


def test_best_dice_threshold_is_oracle():
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    y = np.array([1, 1, 0, 0, 0], bool)
    d, thr = M.best_dice_threshold(scores, y)
    assert d == 1.0 and thr == pytest.approx(0.8)


def test_ranking_metrics_single_sort_agrees_with_separate_functions():
    rng = np.random.default_rng(2)
    y = rng.random(3000) < 0.1
    s = np.round(rng.random(3000) + y * 0.4, 1).astype(np.float32)  # many ties
    r = M.ranking_metrics(s, y)
    assert r["auroc"] == pytest.approx(M.auroc(s, y)) and r["auprc"] == pytest.approx(M.average_precision(s, y))
    assert (r["oracle_dice"], r["oracle_threshold"]) == pytest.approx(M.best_dice_threshold(s, y))
    assert r["oracle_dice"] >= M.dice(s >= 0.7, y)


def test_lesions_and_tertiles():
    label = np.zeros((10, 10, 10), bool)
    label[1:3, 1:3, 1:3] = True  # 8 voxels
    label[6:9, 6:9, 6:9] = True  # 27 voxels
    label[5, 0, 9] = True  # 1 voxel
    seg = np.zeros_like(label)
    seg[7, 7, 7] = True
    les = sorted(M.lesions(label, seg, 2.0), key=lambda lesion: lesion["voxels"])
    assert [lesion["voxels"] for lesion in les] == [1, 8, 27]
    assert [lesion["detected"] for lesion in les] == [False, False, True]
    assert les[2]["volume_mm3"] == 54.0
    edges = M.tertile_edges([1, 2, 3, 4, 5, 6])
    assert [M.tertile_of(v, edges) for v in (1, 3, 6)] == ["small", "medium", "large"]


# ---- evaluate_folder -------------------------------------------------------------------------------------------
def test_evaluate_folder_end_to_end(tmp_path):
    d = make_fake_prediction(tmp_path, n_lesion=3, n_healthy_test=1, n_healthy=2)
    s = evaluate_folder(d["pred"], d["labelsTs"], healthy_dir=d["healthy_pred"], brain_dir=d["masksTs"],
                        images_dir=d["imagesTs"], report=False)
    assert s["n_cases"] == 4 and s["n_lesion_cases"] == 3 and s["n_healthy_cases"] == 2
    # anomaly = 2*label + U(0.01, 1.3): perfectly separable at 1.2 < t < 1.3 but seg uses 1.2
    assert s["voxel_ranking"]["pooled_auroc"] == 1.0 and s["voxel_ranking"]["pooled_auprc"] == 1.0
    seg = s["segmentation"]
    assert seg["fn"] == 0 and seg["pooled_recall"] == 1.0 and seg["tp"] > 0 and seg["fp"] > seg["tp"]
    assert seg["pooled_dice"] == pytest.approx(2 * seg["tp"] / (2 * seg["tp"] + seg["fp"]))
    oracle = s["best_global_threshold_on_labels"]
    assert oracle["dice"] == 1.0 and "not an upper bound" in oracle["note"]
    assert oracle["dice"] >= s["segmentation"]["pooled_dice"]
    assert "dice" not in s["segmentation"]  # the honest one has its own name; the oracle never stands alone
    det = s["detection"]
    assert det["n_positive"] == 3 and det["n_negative"] == 3 and det["auroc"] == 1.0
    assert det["fpr_at_tpr_0.9"] == 0.0 and det["calibrated_sensitivity"] == 1.0
    h = s["healthy_voxel_fpr"]
    assert h["n_cases"] == 3 and h["alpha"] == 0.01 and h["alpha_source"] == "default"
    assert h["voxel_fpr"] == pytest.approx(0.1 / 1.29, abs=0.02)  # P(U(0.01, 1.3) > 1.2)
    assert s["lesion_size"]["lesions_small"]["n"] + s["lesion_size"]["lesions_large"]["n"] >= 2
    on_disk = json.loads((d["pred"] / "summary.json").read_text())
    assert set(on_disk) >= {"segmentation", "voxel_ranking", "best_global_threshold_on_labels", "lesion_size",
                            "detection", "healthy_voxel_fpr", "cases"}
    rows = list(csv.DictReader(open(d["pred"] / "metrics_per_case.csv")))
    assert [r["case"] for r in rows] == ["hts_0", "les_0", "les_1", "les_2"]
    assert float(rows[0]["dice"]) == 0.0 and rows[0]["has_lesion"] == "False" and float(rows[1]["auroc"]) == 1.0
    assert not (d["pred"] / "qc").exists()


def test_evaluate_without_healthy_alpha_from_case_json(tmp_path):
    d = make_fake_prediction(tmp_path, n_lesion=2, n_healthy_test=0, alpha=0.05)
    s = evaluate_folder(d["pred"], d["labelsTs"], report=False, alpha=0.2)  # brain = anomaly > 0
    assert s["n_healthy_cases"] == 0 and s["detection"]["n_negative"] == 0
    assert s["detection"]["auroc"] is None  # undefined without negatives -> null in JSON
    assert s["healthy_voxel_fpr"]["alpha"] == 0.05 and s["healthy_voxel_fpr"]["alpha_source"] == "CASE.json"
    assert s["cases"][0]["brain_source"].startswith("anomaly")
    assert s["voxel_ranking"]["pooled_auroc"] == 1.0


def test_dice_at_the_calibrated_healthy_thresholds_beside_case_seg(tmp_path):
    """The map cut at calibration.json's healthy thresholds: at 2.0 every lesion voxel (2 + U(0.01, 1.3)) and no
    noise voxel (U(0.01, 1.3)) is above it, Dice 1; at 0.5 most of the noise is too."""
    d = make_fake_prediction(tmp_path, n_lesion=2, n_healthy_test=0)
    fold = tmp_path / "model"
    fold.mkdir()
    (fold / "calibration.json").write_text(json.dumps({"alpha": 0.01, "voxel_threshold": 2.0,
                                                       "voxel_thresholds": {"0.01": 2.0, "0.05": 0.5}}))
    for case_json in d["pred"].glob("*.json"):
        info = json.loads(case_json.read_text())
        case_json.write_text(json.dumps({**info, "model_folder": str(fold)}))
    s = evaluate_folder(d["pred"], d["labelsTs"], brain_dir=d["masksTs"], report=False)
    at = s["dice_at_healthy_thresholds"]
    assert set(at) == {"alpha_0.01", "healthy_fpr_0.01", "healthy_fpr_0.05"}
    assert at["alpha_0.01"]["pooled_dice"] == 1.0 and at["alpha_0.01"]["threshold"] == 2.0
    low = at["healthy_fpr_0.05"]   # 0.5 lets most of the noise through: recall 1, precision low
    assert low["pooled_recall"] == 1.0 and low["pooled_precision"] < 0.5
    assert s["segmentation"]["pooled_dice"] < 1.0   # CASE_seg (threshold 1.2) is reported on its own


def test_each_healthy_threshold_reports_what_it_marks_in_the_healthy_scans(tmp_path):
    """Healthy maps are U(0.01, 1.3) in the brain: the cut at 2.0 marks none of it, the cut at 0.5 about
    (1.3 - 0.5) / 1.29 of it."""
    d = make_fake_prediction(tmp_path, n_lesion=1, n_healthy_test=0, n_healthy=2)
    fold = tmp_path / "model"
    fold.mkdir()
    (fold / "calibration.json").write_text(json.dumps({"alpha": 0.01, "voxel_threshold": 2.0,
                                                       "voxel_thresholds": {"0.05": 0.5}}))
    for case_json in list(d["pred"].glob("*.json")) + list(d["healthy_pred"].glob("*.json")):
        case_json.write_text(json.dumps({**json.loads(case_json.read_text()), "model_folder": str(fold)}))
    s = evaluate_folder(d["pred"], d["labelsTs"], healthy_dir=d["healthy_pred"], brain_dir=d["masksTs"],
                        report=False)
    at = s["dice_at_healthy_thresholds"]
    assert at["alpha_0.01"]["healthy_voxel_fpr"] == 0.0
    assert at["healthy_fpr_0.05"]["healthy_voxel_fpr"] == pytest.approx(0.8 / 1.29, abs=0.02)
    # the segmentation's own healthy FPR (CASE_seg = map > 1.2) stays where it was
    assert s["healthy_voxel_fpr"]["voxel_fpr"] == pytest.approx(0.1 / 1.29, abs=0.02)
    # predictions of two models (e.g. two folds): no single model's thresholds cut them all
    other = tmp_path / "model_fold1"
    shutil.copytree(fold, other)
    hv = d["healthy_pred"] / "hv_0.json"
    hv.write_text(json.dumps({**json.loads(hv.read_text()), "model_folder": str(other)}))
    s = evaluate_folder(d["pred"], d["labelsTs"], healthy_dir=d["healthy_pred"], brain_dir=d["masksTs"],
                        report=False)
    assert s["dice_at_healthy_thresholds"] == {}


def test_label_on_other_grid_is_resampled(tmp_path, caplog):
    d = make_fake_prediction(tmp_path, n_lesion=1, n_healthy_test=0)
    path = d["labelsTs"] / "les_0.nii.gz"
    label = sitk.ReadImage(str(path))
    origin = [o - s / 4 for o, s in zip(label.GetOrigin(), label.GetSpacing())]  # each voxel split in 2x2x2
    fine = sitk.Resample(label, [2 * n for n in label.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                         origin, [s / 2 for s in label.GetSpacing()], label.GetDirection(), 0, label.GetPixelID())
    assert sitk.GetArrayFromImage(fine).sum() == 8 * sitk.GetArrayFromImage(label).sum()
    sitk.WriteImage(fine, str(path))
    s = evaluate_folder(d["pred"], d["labelsTs"], report=False)
    assert "resampled" in caplog.text and "les_0" in caplog.text
    assert s["cases"][0]["auroc"] == pytest.approx(1.0, abs=1e-3)
    assert s["cases"][0]["label_voxels"] == int(sitk.GetArrayFromImage(label).sum())


def test_missing_label_is_a_one_line_error(tmp_path, caplog):
    d = make_fake_prediction(tmp_path, n_lesion=2, n_healthy_test=0)
    (d["labelsTs"] / "les_1.nii.gz").unlink()
    with pytest.raises(InputError) as e:
        evaluate_folder(d["pred"], d["labelsTs"], report=False)
    assert "les_1.nii.gz" in str(e.value) and "\n" not in str(e.value)
    assert cli_main(["-pred", str(d["pred"]), "-ref", str(d["labelsTs"]), "--no_report"]) == 1
    assert "les_1" in caplog.text


def test_cli_with_report(tmp_path):
    d = make_fake_prediction(tmp_path, n_lesion=2, n_healthy_test=1)
    assert cli_main(["-pred", str(d["pred"]), "-ref", str(d["labelsTs"]), "-brain", str(d["masksTs"]),
                     "-images", str(d["imagesTs"])]) == 0
    html = (d["pred"] / "qc" / "index.html").read_text()
    order = [html.index(f"id='{c}'") for c in ("les_0", "les_1", "hts_0")]
    scores = {r["case"]: r["volume_score"] for r in json.loads((d["pred"] / "summary.json").read_text())["cases"]}
    assert [c for _, c in sorted(zip(order, ("les_0", "les_1", "hts_0")))] == sorted(scores, key=lambda c: -scores[c])
    for c in scores:
        png = d["pred"] / "qc" / f"{c}.png"
        assert png.stat().st_size > 5000
    assert "http" not in html.replace("http-equiv", "")  # self-contained


def test_a_rim_margin_scored_without_brain_masks_is_named_once(tmp_path, caplog):
    d = make_fake_prediction(tmp_path, n_lesion=2, n_healthy_test=0)
    for case in ("les_0", "les_1"):   # as a calibration that chose a 4 mm margin writes CASE.json
        path = d["pred"] / f"{case}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "brain_erosion_mm": 4.0}))
    with caplog.at_level(logging.WARNING):
        evaluate_folder(d["pred"], d["labelsTs"], report=False)
    rim = [r.getMessage() for r in caplog.records if "brain-rim margin" in r.getMessage()]
    assert len(rim) == 1 and "2 case(s)" in rim[0] and "4 mm" in rim[0] and "-brain" in rim[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):   # with the brain masks the rim's lesion voxels count: nothing to say
        evaluate_folder(d["pred"], d["labelsTs"], brain_dir=d["masksTs"], report=False)
    assert "brain-rim margin" not in caplog.text
