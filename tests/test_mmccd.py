"""Method mmccd: stripes, the DDIM cycle with stub networks (band noise refreshed per step, the same initial noise
for every mask, errors averaged over the covering masks only), the planned budget and its counted evaluations, the
single-sequence refusal, and a short training on two-sequence phantoms whose lesion shows in FLAIR only."""
from __future__ import annotations

import builtins
import io
import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import mmccd_fixtures as mf
import trainer_fixtures
from itermask_auto.methods.mmccd import networks
from itermask_auto.methods.mmccd.cycle import CycleSchedule, band_noise, cycle_errors, ddim_scheduler
from itermask_auto.methods.mmccd.plan import (REFERENCE_POSITIONS, REFERENCE_STEPS, choose_sequences,
                                              default_plan, plan_schedule)
from itermask_auto.methods.mmccd.stripes import (HORIZONTAL, VERTICAL, eroded_brain, schedule_stripes, stripe_mask,
                                                 stripe_width_px, training_stripes)
from itermask_auto.methods.registry import get_method


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_flop_formula_matches_torch_counter():
    keys = networks.network_keys(8, 4, 2)     # 4 levels, attention on the last two, channel changes
    assert networks.gflop_per_evaluation(keys, (32, 48)) == pytest.approx(networks.counted_gflop(keys, (32, 48)),
                                                                          rel=1e-9)


def test_stripes_cover_the_brain_and_are_seeded():
    assert stripe_width_px(30.0, (2.0, 1.0)) == (15, 30)
    brain = np.zeros((40, 50), bool)
    brain[5:35, 8:45] = True
    for positions in (3, 5):
        stripes = schedule_stripes(brain, positions, (15, 15))
        assert len(stripes) == 2 * positions
        assert [s.orientation for s in stripes].count(HORIZONTAL) == positions
        for orientation in (HORIZONTAL, VERTICAL):
            cover = np.sum([stripe_mask(s, brain.shape) for s in stripes if s.orientation == orientation], axis=0)
            assert np.all(cover[brain] >= 1)       # positions x 15 px >= the brain's 30 / 37 px extent
    short = schedule_stripes(brain, 2, (15, 15))              # 2 x 15 px < 37 px: columns left uncovered
    assert not np.sum([stripe_mask(s, brain.shape) for s in short if s.orientation == VERTICAL], axis=0)[brain].all()
    seeds = torch.tensor([3, 4, 5, 6, 7, 8, 9, 10])
    a, b = training_stripes(seeds, (40, 50), (15, 15)), training_stripes(seeds, (40, 50), (15, 15))
    assert torch.equal(a, b) and a.shape == (8, 1, 40, 50)
    rows_full = [(m[0].sum(1) == 50).any() for m in a]      # horizontal bands span whole rows
    assert any(rows_full) and not all(rows_full)            # both orientations drawn
    eroded = eroded_brain(brain[None].repeat(3, 0), 0, 7.5, (2.0, 2.0))
    assert eroded[1, 5:8].sum() == 0 and eroded[1, 9:31, 12:41].all()   # 3 px eroded at 2 mm


def test_ddim_timesteps_start_at_pure_noise_and_end_at_x0():
    for steps, expected in ((1, [999]), (2, [999, 499]), (4, [999, 749, 499, 249])):
        assert ddim_scheduler(steps).timesteps.tolist() == expected
    assert len(ddim_scheduler(100).timesteps) == 100 and ddim_scheduler(100).timesteps[-1] == 9
    x0 = torch.randn(2, 1, 4, 4)
    s = ddim_scheduler(4)
    x = torch.randn(2, 1, 4, 4)
    for t in s.timesteps.tolist():   # an oracle denoiser: the chain ends exactly at its x0 (last step to alpha 1)
        x, pred = s.step(x0, t, x)
    assert torch.allclose(pred, x0) and torch.allclose(x, x0, atol=1e-5)


