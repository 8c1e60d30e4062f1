"""IterMask3D inference logic with an oracle (ideal healthy) reconstructor, and the τ rule on synthetic curves."""
from __future__ import annotations

import numpy as np
import pytest

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.methods.itermask3d.method import IterMask3D
from itermask_auto.methods.itermask3d.procedure import MAP_READOUTS, itermask3d, readout_map, sweep_schedule
from itermask_auto.methods.masked_reconstruction.procedures import REFERENCE_SWEEP, oneshot, plain, squared_error
from itermask_auto.methods.masked_reconstruction.threshold_fit import choose_threshold, fit_tan

SHAPE = (40, 44, 40)


def _phantom(lesion: bool, seed: int = 0):
    """Ellipsoid brain with smooth structure (C=1), optional bright spherical lesion; background -3."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    brain = (z / 0.85) ** 2 + (y / 0.9) ** 2 + (x / 0.8) ** 2 < 1
    healthy = np.where(brain, np.sin(3 * x) + 0.5 * np.cos(4 * y) + 0.3 * z, -3.0).astype(np.float32)[None]
    image = healthy.copy()
    lesion_mask = np.zeros(SHAPE, bool)
    if lesion:
        lesion_mask = ((z - 0.2) ** 2 + (y + 0.3) ** 2 + (x - 0.25) ** 2 < 0.22 ** 2) & brain
        image[0, lesion_mask] += 2.5
    return image, healthy, brain, lesion_mask


def _oracle(image, healthy, sigma=0.1, seed=0, persistence=0.0):
    """Ideal healthy reconstructor: healthy image + small noise inside the mask, the input outside.

    persistence > 0: part of each voxel's error is fixed (and its size varies per voxel), as with a real
    network whose hard voxels stay hard; 0: fresh noise at every pass."""
    rng = np.random.default_rng(seed)
    scale = np.exp(0.5 * rng.standard_normal(image.shape[1:])) if persistence else np.ones(image.shape[1:])
    fixed = rng.standard_normal(image.shape)
    calls = []

    def reconstruct(mask, needed=None):
        calls.append(mask.copy())
        out = image.copy()
        fresh = rng.standard_normal((image.shape[0], int(mask.sum())))
        noise = persistence * fixed[:, mask] + np.sqrt(1 - persistence ** 2) * fresh
        out[:, mask] = healthy[:, mask] + sigma * scale[mask] * noise
        return out.astype(np.float32)
    return reconstruct, calls


def _dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_lesion_found_and_map_consistent():
    image, healthy, brain, lesion = _phantom(True)
    rec, calls = _oracle(image, healthy)
    plan = InferencePlan()
    res = itermask3d(rec, image, brain, plan, keep_masks=True)
    assert _dice(res.final_mask, lesion) > 0.7, _dice(res.final_mask, lesion)
    # the final mask is exactly {map > τ} inside the brain, and nothing outside the brain
    assert np.array_equal(res.final_mask, (res.anomaly_map > res.tau) & brain)
    assert not res.anomaly_map[~brain].any()
    # passes counted: sweep_steps + shrink passes (the shrink's first pass reuses the sweep's whole-brain pass)
    assert res.passes == len(calls)
    assert len(res.sweep_t) == plan.sweep_steps and res.passes < plan.sweep_steps + plan.max_shrink_passes
    # masks only shrink
    for a, b in zip(res.masks, res.masks[1:]):
        assert not (b & ~a).any()
    assert res.scores["top1_mean"] > 1.0 and 0 < res.scores["mask_fraction"] < 0.1


@pytest.mark.parametrize("readout", MAP_READOUTS)
def test_map_readouts_keep_the_final_mask_and_order_the_rest_by_the_first_pass(readout):
    """Every readout leaves final mask == {map > τ} and 0 outside the brain; "last_pass" is the shrink's own map;
    the others order the voxels outside the final mask as the first (whole-brain-masked) pass did, which the
    last pass's map does not (voxels unmasked in later passes keep a later, smaller error)."""
    image, healthy, brain, lesion = _phantom(True)
    rec, _ = _oracle(image, healthy, seed=3, persistence=0.5)
    base = IterMask3D()._run(_Calibrated(0.05), image, None, brain, InferencePlan(mode="itermask2"), reconstruct=rec)
    rec, _ = _oracle(image, healthy, seed=3, persistence=0.5)
    plan = InferencePlan(mode="itermask2", map_readout=readout)
    res = IterMask3D()._run(_Calibrated(0.05), image, None, brain, plan, reconstruct=rec)
    assert np.array_equal(res.final_mask, base.final_mask) and res.final_mask.any()
    assert np.array_equal(res.final_mask, (res.anomaly_map > res.tau) & brain)
    assert not res.anomaly_map[~brain].any()
    rest = brain & ~res.final_mask
    first_order = np.argsort(res.first_error[rest], kind="stable")
    if readout == "last_pass":
        assert np.array_equal(res.anomaly_map, base.anomaly_map)
        assert not np.all(np.diff(res.anomaly_map[rest][first_order]) >= 0)   # the shrink scrambled it
    else:
        assert np.all(np.diff(res.anomaly_map[rest][first_order]) >= 0)
        inside = res.anomaly_map[res.final_mask]
        expected = base.anomaly_map if readout == "final_over_first" else res.tau + res.first_error
        assert np.allclose(inside, expected[res.final_mask], rtol=1e-6)


