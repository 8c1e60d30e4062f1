"""IterMask3D's plan mode "itermask2" with τ calibrated on the healthy final masks (issue 17): the τ search, and a
calibrated fold whose scored healthy masks are the ones the search chose."""
from __future__ import annotations

import logging
import math

import pytest

from itermask_auto.methods.itermask3d.tau import WARM_START_FACTOR, pooled_fraction, search_tau

trainer_fixtures = pytest.importorskip("trainer_fixtures")


def _decaying(scale: float):
    """A masked fraction that falls as τ grows, as the shrink's does."""
    return lambda tau: math.exp(-tau / scale)


@pytest.mark.parametrize("start", [0.01, 4.6, 500.0])
def test_search_reaches_alpha_from_below_whatever_the_start(start):
    alpha, steps = 0.01, 6
    tau, table = search_tau(_decaying(1.0), start, alpha, bisection_steps=steps)
    exact = -math.log(alpha)                      # the τ at which the fraction is exactly α
    assert math.exp(-tau) <= alpha                # never above α
    assert tau <= exact * 1.1                     # and close: the last bracket is narrow
    assert {"tau": tau, "fraction": math.exp(-tau)} in table
    assert len(table) <= 2 + 2 * 12 + steps        # bracketing is bounded, then `steps` bisections


def test_search_returns_the_largest_tau_tried_when_nothing_reaches_alpha():
    tau, table = search_tau(lambda t: 0.5, 1.0, 0.01, bisection_steps=3)
    assert tau == max(row["tau"] for row in table) and len(table) == 13


def test_search_refuses_a_useless_start():
    with pytest.raises(ValueError):
        search_tau(_decaying(1.0), 0.0, 0.01)


def test_search_after_doubling_does_not_try_the_same_tau_twice():
    tau, table = search_tau(_decaying(1.0), 0.5, 0.01, bisection_steps=4)
    tried = [row["tau"] for row in table]
    assert len(tried) == len(set(tried)) and math.exp(-tau) <= 0.01


def test_search_on_a_power_law_curve_stops_within_tolerance_in_few_steps():
    """A power law through the IXI calibration's 0.859 % at τ 0.4918 (slope −2.33; measured −2.35): a secant lands
    within 10 % of α in one or two steps where the old geometric bisection ran all six."""
    alpha = 0.01
    curve = lambda tau: 0.00859 * (tau / 0.4918) ** -2.333   # noqa: E731 - 0.859 % at 0.4918, 1.291 % at 0.4135
    tau, table = search_tau(curve, 0.9836, alpha, bisection_steps=6)
    assert 0.9 * alpha <= curve(tau) <= alpha
    after_bracketing = len(table) - 3            # 0.9836 (0.17 %), 0.4918 (0.86 %), 0.2459 (> α)
    assert [row["tau"] for row in table[:3]] == pytest.approx([0.9836, 0.4918, 0.2459])
    assert 1 <= after_bracketing <= 2
    flat_then_steep = lambda tau: 0.02 if tau < 1.0 else 0.0   # noqa: E731 - a zero fraction: midpoints, no log
    tau, table = search_tau(flat_then_steep, 4.0, alpha, bisection_steps=5)
    assert flat_then_steep(tau) <= alpha and len(table) == 4 + 5   # 4, 2, 1 (0 %), 0.5 (2 %), then 5 steps


def test_a_warm_start_near_the_answer_brackets_it_in_fewer_evaluations():
    """The second scoring inside a brain-rim margin: the margin drops rim voxels, the curve moves a little (here 10 %
    lower), and the search starts from the τ found without it with a small bracketing factor."""
    alpha = 0.01
    without_margin = lambda tau: 0.00859 * (tau / 0.4918) ** -2.333   # noqa: E731 - the IXI fit above
    inside_margin = lambda tau: 0.9 * without_margin(tau)            # noqa: E731
    cold_tau, cold = search_tau(inside_margin, 0.9836, alpha, bisection_steps=6)
    warm_tau, warm = search_tau(inside_margin, 0.4715, alpha, bisection_steps=6, factor=WARM_START_FACTOR)
    assert 0.9 * alpha <= inside_margin(warm_tau) <= alpha and 0.9 * alpha <= inside_margin(cold_tau) <= alpha
    assert len(warm) <= 3 < len(cold)
    assert warm[1]["tau"] == pytest.approx(0.4715 / WARM_START_FACTOR)   # 0.85 % at the start: one step down
    with pytest.raises(ValueError):
        search_tau(inside_margin, 0.4715, alpha, factor=1.0)


