"""Models trained before the method-folder engine still load and predict the same maps (issue 13).

tests/legacy/models_v0.tar.gz was made by tests/legacy/make_legacy_models.py on the code at commit a9f9a18: tiny
fold folders of itermask3d, oneshot, ae (3d) and itermask2 (2d, two networks), one preprocessed case and the
maps that code predicted for it."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from itermask_auto.inference.predictor import Predictor
from itermask_auto.preprocessing.storage import load_case

ARCHIVE = Path(__file__).parent / "legacy" / "models_v0.tar.gz"
METHODS = [("itermask3d", "3d"), ("oneshot", "3d"), ("ae", "3d"), ("itermask2", "2d")]


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(root, filter="data")
    return root, dict(np.load(root / "expected.npz"))


@pytest.mark.parametrize("method,configuration", METHODS)
def test_legacy_model_predicts_the_same_maps(legacy, method, configuration, monkeypatch):
    root, expected = legacy
    monkeypatch.setenv("ITERMASK_preprocessed", str(root / "preprocessed"))
    fold = root / "results" / "Dataset990_TrainPhantom" / f"{method}__itermaskPlans__{configuration}" / "fold_0"
    predictor = Predictor.from_model_folder(fold)
    assert predictor.method == method and predictor.calibration is not None
    data, hf, brain, _ = load_case(root / "case", "phantom_003")
    pred = predictor.predict_arrays(data, hf, brain)
    np.testing.assert_allclose(pred.anomaly, expected[f"{method}_anomaly"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.segmentation, expected[f"{method}_seg"])
    assert pred.summary["tau"] == pytest.approx(float(expected[f"{method}_tau"]), rel=1e-5)
    assert pred.summary["volume_score"] == pytest.approx(float(expected[f"{method}_score"]), rel=1e-5)
