"""sadm `anomaly_map auto`: the map is chosen at calibration by how well its healthy α threshold transfers to a
left-out healthy validation scan (no label read), recorded in calibration.json and used by prediction."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from itermask_auto.calibration.thresholds import leave_one_out_fpr, threshold_transfer_error, voxel_threshold
from itermask_auto.methods.sadm.map_choice import map_choice

ALPHA = 0.01
REFERENCE_PLAN = Path(__file__).resolve().parents[1] / "plans" / "Dataset001_IXI_T1" / "itermask_plans.json"


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


class _Context:
    """What calibrate_map_choice reads of a CalibrationContext (one rank), over synthetic maps."""
    def __init__(self, cases, earlier=None):
        self.cases, self.my_cases, self.earlier = list(cases), list(cases), dict(earlier or {})
        self.state, self.extra_seconds = {}, {}

    def load(self, case):
        return np.zeros((1, 4, 5, 5), np.float32), None, np.ones((4, 5, 5), bool), {}

    def gather(self, local):
        return local

    def progress(self, items, desc):
        return items


def _fake_predictor():
    return SimpleNamespace(plans=SimpleNamespace(calibration=SimpleNamespace(alpha=0.05)),
                           postprocess=lambda result, region: result)


def _fake_maps(monkeypatch, offsets):
    """sadm_maps -> maps whose 'probability' is shifted per scan and whose 'ssim' is not; counts its calls."""
    from itermask_auto.methods.sadm import map_choice as module
    calls = []

    def fake(predictor, plan, data, brain):
        rng = np.random.default_rng(len(calls))
        calls.append(1)
        base = rng.normal(0, 1, brain.shape).astype(np.float32)
        shift = offsets[(len(calls) - 1) % len(offsets)]
        return {"probability": base + shift, "ssim": base, "sum": 2 * base + shift}, 4
    monkeypatch.setattr(module, "sadm_maps", fake)
    return calls


def test_choice_leaves_a_whole_scan_out_and_keeps_what_scoring_needs(monkeypatch):
    from itermask_auto.methods.sadm import map_choice as module
    from itermask_auto.methods.sadm.map_choice import calibrate_map_choice, scan_of
    monkeypatch.setattr(module, "MIN_SCANS", 3)
    assert scan_of("IXI012@automatic") == scan_of("IXI012") == "IXI012"
    calls = _fake_maps(monkeypatch, [0.0, 0.0, 1.5, 1.5, -1.0])
    context = _Context(["a", "a@automatic", "b", "b@automatic", "c"])
    keys = calibrate_map_choice(_fake_predictor(), {"ensemble_t": [250]}, context)
    assert keys["anomaly_map"] == "ssim" and keys["anomaly_map_choice"]["scans"] == 3   # a and a@automatic: one scan
    assert len(calls) == 5                                                              # each case inferred once
    assert all(set(maps) == {"probability", "ssim"} for maps, _ in context.state.values())


def test_a_scan_and_its_automatic_mask_variant_are_left_out_together(monkeypatch):
    """leave_one_out_fpr receives one array per SCAN: a case and its "@automatic" variant concatenated, in the
    order of the context's cases, so a scan is never thresholded by its own other mask source."""
    from itermask_auto.methods.sadm import map_choice as module
    from itermask_auto.methods.sadm.map_choice import calibrate_map_choice
    monkeypatch.setattr(module, "MIN_SCANS", 3)
    _fake_maps(monkeypatch, [0.0, 1.0, 2.0, 3.0, 4.0])
    received = []

    def recording(per_scan, alpha):
        received.append([np.asarray(v).copy() for v in per_scan])
        return leave_one_out_fpr(per_scan, alpha)
    monkeypatch.setattr(module, "leave_one_out_fpr", recording)
    context = _Context(["a", "a@automatic", "b", "c", "c@automatic"])
    calibrate_map_choice(_fake_predictor(), {"ensemble_t": [250]}, context)
    probability = received[0]    # MAPS order: the probability first; its per-case shift tells the cases apart
    voxels = 4 * 5 * 5
    assert [len(v) for v in probability] == [2 * voxels, voxels, 2 * voxels]
    shifts = [np.round(np.median(v[i * voxels:(i + 1) * voxels])) for v in probability for i in range(len(v) // voxels)]
    assert shifts == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_too_few_scans_keep_the_probability_and_a_rerun_keeps_the_first_choice(monkeypatch):
    from itermask_auto.methods.sadm.map_choice import calibrate_map_choice
    from itermask_auto.methods.sadm import map_choice as module
    monkeypatch.setattr(module, "MIN_SCANS", 3)
    calls = _fake_maps(monkeypatch, [0.0])
    keys = calibrate_map_choice(_fake_predictor(), {"ensemble_t": [250]}, _Context(["a", "a@automatic", "b"]))
    assert keys["anomaly_map"] == "probability" and "fewer than 3" in keys["anomaly_map_choice"]["note"]
    assert not calls                        # nothing inferred: the engine's scoring infers as usual
    first = {"anomaly_map": "sum", "anomaly_map_choice": {"rule": "r", "maps": {"sum": {}}}}
    context = _Context(["a", "b", "c"], earlier=first)    # the re-run inside a brain-rim margin
    keys = calibrate_map_choice(_fake_predictor(), {"ensemble_t": [250]}, context)
    assert keys["anomaly_map"] == "sum" and keys["anomaly_map_choice"]["kept_from"]
    assert len(calls) == 3 and all(set(m) == {"probability", "sum"} for m, _ in context.state.values())


class _RankContext(_Context):
    """Rank `rank` of 2: infers every 2nd case; gather joins both ranks' shares (threads stand in for processes)."""
    def __init__(self, cases, rank, exchange):
        super().__init__(cases)
        self.rank, self.my_cases, self.exchange = rank, list(cases)[rank::2], exchange

    def load(self, case):   # each case's maps follow from its index, whichever rank infers it
        return np.full((1, 4, 5, 5), self.cases.index(case), np.float32), None, np.ones((4, 5, 5), bool), {}

    def gather(self, local):
        shares, barrier = self.exchange
        shares[self.rank] = local
        barrier.wait(timeout=30)
        return {**shares[0], **shares[1]}


def test_two_ranks_choose_what_one_rank_chooses(monkeypatch):
    import threading

    from itermask_auto.methods.sadm import map_choice as module
    monkeypatch.setattr(module, "MIN_SCANS", 3)

    def maps_of_index(predictor, plan, data, brain):
        index = int(data.flat[0])
        base = np.random.default_rng(index).normal(0, 1, brain.shape).astype(np.float32)
        shift = (-1.0, 0.5, 1.5, 0.0, -0.5)[index]
        return {"probability": base + shift, "ssim": base, "sum": 2 * base + shift}, 4
    monkeypatch.setattr(module, "sadm_maps", maps_of_index)
    cases = ["a", "b", "c", "d", "e"]
    single = _RankContext(cases, 0, None)
    single.my_cases, single.gather = list(cases), (lambda local: local)
    one = module.calibrate_map_choice(_fake_predictor(), {"ensemble_t": [250]}, single)
    exchange, out = ({}, threading.Barrier(2)), {}
    ranks = [_RankContext(cases, r, exchange) for r in (0, 1)]
    threads = [threading.Thread(target=lambda c=c: out.__setitem__(
        c.rank, module.calibrate_map_choice(_fake_predictor(), {"ensemble_t": [250]}, c))) for c in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out[0] == out[1] == one and one["anomaly_map"] == "ssim"
    assert [sorted(c.state) for c in ranks] == [["a", "c", "e"], ["b", "d"]]   # each rank keeps its own cases


def test_an_unknown_map_is_refused_by_the_plan_check():
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.methods.registry import get_method
    plans = Plans.load(REFERENCE_PLAN)
    assert plans.method_plans["sadm"]["anomaly_map"] == "auto"          # what the planner writes today
    plans.method_plans["sadm"] = {**plans.method_plans["sadm"], "anomaly_map": "best_on_test"}
    with pytest.raises(ValueError, match="anomaly_map 'best_on_test' is not one of probability, ssim, sum, auto"):
        get_method("sadm").check(plans, "2d")


def test_a_calibration_that_does_not_record_its_map_is_loaded_with_a_warning(caplog):
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.methods.registry import get_method
    plans, sadm = Plans.load(REFERENCE_PLAN), get_method("sadm")
    with caplog.at_level("WARNING"):
        sadm.check_calibration(plans, {"anomaly_map": "ssim", "voxel_threshold": 0.3})
        sadm.check_calibration(plans, None)          # an uncalibrated fold: nothing to say
    assert "does not record" not in caplog.text
    with caplog.at_level("WARNING"):
        sadm.check_calibration(plans, {"voxel_threshold": 0.3})     # written before the key existed
    assert "does not record the map" in caplog.text and "read as 'probability' thresholds" in caplog.text


@pytest.fixture(scope="module")
def auto_fold(tmp_path_factory):
    """A tiny sadm fold trained once and calibrated with anomaly_map 'auto' (15 phantoms: 3 validation scans, the
    choice allowed on 3 here)."""
    from itermask_auto.methods.sadm import map_choice as module
    from itermask_auto.training.api import run_training
    from sadm_fixtures import set_method_plan, tiny_plan
    from trainer_fixtures import make_preprocessed_phantom_dataset
    root = tmp_path_factory.mktemp("sadm_auto")
    make_preprocessed_phantom_dataset(root, n_cases=15, size_xyz=(30, 30, 30))
    set_method_plan(root, tiny_plan((1, 1), (3, 3), anomaly_kinds={"noise_blend": 1.0}))
    mp = pytest.MonkeyPatch()
    mp.setattr(module, "MIN_SCANS", 3)
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
    assert choice["scans"] == 3 and set(choice["maps"]) == {"probability", "ssim", "sum"}
    assert chosen == min(choice["maps"], key=lambda m: choice["maps"][m]["transfer_error"])
    predictor = Predictor.from_model_folder(fold)
    cases, _ = calibration_cases(fold)
    # the thresholds were computed on the chosen map (the maps kept from the choice = a fresh inference)
    fresh = []
    for case in cases:
        data, hf, brain, _ = load_case(predictor.calibration["data_folder"], case)
        region = predictor.scoring_region(brain.astype(bool))
        result = predictor.spec.infer(predictor, data, hf, region)
        assert result.fit["anomaly_map"] == chosen
        np.testing.assert_array_equal(result.anomaly_map, result.maps[chosen])
        fresh.append(result.anomaly_map[region])
    assert calibration["voxel_threshold"] == pytest.approx(
        voxel_threshold(np.concatenate(fresh), calibration["alpha"]))
    from itermask_auto.model_sharing.model_card import model_card, model_card_markdown
    assert f"- anomaly map: {chosen}" in model_card_markdown(model_card(fold))     # the shared model says which


def test_a_fold_whose_plan_names_another_map_is_refused_at_load_until_recalibrated(auto_fold):
    from itermask_auto.inference.predictor import Predictor
    _, fold = auto_fold
    chosen = json.loads((fold / "calibration.json").read_text())["anomaly_map"]
    other = next(m for m in ("probability", "ssim") if m != chosen)
    from itermask_auto.calibration.calibrate import calibrate_model_folder
    path, calibration_path = fold / "plans.json", fold / "calibration.json"
    original, calibration = path.read_text(), calibration_path.read_text()
    plans = json.loads(original)
    plans["method_plans"]["sadm"]["anomaly_map"] = other
    try:
        path.write_text(json.dumps(plans))
        with pytest.raises(ValueError, match=f"calibration.json: this sadm fold was calibrated for anomaly_map "
                                             f"'{chosen}' but its plan now says '{other}': recalibrate"):
            Predictor.from_model_folder(fold)
        assert Predictor.from_model_folder(fold, use_calibration=False).calibration is None   # calibration's own load
        calibrate_model_folder(fold, "cpu")      # what the refusal asks for: the fixed map, recalibrated
        recalibrated = json.loads(calibration_path.read_text())
        assert recalibrated["anomaly_map"] == other and "anomaly_map_choice" not in recalibrated
        assert Predictor.from_model_folder(fold).calibration["anomaly_map"] == other
    finally:
        path.write_text(original)
        calibration_path.write_text(calibration)
    assert Predictor.from_model_folder(fold).calibration["anomaly_map"] == chosen
