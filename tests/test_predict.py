"""End to end on CPU: short training on phantoms, calibration (never reads labels), itermask_predict on a folder
with a healthy phantom, a lesion phantom and a corrupt file; --continue; Python API."""
from __future__ import annotations

import builtins
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
trainer_fixtures = pytest.importorskip("trainer_fixtures")
pytest.importorskip("itermask_auto.training.api")
pytest.importorskip("itermask_auto.preprocessing.preprocessor")
phantom = pytest.importorskip("itermask_auto.dataset_conversion.phantom")

from itermask_auto.calibration.calibrate import calibrate_model_folder  # noqa: E402
from itermask_auto.inference.cli import main  # noqa: E402
from itermask_auto.inference.predictor import Predictor  # noqa: E402

DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated in-plane: the header must survive


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("itermask")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_roots(mp, root)
    # fewer passes, and every volume fits one 32³ window: keeps this file fast on 2 loaded cores
    dataset, _ = trainer_fixtures.make_cheap_phantom_dataset(root, n_cases=5, max_shrink_passes=3)
    from itermask_auto.training.api import run_training
    fold_dir = run_training(dataset, "3d", fold=0, device="cpu", epochs=1, iterations=2, run_calibration=False)
    yield root, dataset, Path(fold_dir), mp
    mp.undo()


