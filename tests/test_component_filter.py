"""inference.component_filter "healthy_validation": calibration records one voxel more than the largest connected
component of the healthy validation cases' segmentations, and prediction drops the components under it."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import ndimage

from itermask_auto.inference.components import drop_small_components, largest_component_voxels

trainer_fixtures = pytest.importorskip("trainer_fixtures")


def test_components_are_face_connected_and_the_small_ones_dropped():
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[1:3, 1:3, 1:3] = 1          # 8 voxels
    mask[5, 5, 5] = mask[6, 6, 6] = 1   # two single voxels touching at a corner only: two components
    mask[5:7, 1, 1] = 1              # 2 voxels
    assert largest_component_voxels(mask) == 8 and largest_component_voxels(np.zeros((3, 3), bool)) == 0
    kept = drop_small_components(mask, 2)
    assert kept.dtype == np.uint8 and kept.sum() == 10 and not kept[5, 5, 5] and not kept[6, 6, 6]
    assert drop_small_components(mask, 9).sum() == 0
    assert np.array_equal(drop_small_components(mask, 1), mask)   # 1 = nothing to drop


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    root, _, fold_dir = trainer_fixtures.train_tiny_model(tmp_path_factory, "component_fold")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_roots(mp, root)
    yield root, fold_dir
    mp.undo()


def _calibrate(fold_dir, component_filter: str) -> dict:
    from itermask_auto.calibration.calibrate import calibrate_model_folder
    from itermask_auto.experiment_planning.plans import Plans
    plans = Plans.load(fold_dir / "plans.json")
    plans.inference.component_filter = component_filter
    plans.calibration.alpha = 0.05   # a one-iteration model: enough marked voxels to make components of
    plans.save(fold_dir / "plans.json")
    return calibrate_model_folder(fold_dir)


def _segmentations(fold_dir, cases, calibration=None):
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.paths import preprocessed_root
    from itermask_auto.preprocessing.storage import load_case
    predictor = Predictor.from_model_folder(fold_dir)
    if calibration is not None:
        predictor.calibration = calibration
    data_dir = preprocessed_root() / fold_dir.parents[1].name / predictor.config.data_identifier
    out = {}
    for case in cases:
        data, hf, brain, _ = load_case(data_dir, case)
        result, _ = predictor.infer(data, hf, brain)
        out[case] = predictor.segment(result, brain)
    return out


def test_the_size_comes_from_the_healthy_validation_segmentations_and_prediction_drops_under_it(fold):
    _, fold_dir = fold
    plain = _calibrate(fold_dir, "off")
    assert "min_component_voxels" not in plain
    unfiltered = _segmentations(fold_dir, plain["cases"])
    largest = {c: largest_component_voxels(seg) for c, (seg, _) in unfiltered.items()}
    n_components = sum(ndimage.label(seg)[1] for seg, _ in unfiltered.values())
    assert max(largest.values()) > 1 and n_components > len(largest)   # something for the filter to drop
    filtered_cal = _calibrate(fold_dir, "healthy_validation")
    # the thresholds are those of the plain calibration: the filter only removes voxels after them
    assert filtered_cal["voxel_threshold"] == pytest.approx(plain["voxel_threshold"])
    assert filtered_cal["min_component_choice"]["largest_healthy_component_voxels"] == largest
    size = filtered_cal["min_component_voxels"]
    assert size == max(largest.values()) + 1
    for case, (seg, rule) in _segmentations(fold_dir, plain["cases"]).items():
        # a healthy validation case keeps nothing, and never more than before
        assert seg.sum() == 0 and f"components under {size} voxels dropped" in rule
        assert not np.any(seg & ~unfiltered[case][0])
    # the plan decides: set back to off, the recorded size is not applied
    from itermask_auto.experiment_planning.plans import Plans
    plans = Plans.load(fold_dir / "plans.json")
    plans.inference.component_filter = "off"
    plans.save(fold_dir / "plans.json")
    for case, (seg, rule) in _segmentations(fold_dir, plain["cases"]).items():
        assert np.array_equal(seg, unfiltered[case][0]) and "dropped" not in rule
    _calibrate(fold_dir, "off")


def test_a_size_chosen_for_another_inference_mode_is_not_applied(fold, caplog):
    _, fold_dir = fold
    cal = _calibrate(fold_dir, "healthy_validation")
    assert cal["min_component_choice"]["inference_mode"] == "itermask3d"   # the tiny fold's plan
    from itermask_auto.inference.predictor import Predictor
    predictor = Predictor.from_model_folder(fold_dir)
    without_size = {k: v for k, v in cal.items() if k != "min_component_voxels"}
    unfiltered = _segmentations(fold_dir, cal["cases"], calibration=without_size)
    predictor.plans.inference.mode = "itermask2"   # what itermask_predict -mode itermask2 does after loading
    with caplog.at_level(logging.WARNING):
        for case, (seg, rule) in unfiltered.items():
            kept, kept_rule = predictor.segment(_fake_result(seg), np.ones_like(seg, bool))
            assert np.array_equal(kept, seg) and "dropped" not in kept_rule
    assert caplog.text.count("was chosen for inference mode 'itermask3d'") == 1   # once per predictor
    _calibrate(fold_dir, "off")


def _fake_result(final_mask):
    """An InferenceResult whose final mask is `final_mask` (itermask3d's segmentation rule reads it)."""
    from itermask_auto.inference.result import InferenceResult
    return InferenceResult(anomaly_map=final_mask.astype(np.float32), final_mask=final_mask.astype(bool), tau=0.5,
                           procedure="itermask2", passes=1)


def test_an_unknown_filter_is_refused_and_an_older_calibration_warns(fold, caplog):
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.inference.predictor import Predictor
    _, fold_dir = fold
    with pytest.raises(ValueError, match="unknown inference.component_filter 'largest'"):
        _calibrate(fold_dir, "largest")
    with pytest.raises(ValueError, match=r"plans.json: unknown inference.component_filter 'largest'"):
        Predictor.from_model_folder(fold_dir)   # the plan was saved before calibration refused it
    _calibrate(fold_dir, "off")
    plans = Plans.load(fold_dir / "plans.json")
    plans.inference.component_filter = "healthy_validation"   # the plan asks, the calibration predates it
    plans.save(fold_dir / "plans.json")
    with caplog.at_level(logging.WARNING):
        Predictor.from_model_folder(fold_dir)
    assert "has no min_component_voxels" in caplog.text and "calibration.json" in caplog.text
    _calibrate(fold_dir, "off")