class CondEcho(torch.nn.Module):
    """Stub denoiser: returns its condition channel and records what it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t):
        self.seen.append((x.detach().clone(), t.detach().clone()))
        return x[:, 1:2] * 1.0


def test_cycle_map_is_averaged_over_covering_masks_with_fresh_band_noise():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2, 32, 32)).astype(np.float32)
    brains = np.zeros(source.shape, bool)
    brains[:, 4:28, 6:26] = True
    schedule = CycleSchedule(positions=3, steps=3, mask_batch=4, widths=(8, 8))
    forward = CondEcho()
    error, counts = cycle_errors(forward, torch.nn.Identity(), source, brains, schedule, torch.device("cpu"))
    # Â = the last step's condition: (A − band noise of the last step)² inside the band, 0 outside; mean over bands
    expected_sum, cover = np.zeros_like(source), np.zeros_like(source)
    for z in range(2):
        for k, stripe in enumerate(schedule_stripes(brains[z], 3, (8, 8))):
            m = stripe_mask(stripe, (32, 32))
            noise = band_noise(z, k, 2, (32, 32)).numpy()
            expected_sum[z] += m * (source[z] - noise) ** 2
            cover[z] += m
    np.testing.assert_allclose(error[cover > 0], (expected_sum / np.maximum(cover, 1))[cover > 0], rtol=1e-5)
    assert np.all(cover[brains] > 0)
    # every step refills the band with fresh noise; outside it the condition is A; x_T is shared by a slice's masks
    first_batch = [x for x, _ in forward.seen[:3]]            # the 3 steps of the first 4 masks (slice 0)
    conditions = torch.stack([x[:, 1] for x in first_batch])
    masks = torch.from_numpy(np.stack([stripe_mask(s, (32, 32)) for s in schedule_stripes(brains[0], 3, (8, 8))[:4]]))
    assert not torch.allclose(conditions[0][masks], conditions[1][masks])
    assert torch.allclose(conditions[0][~masks], torch.from_numpy(source[0])[None].expand(4, -1, -1)[~masks])
    x_t = first_batch[0][:, 0]
    assert all(torch.equal(x_t[0], x_t[i]) for i in range(1, 4))
    assert [int(t[0]) for _, t in forward.seen[:3]] == [999, 666, 333]
    assert counts.per_slice() == {0: schedule.evaluations_per_slice, 1: schedule.evaluations_per_slice}
    # batching does not change the map (noise is fixed per slice, mask and step)
    again, _ = cycle_errors(CondEcho(), torch.nn.Identity(), source, brains,
                            CycleSchedule(3, 3, 7, (8, 8)), torch.device("cpu"))
    np.testing.assert_allclose(again, error, rtol=1e-6)


def _two_sequence_plans(profile="cpu"):
    plans = mf.mmccd_plans()
    plans.method_plans = {}
    plans.profile = profile
    plans.configurations["2d"].median_shape = [75, 90, 75]
    plans.configurations["2d"].patch_size = [96, 80]
    return plans


def test_planned_schedule_fits_the_budget_and_reaches_the_authors_one():
    plans = _two_sequence_plans()
    planned = default_plan(plans)
    assert planned["source_channel"] == "FLAIR" and planned["target_channel"] == "T2"
    p, s = planned["stripe_positions"], planned["ddim_steps"]
    assert planned["evaluations_per_slice"] == 2 * p * (s + 1)
    seconds = planned["gflop_per_evaluation"] / planned["throughput_gflops"]
    assert planned["slices_per_volume"] * planned["evaluations_per_slice"] * seconds <= 0.85 * 600 + 1e-6
    assert p * 15 >= max(planned["inference_shape"]) and not planned["over_budget"]   # every pixel covered
    bigger = default_plan(plans, budget_s=6000)
    assert bigger["evaluations_per_slice"] > planned["evaluations_per_slice"]
    huge = default_plan(plans, budget_s=1e9)
    assert (huge["stripe_positions"], huge["ddim_steps"]) == (REFERENCE_POSITIONS, REFERENCE_STEPS)
    tiny = default_plan(plans, budget_s=1.0)
    assert tiny["ddim_steps"] == 1 and tiny["over_budget"] and tiny["stripe_positions"] * 15 >= 96
    for evaluations in (20, 57, 300, 4000, 13000):
        positions, steps = plan_schedule(evaluations, 7, 10)
        assert 2 * positions * (steps + 1) <= max(evaluations, 28) and positions >= 7 and steps >= 1
    assert choose_sequences({"0": "T1", "1": "T2", "2": "FLAIR"})[:2] == ("FLAIR", "T2")
    assert choose_sequences({"0": "FLAIR", "1": "T1c"})[:2] == ("FLAIR", "T1c")
    assert choose_sequences({"0": "DWI", "1": "ADC"})[:2] == ("DWI", "ADC")
    # an edited budget re-plans the schedule when its keys are left out of the plan file
    plans.method_plans["mmccd"] = {"time_budget_s_per_volume": 6000.0}
    assert get_method("mmccd").method_plan(plans)["evaluations_per_slice"] == bigger["evaluations_per_slice"]


def test_prediction_counts_and_bounds_evaluations_per_slice():
    from itermask_auto.inference.predictor import Predictor
    plans = mf.mmccd_plans({"stripe_positions": 2, "ddim_steps": 2, "mask_batch": 5})
    method = get_method("mmccd")
    torch.manual_seed(0)
    calls = {"forward": 0, "backward": 0}
    nets = {}
    for stage in method.stages(plans, "2d"):
        net = method.build_network(stage, plans, "2d").eval()
        net.register_forward_hook(lambda m, i, o, name=stage.name: calls.__setitem__(name, calls[name] + len(o)))
        nets[stage.name] = net
    data, brain, _ = mf.two_sequence_case(5)
    result, stats = Predictor(nets, plans, "2d", "mmccd").infer(data, data, brain)
    slices = int(brain.reshape(brain.shape[0], -1).any(1).sum())
    planned = method.method_plan(plans)
    assert result.passes == stats["network_passes"] == 2 * 2 * (2 + 1) == result.scores["planned_evaluations_per_slice"]
    assert calls["forward"] == slices * 2 * 2 * 2 and calls["backward"] == slices * 2 * 2
    assert result.windows == calls["forward"] + calls["backward"] and result.scores["slices"] == slices
    assert result.passes == planned["evaluations_per_slice"]             # the plan's figure follows the edited keys
    assert result.anomaly_map.shape == brain.shape and np.all(result.anomaly_map[~brain] == 0)


def test_single_sequence_dataset_is_refused_with_one_line(tmp_path, monkeypatch, capsys, caplog):
    from itermask_auto.experiment_planning.api import log_plan_summary
    from itermask_auto.experiment_planning.planner import plan_methods
    from itermask_auto.training.cli import main as train_main
    trainer_fixtures.set_roots(monkeypatch, tmp_path)
    dataset, plans = trainer_fixtures.make_cheap_phantom_dataset(tmp_path, n_cases=2)
    planned = plan_methods(plans)["mmccd"]
    reason = f"mmccd needs two co-registered sequences; {dataset} has: T1"
    assert planned == {"usable": False, "reason": reason}
    plans.method_plans = plan_methods(plans)
    with caplog.at_level(logging.INFO):
        log_plan_summary(plans)
    assert reason in caplog.text
    assert train_main(["-d", dataset, "-c", "2d", "-m", "mmccd", "--epochs", "1", "--threads", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"itermask_train: error: {reason}"]
    assert not (tmp_path / "results" / dataset).exists() or not any((tmp_path / "results" / dataset).rglob("*.pth"))


def _forbid_labels(monkeypatch, raw):
    def guard(fn):
        def wrapped(path, *a, **k):
            if "labelsTs" in str(path) or str(path).startswith(raw):
                raise AssertionError(f"training opened {path}")
            return fn(path, *a, **k)
        return wrapped
    for module, attr in ((builtins, "open"), (io, "open"), (np, "load"), (sitk, "ReadImage")):
        monkeypatch.setattr(module, attr, guard(getattr(module, attr)))


@pytest.mark.slow
def test_cycle_error_is_higher_in_a_flair_only_lesion_after_short_training(tmp_path, monkeypatch):
    from itermask_auto.evaluation.metrics import auroc
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.training.api import run_training
    trainer_fixtures.set_roots(monkeypatch, tmp_path)
    dataset, _ = mf.make_two_sequence_dataset(tmp_path, n_cases=3, overrides={
        "forward_epochs": 4, "backward_epochs": 2, "iterations_per_epoch": 8})
    poisoned = next((tmp_path / "raw" / dataset / "labelsTs").iterdir())
    with monkeypatch.context() as m:
        _forbid_labels(m, str(tmp_path / "raw"))
        with pytest.raises(AssertionError, match="opened"):   # the guard works
            open(poisoned, "rb")
        fold = run_training(dataset, "2d", 0, method="mmccd", num_threads=1, run_calibration=False)
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "backward" / "checkpoint_final.pth").is_file()
    assert json.loads((fold / "plans.json").read_text())["method_plans"]["mmccd"]["forward_epochs"] == 4
    predictor = Predictor.from_model_folder(fold)
    data, brain, label = mf.two_sequence_case(100, n_lesions=2)
    result, _ = predictor.infer(data, data, brain)
    inner = eroded_brain(brain, 0, 7.5, (2.0, 2.0))
    lesion, rest = label & inner, inner & ~label
    assert lesion.sum() > 50
    error = result.anomaly_map
    assert error[lesion].mean() > 3 * error[rest].mean(), (error[lesion].mean(), error[rest].mean())
    assert auroc(error[inner], label[inner]) > 0.9
    assert np.all(error[~inner] == 0)
    # without the lesion the same head's map stays low where the lesion was
    healthy, _, _ = mf.two_sequence_case(100, n_lesions=0)
    clean, _ = predictor.infer(healthy, healthy, brain)
    assert clean.anomaly_map[lesion].mean() < 0.5 * error[lesion].mean()