def _write_inputs(folder: Path) -> dict:
    """Images in folder/images, brain masks in folder/masks (given, so no skull-stripper runs)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    geoms = {}
    for case, n_les, seed in (("healthy", 0, 21), ("lesion", 2, 22)):
        ph = phantom.make_phantom(seed, size=(28, 30, 26), spacing=(2.0, 2.1, 2.2), direction=DIRECTION,
                                  origin=(10.0, -20.0, 5.0), skull=False, n_lesions=n_les)
        sitk.WriteImage(ph.image, str(folder / "images" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(ph.brain_mask, str(folder / "masks" / f"{case}.nii.gz"))
        geoms[case] = ph.image
    folder = folder / "images"
    (folder / "bad_0000.nii.gz").write_bytes(b"\x1f\x8b\x08\x00corrupt")
    return geoms


def _no_labels(monkeypatch):
    """Fail loudly on any access to a path containing labelsTs."""
    def guard(fn):
        def wrapped(*a, **k):
            if any("labelsTs" in str(x) for x in a[:1]):
                raise AssertionError(f"label file accessed: {a[0]}")
            return fn(*a, **k)
        return wrapped
    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(np, "load", guard(np.load))
    monkeypatch.setattr(sitk, "ReadImage", guard(sitk.ReadImage))
    monkeypatch.setattr(os, "listdir", guard(os.listdir))
    monkeypatch.setattr(os, "scandir", guard(os.scandir))


def test_calibration_reads_no_labels(trained, monkeypatch):
    root, dataset, fold_dir, _ = trained
    labels = root / "raw" / dataset / "labelsTs"
    assert labels.is_dir() and any(labels.iterdir())            # poisoned labels are there
    poisoned = next(labels.iterdir())
    with monkeypatch.context() as m:
        _no_labels(m)
        with pytest.raises(AssertionError, match="label file accessed"):   # the guard works
            open(poisoned, "rb")
        cal = calibrate_model_folder(fold_dir)
    split = json.loads((fold_dir / "splits.json").read_text())
    assert cal["cases"] == split["val"] and set(cal["cases"]).isdisjoint(split["train"])
    assert 0 < cal["voxel_threshold"] and cal["alpha_achieved"] <= cal["alpha"] + 1e-9
    assert cal["detection_threshold"] == pytest.approx(max(c["scores"]["top1_mean"] for c in cal["per_case"].values()))
    shutil.rmtree(labels)
    again = calibrate_model_folder(fold_dir)
    for key in ("voxel_threshold", "detection_threshold", "itermask2_tau", "alpha_achieved"):
        assert again[key] == cal[key]
    assert json.loads((fold_dir / "calibration.json").read_text())["voxel_threshold"] == cal["voxel_threshold"]


def test_predict_folder_cli(trained, tmp_path, caplog):
    root, dataset, fold_dir, _ = trained
    if not (fold_dir / "calibration.json").exists():
        calibrate_model_folder(fold_dir)
    geoms = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["-i", str(tmp_path / "in" / "images"), "-o", str(out), "-d", dataset, "-f", "0", "--quiet",
            "-masks", str(tmp_path / "in" / "masks")]
    rc = main(args + ["--save_masks"])
    assert rc == 1
    assert "bad" in caplog.text and "bad_0000.nii.gz" in caplog.text
    summary = json.loads((out / "predictions.json").read_text())
    assert set(summary["failures"]) == {"bad"} and "bad_0000.nii.gz" in summary["failures"]["bad"]
    assert {c["case"] for c in summary["cases"]} == {"healthy", "lesion"}
    for case, ref in geoms.items():
        for kind, dtype in (("anomaly", sitk.sitkFloat32), ("seg", sitk.sitkUInt8)):
            im = sitk.ReadImage(str(out / f"{case}_{kind}.nii.gz"))
            assert im.GetSize() == ref.GetSize() and im.GetPixelID() == dtype
            np.testing.assert_allclose(im.GetSpacing(), ref.GetSpacing(), atol=1e-5)
            np.testing.assert_allclose(im.GetOrigin(), ref.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(im.GetDirection(), ref.GetDirection(), atol=1e-6)
        info = json.loads((out / f"{case}.json").read_text())
        assert info["calibrated"] and info["anomalous"] in (True, False) and info["network_passes"] >= 2
        calibration = json.loads((fold_dir / "calibration.json").read_text())
        assert info["brain_erosion_mm"] == calibration["brain_erosion_mm"]   # the margin the map leaves out
        # itermask3d with a calibrated γ: CASE_seg is the procedure's own final mask
        assert info["segmentation_rule"] == "IterMask3D final mask (per-subject tau, calibrated gamma)"
        assert (out / f"{case}_masks" / "pass_00.nii.gz").is_file()
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_seg.nii.gz")))
        assert set(np.unique(seg)) <= {0, 1}
    assert not any(p.name.endswith(".tmp.nii.gz") or ".tmp" in p.name for p in out.iterdir())

    mtime = (out / "healthy.json").stat().st_mtime_ns
    rc2 = main(args + ["--continue"])
    assert rc2 == 1 and (out / "healthy.json").stat().st_mtime_ns == mtime
    assert set(json.loads((out / "predictions.json").read_text())["failures"]) == {"bad"}

    # itermask2 mode: calibrated τ, no sweep, only the good cases of one part
    out2 = tmp_path / "out2"
    assert main(args[:2] + ["-o", str(out2)] + args[4:] + ["-mode", "itermask2", "--num_parts", "2",
                                                           "--part_id", "1"]) == 0   # part 2/2 = "healthy" only
    info = json.loads((out2 / "healthy.json").read_text())
    assert info["procedure"] == "itermask2" and not info["sweep_t"] and not (out2 / "lesion.json").exists()


def test_python_api(trained, tmp_path):
    _, _, fold_dir, _ = trained
    geoms = _write_inputs(tmp_path / "in")
    p = Predictor.from_model_folder(fold_dir)
    p.calibration = None  # without calibration: the per-subject τ final mask, and the summary says so
    pred = p.predict_files([tmp_path / "in" / "images" / "lesion_0000.nii.gz"],
                           tmp_path / "in" / "masks" / "lesion.nii.gz")
    assert pred.anomaly.shape == sitk.GetArrayFromImage(geoms["lesion"]).shape
    assert pred.anomaly.dtype == np.float32 and pred.segmentation.dtype == np.uint8
    assert pred.summary["tau"] >= 0 and pred.summary["windows"] > 0 and pred.summary["network_passes"] >= 2
    assert "no calibration" in pred.summary["segmentation_rule"] and pred.summary["anomalous"] is None
    assert pred.images["seg"].GetSize() == geoms["lesion"].GetSize()


def test_predictions_are_deterministic_on_cpu(trained, tmp_path):
    """Same model, same input, two fresh predictors: identical maps and summaries (seeded noise per pass)."""
    _, _, fold_dir, _ = trained
    _write_inputs(tmp_path / "in")
    image = tmp_path / "in" / "images" / "lesion_0000.nii.gz"
    mask = tmp_path / "in" / "masks" / "lesion.nii.gz"
    first = Predictor.from_model_folder(fold_dir).predict_files([image], mask)
    second = Predictor.from_model_folder(fold_dir).predict_files([image], mask)
    assert np.array_equal(first.anomaly, second.anomaly)
    assert np.array_equal(first.segmentation, second.segmentation)
    assert first.summary["tau"] == second.summary["tau"]


def test_oneshot_method_is_one_pass(trained, tmp_path):
    """The registry's `oneshot` ablation shares the network and runs one whole-brain-masked pass."""
    from itermask_auto.methods.registry import get_method
    from itermask_auto.training.checkpoint import load_trained_model
    _, _, fold_dir, _ = trained
    assert get_method("oneshot").inference == "oneshot"
    network, plans, configuration, _ = load_trained_model(fold_dir)
    _write_inputs(tmp_path / "in")
    pred = Predictor(network, plans, configuration, "oneshot").predict_files(
        [tmp_path / "in" / "images" / "lesion_0000.nii.gz"], tmp_path / "in" / "masks" / "lesion.nii.gz")
    assert pred.summary["procedure"] == "oneshot" and pred.summary["network_passes"] == 1
    assert pred.anomaly.max() > 0