def test_search_stops_as_soon_as_a_tau_lands_within_tolerance():
    """The IXI calibration inside its 2 mm margin: τ 0.9311 left 0.150 %, its half 0.4656 left 0.968 % (within 10 %
    of α) and the search still halved once more (0.2328: 4.29 %, 7 min on 2 cores) to find a lower end it did not
    need. A start within tolerance is the answer too."""
    alpha = 0.01
    measured = {0.9311: 0.00150, 0.4656: 0.00968}
    tau, table = search_tau(lambda t: measured[round(t, 4)], 0.9311, alpha)
    assert tau == pytest.approx(0.9311 / 2) and len(table) == 2
    tau, table = search_tau(lambda t: 0.0095, 0.5, alpha, factor=WARM_START_FACTOR)
    assert tau == 0.5 and len(table) == 1


def test_pooled_fraction_weighs_cases_by_their_voxels():
    assert pooled_fraction({"a": (1, 100), "b": (9, 100)}) == pytest.approx(0.05)
    assert pooled_fraction({"a": (0, 10), "b": (10, 1000)}) == pytest.approx(10 / 1010)
    assert pooled_fraction({}) == 0.0


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    root, dataset, fold_dir = trainer_fixtures.train_tiny_model(tmp_path_factory, "tau_fold")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_roots(mp, root)
    yield fold_dir
    mp.undo()


def _calibrate(fold_dir, target: str, margins=(), tau_scale: str = "absolute", alpha: float = 0.05,
               mode: str = "itermask2", median_voxels: int = 0) -> dict:
    from itermask_auto.calibration.calibrate import calibrate_model_folder
    from itermask_auto.experiment_planning.plans import Plans
    plans = Plans.load(fold_dir / "plans.json")
    plans.inference.mode, plans.calibration.itermask2_tau_target = mode, target
    plans.inference.tau_scale = tau_scale
    # a median window of median_voxels voxels along the finest axis (0: none)
    plans.inference.map_median_mm = median_voxels * min(plans.configuration("3d").spacing) if median_voxels else 0.0
    plans.calibration.alpha, plans.calibration.brain_erosion_candidates_mm = alpha, list(margins)
    plans.calibration.gamma_target = "sweep_quantile"   # as the planner writes it
    plans.save(fold_dir / "plans.json")
    return calibrate_model_folder(fold_dir)


def test_calibrated_tau_leaves_alpha_of_the_healthy_brains_masked(fold):
    old = _calibrate(fold, "first_pass_quantile")
    new = _calibrate(fold, "final_mask_fraction")
    alpha = new["alpha"]
    assert new["inference_mode"] == "itermask2" and "itermask2_tau_search" in new
    records = new["per_case"].values()
    scored = pooled_fraction({i: (r["scores"]["mask_fraction"] * r["scored_voxels"], r["scored_voxels"])
                              for i, r in enumerate(records)})
    chosen = [row for row in new["itermask2_tau_search"] if row["tau"] == new["itermask2_tau"]]
    # the healthy cases are scored with the τ chosen, as prediction will run them: the search's own masks
    assert chosen and scored == pytest.approx(chosen[0]["fraction"], abs=1e-6)
    assert all(r["tau"] == pytest.approx(new["itermask2_tau"]) for r in records)
    assert scored <= alpha + 1e-9
    # the first-pass quantile leaves at most α masked after the first pass already, and the shrink only removes
    # voxels: every τ the search found masking more than α lies below it
    over = [r["tau"] for r in new["itermask2_tau_search"] if r["fraction"] > alpha]
    assert all(tau <= old["itermask2_tau"] * (1 + 1e-9) for tau in over)