def test_unknown_map_readout_refused():
    x = np.ones((2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="map_readout 'best'"):
        readout_map(x, x, x > 0, 0.5, "best")


def test_healthy_mask_vanishes():
    image, healthy, brain, _ = _phantom(False)
    rec, _ = _oracle(image, healthy, seed=1)
    res = itermask3d(rec, image, brain, InferencePlan())
    assert res.final_mask.sum() < 0.01 * brain.sum()


def test_reference_schedule_agrees():
    """The planned 10-pass geometric sweep gives a τ close to the reference 99-pass sweep (oracle whose
    errors persist across passes, like a network's)."""
    image, healthy, brain, _ = _phantom(True)
    taus = {}
    for name, iv in (("planned", None), ("reference", REFERENCE_SWEEP)):
        rec, _ = _oracle(image, healthy, seed=2, persistence=0.95)
        taus[name] = itermask3d(rec, image, brain, InferencePlan(), i_values=iv).tau
    assert abs(taus["planned"] - taus["reference"]) < 0.35 * taus["reference"], taus


class _Calibrated:
    """A predictor stand-in holding only a calibrated itermask2 τ (and the unit calibration searched it in)."""
    def __init__(self, tau, scale=None):
        self.calibration = {"itermask2_tau": tau, **({"itermask2_tau_scale": scale} if scale else {})}


def test_itermask2_mode_uses_given_tau():
    image, healthy, brain, lesion = _phantom(True)
    rec, calls = _oracle(image, healthy)
    res = IterMask3D()._run(_Calibrated(0.2), image, None, brain, InferencePlan(mode="itermask2"), reconstruct=rec)
    assert res.tau == 0.2 and res.procedure == "itermask2" and not res.sweep_t
    assert calls[0].sum() == brain.sum()           # starts from the whole brain
    assert _dice(res.final_mask, lesion) > 0.7


def _shifted(gain: float):
    """The lesion phantom as another site would show it: every intensity and the model's error × gain."""
    image, healthy, brain, lesion = _phantom(True)
    rec, calls = _oracle(gain * image, gain * healthy, sigma=0.1 * gain, persistence=0.95)   # hard voxels stay hard
    return gain * image, brain, lesion, rec, calls


@pytest.mark.parametrize("unit, tau", [("median_error", 40.0), ("q99_error", 0.03)])
def test_itermask2_tau_in_error_units_follows_a_scan_whose_errors_are_all_higher(unit, tau):
    # τ = 40 median first-pass errors (σ 0.1: median squared error ≈ 0.0042, so about 0.17 at gain 1), or 0.03 of
    # the 99th percentile (≈ 6.2: the lesion, 1.7 % of this brain, holds it), about 0.19
    plan = InferencePlan(mode="itermask2", tau_scale="absolute")   # the plan's unit is not the one read
    runs = {}
    for gain in (1.0, 3.0):
        image, brain, lesion, rec, calls = _shifted(gain)
        runs[gain] = IterMask3D()._run(_Calibrated(tau, unit), image, None, brain, plan, reconstruct=rec)
        # the first pass that sets the unit is the shrink's first: no extra network pass
        assert runs[gain].passes == len(calls) == runs[gain].shrink_iterations
        assert _dice(runs[gain].final_mask, lesion) > 0.7
    assert _dice(runs[1.0].final_mask, runs[3.0].final_mask) > 0.99
    assert runs[3.0].tau == pytest.approx(9.0 * runs[1.0].tau, rel=1e-4)   # errors × 9, τ × 9
    assert 0.1 < runs[1.0].tau < 0.3
    # the same τ in absolute units (a calibration made before the key) marks far more of the brighter scan
    image, brain, lesion, rec, _ = _shifted(3.0)
    absolute = IterMask3D()._run(_Calibrated(runs[1.0].tau), image, None, brain, plan, reconstruct=rec)
    assert absolute.tau == pytest.approx(runs[1.0].tau)
    assert absolute.final_mask.sum() > 2 * runs[3.0].final_mask.sum()


def test_oneshot_and_plain():
    image, healthy, brain, lesion = _phantom(True)
    rec, calls = _oracle(image, healthy)
    r1 = oneshot(rec, image, brain, InferencePlan())
    assert r1.passes == 1 and calls[-1].sum() == brain.sum()
    assert r1.anomaly_map[lesion].mean() > 10 * r1.anomaly_map[brain & ~lesion].mean()
    r2 = plain(rec, image, brain, InferencePlan())
    assert calls[-1].sum() == 0 and r2.passes == 1
    assert np.array_equal(r2.anomaly_map, squared_error(image, image, brain))  # oracle copies unmasked input
    with pytest.raises(ValueError):
        IterMask3D()._run(_Calibrated(0.2), image, None, brain, InferencePlan(mode="nonsense"), reconstruct=rec)


def test_channel_rule_is_mean():
    x = np.zeros((2, 2, 2, 2), np.float32)
    r = x.copy()
    r[0] = 2.0
    assert np.allclose(squared_error(x, r, np.ones((2, 2, 2), bool)), 2.0)


@pytest.mark.parametrize("a,b", [(0.02, 0.0155), (0.5, 0.01), (0.003, 0.0157)])
def test_fit_recovers_tan(a, b):
    i = np.arange(1, 100, dtype=float)
    t = a * np.tan(b * i)
    keep = t <= 10
    fa, fb, r2 = fit_tan(i[keep], t[keep])
    assert r2 > 0.999 and abs(fa - a) / a < 0.02 and abs(fb - b) / b < 0.01
    sparse = sweep_schedule(10, 99.0)
    ts = a * np.tan(b * sparse)
    res = choose_threshold(sparse, ts, gamma=0.01)
    assert res.method == "tan_fit"
    # k* agrees with the analytic first integer i where a·b·sec²(b·i) > γ
    slope = a * b / np.cos(b * i) ** 2
    k_true = i[np.argmax(slope > 0.01)] if (slope > 0.01).any() else i[-1]
    assert abs(res.k_star - k_true) <= 1


@pytest.mark.parametrize("t", [np.zeros(10), np.full(10, np.nan), np.array([0.1]), np.linspace(1, 0, 10),
                               np.r_[np.zeros(9), 50.0], np.linspace(0, 1e-4, 10),
                               np.r_[np.ones(5), np.nan * np.ones(5)]])
def test_degenerate_curves_do_not_crash(t):
    i = sweep_schedule(len(t), 99.0)
    res = choose_threshold(i, t, gamma=0.01)
    assert np.isfinite(res.tau) and np.isfinite(res.k_star)


def test_schedules():
    g, u = sweep_schedule(10, 99.0), sweep_schedule(99, 99.0, "uniform")
    assert g[0] == pytest.approx(1) and g[-1] == pytest.approx(99) and np.all(np.diff(g) > 0)
    assert np.allclose(u, REFERENCE_SWEEP)
    assert list(g) == [1, 41, 64, 79, 87, 92, 95, 97, 98, 99]   # masked fraction × ~0.6 per pass, integer i
