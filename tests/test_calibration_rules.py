"""Healthy-only calibration rules (issue 17): a knee read on a scale-free curve, a γ target the knee can reach,
the rim margin chosen on healthy maps, and the bounds stated for a new healthy scan."""
from __future__ import annotations

import types

import numpy as np
import pytest

from itermask_auto.calibration.bounds import conformal_upper, detection_fpr_bound, healthy_bounds
from itermask_auto.calibration.rim import choose_erosion
from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.inference.scoring_region import ball, edge_distance_mm, erode_brain
from itermask_auto.methods.itermask3d.gamma import GAMMA_GRID, calibrate_gamma, gamma_target
from itermask_auto.methods.itermask3d.procedure import error_scale, itermask3d, knee_scale, sweep_schedule

SWEEP_I = sweep_schedule(8, 99.0)


def _healthy_curve(level: float, seed: int) -> np.ndarray:
    """t(i) of a healthy case: tan-shaped, in the error units of a model whose typical error is `level`."""
    rng = np.random.default_rng(seed)
    return level * (0.5 + 0.6 * np.tan(np.pi / 2 * SWEEP_I / 100.0 * 0.97)
                    * (1 + 0.05 * rng.standard_normal(SWEEP_I.size)))


def test_knee_scale_makes_gamma_independent_of_the_error_level():
    plan = InferencePlan(knee_scale="median_error", fit_max_threshold=1e6)
    brain = np.ones((4, 4, 4), bool)
    taus = []
    for level in (0.1, 10.0):   # a well and a poorly reconstructing model: the same curve shape
        first = np.full((4, 4, 4), level, np.float32)
        image = np.full((1, 4, 4, 4), np.sqrt(level), np.float32)   # against a zero reconstruction: error = level
        assert knee_scale(image, np.zeros_like(image), brain, plan) == pytest.approx(level)
        swept = types.SimpleNamespace(i=SWEEP_I, t=_healthy_curve(level, 0), passes=len(SWEEP_I),
                                      first_recon=np.zeros_like(image), first_error=first)
        result = itermask3d(lambda m, needed=None: np.zeros((1, 4, 4, 4), np.float32), image, brain, plan,
                            sweep_result=swept)
        taus.append(result.tau / level)
    assert taus[0] == pytest.approx(taus[1], rel=1e-6)
    with pytest.raises(ValueError, match="knee_scale"):
        knee_scale(image, image, brain, InferencePlan(knee_scale="nonsense"))


def test_high_pass_unit_ignores_the_first_pass_low_frequency_guess():
    """Two heads whose first passes miss their low-frequency level by different amounts (a bias field) but make the
    same fine-scale errors: the plain median differs, the high-pass median does not."""
    rng = np.random.default_rng(0)
    brain = np.zeros((24, 24, 24), bool)
    brain[3:-3, 3:-3, 3:-3] = True
    fine = rng.normal(0, 0.1, brain.shape).astype(np.float32)
    z = np.linspace(0, 1, 24, dtype=np.float32)[:, None, None]
    plan = InferencePlan()
    units = {}
    for name, offset in (("flat", 0.0), ("biased", 0.5 + 0.5 * z)):
        image = np.asarray((fine + offset)[None], np.float32)
        recon = np.zeros_like(image)
        units[name] = {rule: error_scale(image, recon, brain, rule, plan)
                       for rule in ("median_error", "hf_median_error")}
    assert units["biased"]["median_error"] > 10 * units["flat"]["median_error"]
    assert units["biased"]["hf_median_error"] == pytest.approx(units["flat"]["hf_median_error"], rel=0.1)
    assert units["flat"]["hf_median_error"] == pytest.approx(0.01 * 0.455, rel=0.2)   # median of (0.1·N(0,1))²


def test_sweep_quantile_target_puts_gamma_inside_its_grid():
    plan = InferencePlan(knee_scale="median_error", fit_max_threshold=1e6)
    curves_new, curves_old = {}, {}
    for k in range(6):
        t = _healthy_curve(1.0, k)
        first = np.linspace(0, 3 * t[-1], 1000)   # whole-brain-masked errors: larger than every late sweep point
        s = types.SimpleNamespace(i=SWEEP_I, t=t, first_error=first)
        brain = np.ones(first.shape, bool)
        curves_new[str(k)] = {"i": SWEEP_I, "t": t, **gamma_target(s, brain, 0.01, "sweep_quantile")}
        curves_old[str(k)] = {"i": SWEEP_I, "t": t, **gamma_target(s, brain, 0.01, "first_pass_quantile")}
    gamma_old, _ = calibrate_gamma(curves_old, plan, 0.9)
    gamma_new, per_case = calibrate_gamma(curves_new, plan, 0.9)
    assert gamma_old == GAMMA_GRID[-1]                     # the old target is out of reach: the grid's top
    assert GAMMA_GRID[0] < gamma_new < GAMMA_GRID[-1] and all(g < GAMMA_GRID[-1] for g in per_case.values())
    with pytest.raises(ValueError, match="gamma_target"):
        gamma_target(types.SimpleNamespace(i=SWEEP_I, t=SWEEP_I, first_error=SWEEP_I), np.ones(SWEEP_I.shape, bool),
                     0.01, "x")


def test_rim_margin_is_chosen_where_healthy_exceedances_stop_crowding_the_edge():
    z, y, x = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
    brain = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 18 ** 2
    edges = edge_distance_mm(brain, (2.0, 2.0, 2.0))
    rng = np.random.default_rng(0)
    maps, dists = [], []
    for _ in range(3):
        m = rng.gamma(2.0, 1.0, brain.shape).astype(np.float32)
        m[brain & (edges <= 4.0)] *= 4.0                   # the rim reconstructs badly
        maps.append(m[brain])
        dists.append(edges[brain])
    chosen, table = choose_erosion(maps, dists, [0, 2, 4, 6], alpha=0.01)
    assert chosen == 4.0 and table[0]["shell_excess"] > 1.5 >= table[2]["shell_excess"]
    flat = [rng.gamma(2.0, 1.0, int(brain.sum())).astype(np.float32) for _ in range(3)]
    assert choose_erosion(flat, dists, [0, 2, 4], alpha=0.01)[0] == 0.0
    eroded = erode_brain(brain, 4.0, (2.0, 2.0, 2.0))
    assert eroded.sum() < brain.sum() and not (eroded & (edges <= 4.0)).any()
    assert ball(4.0, (2.0, 2.0, 4.0)).shape == (5, 5, 3)
    assert erode_brain(brain, 0.0, (2.0, 2.0, 2.0)) is not None and (erode_brain(brain, 0, (2, 2, 2)) == brain).all()


def test_bounds_for_a_new_healthy_scan():
    scores = np.arange(1.0, 10.0)
    assert detection_fpr_bound(scores, scores.max()) == pytest.approx(1 / 10)
    assert detection_fpr_bound(scores, 5.0) == pytest.approx(5 / 10)
    fpr = np.linspace(0.001, 0.029, 29)
    assert conformal_upper(fpr, 0.9) == pytest.approx(np.sort(fpr)[26])    # ceil(30 * 0.9) = 27th smallest
    assert conformal_upper(fpr[:2], 0.9) is None                           # two cases cannot promise 90 %
    b = healthy_bounds(scores, scores.max(), fpr, 0.9)
    assert b["bound_cases"] == 29 and b["voxel_fpr_bound"] > b["voxel_fpr_per_case_mean"]
