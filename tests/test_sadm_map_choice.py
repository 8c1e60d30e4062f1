"""sadm `anomaly_map auto`: the map is chosen at calibration by how well its healthy α threshold transfers to a
left-out healthy validation scan (no label read), recorded in calibration.json and used by prediction."""
from __future__ import annotations

import json

import numpy as np
import pytest

from itermask_auto.calibration.thresholds import leave_one_out_fpr, threshold_transfer_error, voxel_threshold
from itermask_auto.methods.sadm.map_choice import map_choice

ALPHA = 0.01


def _scans(offsets, n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(offset, 1.0, n).astype(np.float32) for offset in offsets]


def test_leave_one_out_fpr_is_the_others_threshold_by_hand():
    scans = _scans([0.0, 0.0, 2.0])
    fpr = leave_one_out_fpr(scans, ALPHA)
    for i, held_out in enumerate(scans):
        others = np.concatenate([s for j, s in enumerate(scans) if j != i])
        assert fpr[i] == pytest.approx((held_out > np.quantile(others, 1 - ALPHA, method="higher")).mean())
    assert fpr[2] > 10 * ALPHA     # the shifted scan ("another site") exceeds the others' threshold often
    assert fpr[0] < ALPHA          # ... and lifts the threshold the first scan meets


def test_transfer_error_is_zero_at_alpha_and_symmetric_in_log():
    assert threshold_transfer_error(np.array([ALPHA, ALPHA]), ALPHA) == pytest.approx(0.0)
    assert threshold_transfer_error(np.array([2 * ALPHA]), ALPHA) == pytest.approx(np.log(2))
    assert threshold_transfer_error(np.array([ALPHA / 2]), ALPHA) == pytest.approx(np.log(2))
    assert threshold_transfer_error(np.array([0.0]), ALPHA) == pytest.approx(np.log(ALPHA / 1e-5))   # floored


def test_map_choice_prefers_the_map_whose_scans_share_one_level():
    consistent = _scans([0.0] * 6, seed=1)
    per_scan_offsets = _scans([0.0, 0.8, -0.5, 1.2, -0.9, 0.3], seed=2)    # each scan its own level
    chosen, table = map_choice({"probability": per_scan_offsets, "ssim": consistent,
                                "sum": [a + b for a, b in zip(per_scan_offsets, consistent)]}, ALPHA)
    assert chosen == "ssim"
    assert table["ssim"]["transfer_error"] < table["probability"]["transfer_error"]
    assert set(table) == {"probability", "ssim", "sum"}
    tie, _ = map_choice({"probability": consistent, "ssim": consistent}, ALPHA)
    assert tie == "probability"    # ties keep the order of MAPS


@pytest.fixture(scope="module")
def auto_fold(tmp_path_factory):
    """A tiny sadm fold trained once, then calibrated with anomaly_map 'auto' (8 phantoms: 2 validation cases)."""
    from itermask_auto.training.api import run_training
    from sadm_fixtures import set_method_plan, tiny_plan
    from trainer_fixtures import make_preprocessed_phantom_dataset
    root = tmp_path_factory.mktemp("sadm_auto")
    make_preprocessed_phantom_dataset(root, n_cases=8, size_xyz=(30, 30, 30))
    set_method_plan(root, tiny_plan((1, 1), (3, 3), anomaly_kinds={"noise_blend": 1.0}))
    mp = pytest.MonkeyPatch()
    for sub in ("raw", "preprocessed", "results"):
        mp.setenv(f"ITERMASK_{sub}", str(root / sub))
    fold = run_training(990, "2d", 0, method="sadm", num_threads=1)
    yield root, fold
    mp.undo()


def test_auto_records_its_choice_and_prediction_uses_it(auto_fold):
    from itermask_auto.calibration.calibrate import calibration_cases
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.storage import load_case
    root, fold = auto_fold
    calibration = json.loads((fold / "calibration.json").read_text())
    chosen, choice = calibration["anomaly_map"], calibration["anomaly_map_choice"]
    assert chosen in ("probability", "ssim", "sum") and set(choice["maps"]) == {"probability", "ssim", "sum"}
    assert chosen == min(choice["maps"], key=lambda m: choice["maps"][m]["transfer_error"])
    predictor = Predictor.from_model_folder(fold)
    cases, _ = calibration_cases(fold)
    assert len(cases) >= 2
    # the thresholds were computed on the chosen map (the maps kept from the choice = a fresh inference)
    fresh = []
    for case in cases:
        data, hf, brain, _ = load_case(predictor.calibration["data_folder"], case)
        result = predictor.spec.infer(predictor, data, hf, brain.astype(bool))
        assert result.fit["anomaly_map"] == chosen
        np.testing.assert_array_equal(result.anomaly_map, result.maps[chosen])
        fresh.append(result.anomaly_map[brain.astype(bool)])
    assert calibration["voxel_threshold"] == pytest.approx(voxel_threshold(np.concatenate(fresh), ALPHA))


def test_an_unknown_map_is_refused_by_the_plan_check(auto_fold):
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.methods.registry import get_method
    _, fold = auto_fold
    plans = Plans.load(fold / "plans.json")
    plans.method_plans["sadm"] = {**plans.method_plans["sadm"], "anomaly_map": "best_on_test"}
    with pytest.raises(ValueError, match="anomaly_map 'best_on_test' is not one of probability, ssim, sum, auto"):
        get_method("sadm").check(plans, "2d")