def test_with_a_planned_median_filter_the_search_counts_the_masks_prediction_writes(fold):
    # the engine majority-votes every final mask over the window (map_filter.py); τ must leave α of the healthy
    # brains masked in those masks, not in the unfiltered ones (which hold the specks the vote removes)
    plain = _calibrate(fold, "final_mask_fraction")
    filtered = _calibrate(fold, "final_mask_fraction", median_voxels=3)
    records = filtered["per_case"].values()
    scored = pooled_fraction({i: (r["scores"]["mask_fraction"] * r["scored_voxels"], r["scored_voxels"])
                              for i, r in enumerate(records)})
    chosen = [row for row in filtered["itermask2_tau_search"] if row["tau"] == filtered["itermask2_tau"]]
    assert chosen and scored == pytest.approx(chosen[0]["fraction"], abs=1e-6) and scored <= filtered["alpha"] + 1e-9
    assert scored > 0   # the filter leaves something to count at this τ
    # the vote removes voxels, so the same healthy fraction needs a lower τ
    assert filtered["itermask2_tau"] < plain["itermask2_tau"]
    _calibrate(fold, "final_mask_fraction")   # the fold as the other tests expect it


def test_the_sweep_range_warning_fires_only_where_the_knee_segments(fold, caplog):
    # α = 0.2 % asks for i = 99.8, beyond the planned sweep's 99: the knee (mode itermask3d) cannot reach α and says
    # so; with τ searched on the final masks (what the demo plans) γ is only the fallback: no warning
    warning = "the sweep stops at i = 99"
    with caplog.at_level(logging.WARNING):
        _calibrate(fold, "final_mask_fraction", alpha=0.002)
    assert warning not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _calibrate(fold, "final_mask_fraction", alpha=0.002, mode="itermask3d")
    assert warning in caplog.text


def test_the_search_inside_a_chosen_margin_starts_from_the_tau_found_without_it(fold):
    without = _calibrate(fold, "final_mask_fraction")
    inside = _calibrate(fold, "final_mask_fraction", margins=[2.0])   # one candidate: chosen, a second scoring
    assert without["brain_erosion_mm"] == 0.0 and inside["brain_erosion_mm"] == 2.0
    assert inside["itermask2_tau_search"][0]["tau"] == pytest.approx(without["itermask2_tau"])
    assert "without the margin" in inside["itermask2_tau_rule"] and "factor 1.25" in inside["itermask2_tau_rule"]
    assert "median per-case first-pass" in without["itermask2_tau_rule"]
    chosen = [r for r in inside["itermask2_tau_search"] if r["tau"] == inside["itermask2_tau"]]
    assert chosen and chosen[0]["fraction"] <= inside["alpha"] + 1e-9


def test_tau_searched_in_median_error_units_is_read_per_case_in_those_units(fold):
    new = _calibrate(fold, "final_mask_fraction", tau_scale="median_error")
    scales = new["itermask2_tau_scale_per_case"]
    assert new["itermask2_tau_scale"] == "median_error" and "median whole-brain-masked" in new["itermask2_tau_rule"]
    assert scales.keys() == new["per_case"].keys() and all(0 < v and abs(v - 1) > 0.01 for v in scales.values())
    # each healthy case is scored (as prediction runs it) with the one τ times its own median first-pass error
    for case, record in new["per_case"].items():
        assert record["tau"] == pytest.approx(new["itermask2_tau"] * scales[case], rel=1e-5)
    scored = pooled_fraction({c: (r["scores"]["mask_fraction"] * r["scored_voxels"], r["scored_voxels"])
                              for c, r in new["per_case"].items()})
    chosen = [row for row in new["itermask2_tau_search"] if row["tau"] == new["itermask2_tau"]]
    assert chosen and scored == pytest.approx(chosen[0]["fraction"], abs=1e-6) and scored <= new["alpha"] + 1e-9
    # prediction (no first pass given: it runs its own) reads the unit from calibration.json and gets the same τ
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.paths import preprocessed_root
    from itermask_auto.preprocessing.storage import load_case
    case = next(iter(new["per_case"]))
    data, hf, brain, _ = load_case(preprocessed_root() / trainer_fixtures.DATASET / "itermask_3d", case)
    result, _ = Predictor.from_model_folder(fold).infer(data, hf, brain)
    assert result.procedure == "itermask2" and result.tau == pytest.approx(new["per_case"][case]["tau"], rel=1e-4)
