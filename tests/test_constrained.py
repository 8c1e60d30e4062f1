"""Methods `constrained` and `constrained_entropy` (Silva-Rodríguez et al., MedIA 2022): the extended log-barrier,
the constraint and entropy terms, the differentiable Grad-CAM weighting, the slice-wise maps, and both methods
trained on healthy phantoms (poisoned labels) and run through the Predictor with their label-free rule."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import trainer_fixtures
from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.inference.predictor import Predictor
from itermask_auto.methods.constrained.inference import (attention_volume, eroded_region, normalise,
                                                         slice_windows)
from itermask_auto.methods.constrained.losses import (attention_entropy, entropy_term, erode_region,
                                                      extended_log_barrier, size_constraint)
from itermask_auto.methods.constrained.method import barrier_t, warmup_epochs
from itermask_auto.methods.constrained.network import ConstrainedVAE
from itermask_auto.methods.constrained.polarity import POLARITIES
from itermask_auto.methods.registry import get_method
from itermask_auto.preprocessing.storage import load_case
from itermask_auto.training.api import run_training

TS = (1.0, 5.0, 10.0, 20.0)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


# ---- the extended log-barrier and the attention terms ---------------------------------------------------------
@pytest.mark.parametrize("t", TS)
def test_barrier_is_log_barrier_below_the_switch_and_c1_at_it(t):
    z0 = -1.0 / t ** 2
    below = z0 * torch.tensor([1.0, 1.5, 4.0, 100.0, 1e4], dtype=torch.float64)
    torch.testing.assert_close(extended_log_barrier(below, t), -torch.log(-below) / t)
    eps = 1e-7
    z = torch.tensor([z0 - eps, z0 + eps], dtype=torch.float64, requires_grad=True)
    psi = extended_log_barrier(z, t)
    grad, = torch.autograd.grad(psi.sum(), z)
    psi = psi.detach()
    assert abs(float(psi[1] - psi[0])) < 1e-5                       # continuous
    assert float(grad[0]) == pytest.approx(t, rel=1e-4) and float(grad[1]) == pytest.approx(t, rel=1e-12)
    # above the switch: the straight line t·z − log(1/t²)/t + 1/t
    above = torch.tensor([z0 / 2, 0.0, 0.3, 2.0], dtype=torch.float64)
    torch.testing.assert_close(extended_log_barrier(above, t), t * above - math.log(1 / t ** 2) / t + 1 / t)


def test_barrier_and_its_gradient_are_finite_for_any_z():
    z = torch.tensor([-1e30, -1e6, -1.0, -1e-2, -1e-12, -1e-300, 0.0, 1e-300, 1e-12, 0.5, 1e6],
                     dtype=torch.float64, requires_grad=True)
    for t in TS:
        psi = extended_log_barrier(z, t)
        grad, = torch.autograd.grad(psi.sum(), z)
        assert torch.isfinite(psi).all() and torch.isfinite(grad).all()
        assert (grad > 0).all()                                       # always pushes z down (attention up)


def test_size_constraint_is_finite_and_pushes_attention_up():
    att = torch.tensor([[[-1e4, 0.0], [3.0, 1e4]], [[1e4, 1e4], [1e4, 1e4]], [[0.0, 0.0], [0.0, 0.0]]],
                       requires_grad=True)                            # saturated σ 0 and 1, satisfied, empty
    region = torch.tensor([[[True, True], [True, True]], [[True, True], [True, True]],
                           [[False, False], [False, False]]])
    term = size_constraint(att, region, p=0.01, t=10.0)
    grad, = torch.autograd.grad(term, att)
    assert torch.isfinite(term) and torch.isfinite(grad).all()
    assert (grad[0] <= 0).all() and grad[0].sum() < 0                 # violated: raising attention lowers the loss
    assert (grad[2] == 0).all()                                       # an image without region is left out
    # satisfied (σ = 1, z = −p): the log branch, −log(p)/t
    assert float(size_constraint(att[1:2].detach(), region[1:2], 0.01, 10.0)) == pytest.approx(-math.log(0.01) / 10)


def test_warmup_scales_with_the_epochs_and_t_grows_only_after_it():
    mp = {"warmup_fraction": 50 / 300, "t": 10.0, "t_growth": 1.01}
    assert warmup_epochs(mp, 300) == 50 and warmup_epochs(mp, 12) == 2 and warmup_epochs(mp, 1) == 0
    assert barrier_t(mp, 10, 50) == barrier_t(mp, 50, 50) == 10.0
    assert barrier_t(mp, 52, 50) == pytest.approx(10.0 * 1.01 ** 2)
    assert barrier_t({**mp, "t_growth": 1.0}, 299, 50) == 10.0


def test_entropy_sign_a_gradient_step_raises_the_entropy():
    g = torch.Generator().manual_seed(0)
    att = (3 * torch.randn(2, 12, 10, generator=g)).requires_grad_(True)
    region = torch.rand(2, 12, 10, generator=g) > 0.3
    h0 = attention_entropy(att, region)
    term = entropy_term(att, region, weight=0.1)
    assert float(term.detach()) == pytest.approx(-0.1 * float(h0.detach().mean()), rel=1e-6)
    grad, = torch.autograd.grad(term, att)
    assert torch.isfinite(grad).all() and (grad[~region] == 0).all()
    h1 = attention_entropy(att.detach() - 5.0 * grad, region)
    assert (h1 > h0.detach()).all()                                   # minimising the term maximises H
    flat = torch.zeros(1, 4, 5)
    assert float(attention_entropy(flat, torch.ones(1, 4, 5, dtype=torch.bool))) == pytest.approx(math.log(20))
    assert float(attention_entropy(flat, torch.zeros(1, 4, 5, dtype=torch.bool))) == 0.0


# ---- network and attention ---------------------------------------------------------------------------------
def test_gradcam_weighting_has_a_gradient_and_channel_mean_does_not_depend_on_the_latent_head():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32)
    grads = {}
    for mode in ("gradcam", "channel_mean"):
        net = ConstrainedVAE(1, (32, 32), widths=(4, 8, 8, 8), latent_dim=6, attention=mode).train()
        out = net(x, noise=torch.randn(3, 6))
        assert out.attention.shape == (3, 32, 32) and out.logits.shape == (3, 1, 32, 32)
        # mu's weights reach the attention only through the Grad-CAM weights (create_graph=True)
        grads[mode], = torch.autograd.grad(out.attention.sum(), net.mu.weight, allow_unused=True)
        with torch.no_grad():   # validation / inference: the weights are computed without a graph
            assert torch.isfinite(net.eval()(x, decode=False).attention).all()
    assert grads["gradcam"] is not None and torch.isfinite(grads["gradcam"]).all() and grads["gradcam"].abs().sum() > 0
    assert grads["channel_mean"] is None


def test_erosion_windows_and_normalisation():
    brain = torch.zeros(1, 9, 9, dtype=torch.bool)
    brain[0, 2:7, 2:7] = True
    eroded = erode_region(brain, (3, 3))[0]
    assert eroded.sum() == 9 and eroded[3:6, 3:6].all()
    # a brain larger than the window is covered by several windows; a small one by one centred window
    big = np.zeros((30, 12), bool)
    big[1:29, 2:10] = True
    wins = slice_windows(big, (16, 16))
    assert len(wins) >= 2 and min(y for y, _ in wins) <= 1 and max(y for y, _ in wins) + 16 >= 29
    assert slice_windows(big[:10], (16, 16)) == [(-3, -2)]
    att = np.random.default_rng(0).normal(size=(3, 6, 6)).astype(np.float32)
    region = np.ones((3, 6, 6), bool)
    region[:, 0] = False
    out = normalise(att, region, 0, "slice_min_max")
    assert (out[:, 0] == 0).all() and all(out[k][region[k]].min() == 0 and out[k][region[k]].max() == 1
                                          for k in range(3))


class _Bright(torch.nn.Module):
    """Stub encoder: attention = the input's first channel (so the map is known)."""
    slice_size = (16, 16)

    def forward(self, x, decode=False):
        return type("Out", (), {"attention": x[:, 0]})


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_attention_volume_puts_each_window_back_where_it_came_from(axis):
    rng = np.random.default_rng(axis)
    brain = np.zeros((10, 20, 24), bool)
    brain[2:9, 1:19, 3:22] = True
    data = np.where(brain, rng.uniform(-2, 4, brain.shape), -3.0).astype(np.float32)[None]
    att, windows = attention_volume(_Bright(), data, brain, axis, (-3.0, 5.0), 4, torch.device("cpu"))
    assert windows > 0
    expected = np.clip((data[0] + 3) / 8, 0, 1)
    np.testing.assert_allclose(att[brain], expected[brain], atol=1e-6)
    region = eroded_region(brain, axis, (3, 3))
    assert region.sum() < brain.sum() and not (region & ~brain).any()


# ---- trained on phantoms ------------------------------------------------------------------------------------
def _plan(tmp_path, monkeypatch, method: str, **overrides):
    trainer_fixtures.set_roots(monkeypatch, tmp_path)
    dataset, plans = trainer_fixtures.make_preprocessed_phantom_dataset(tmp_path, n_cases=4)
    plans.configurations["2d"].patch_size = [48, 48]    # a whole phantom slice
    mp = get_method(method).default_plan(plans)
    mp.pop("rules")
    mp.update({"widths": [8, 16, 32, 64], "warmup_fraction": 0.5, "label_free_cases": 2, "learning_rate": 1e-3,
               **overrides})
    plans.method_plans[method] = mp
    plans.save(tmp_path / "preprocessed" / dataset / "itermask_plans.json")
    return dataset, plans


def _lesion_phantom(seed: int):
    ph = make_phantom(seed, size=trainer_fixtures.SIZE_XYZ, spacing=trainer_fixtures.SPACING[::-1], skull=False,
                      n_lesions=1, lesion_radius_mm=(7.0, 9.0), lesion_contrast=1.0, anatomy_scale=0.5)
    brain = sitk.GetArrayFromImage(ph.brain_mask) > 0
    lesion = (sitk.GetArrayFromImage(ph.label) > 0) & brain
    data = trainer_fixtures._normalise(sitk.GetArrayFromImage(ph.image).astype(np.float32), brain)[None]
    return data, brain, lesion


@pytest.mark.parametrize("warmup_fraction, lesion_brighter", [(0.5, True), (1.0, False)])
def test_constraint_makes_the_attention_of_a_lesion_higher_than_its_brain(tmp_path, monkeypatch,
                                                                          warmup_fraction, lesion_brighter):
    """Trained on healthy phantoms with the constraint, the attention of an obvious lesion is higher than the rest
    of its brain; trained as a plain VAE (warm-up only, never constrained) it is not (measured: ~0.9 vs ~0.6 with
    the constraint, ~0.2 vs ~0.5 without), so the test sees the constraint act, not just a bright input."""
    dataset, _ = _plan(tmp_path, monkeypatch, "constrained", warmup_fraction=warmup_fraction)
    fold = run_training(dataset, "2d", 0, "constrained", epochs=2, iterations=10, num_threads=1,
                        run_calibration=False)
    predictor = Predictor.from_model_folder(fold)
    data, brain, lesion = _lesion_phantom(100)
    amap = predictor.predict_arrays(data, np.zeros_like(data), brain).anomaly
    inside, rest = float(amap[lesion].mean()), float(amap[brain & ~lesion].mean())
    assert (inside > rest + 0.1) == lesion_brighter, (inside, rest)


@pytest.mark.parametrize("method", ["constrained", "constrained_entropy"])
def test_trains_without_labels_and_predicts_with_its_label_free_rule(tmp_path, monkeypatch, method):
    dataset, plans = _plan(tmp_path, monkeypatch, method, attention="gradcam" if method == "constrained" else
                           "channel_mean")
    fold = run_training(dataset, "2d", 0, method, epochs=2, iterations=2, num_threads=1)   # labelsTs are poisoned
    cal = json.loads((fold / "calibration.json").read_text())
    split = json.loads((fold / "splits.json").read_text())
    assert cal["label_free_cases"] == sorted(split["train"])[:1] + sorted(split["train"])[-1:]
    assert not set(cal["label_free_cases"]) & set(split["val"])      # no calibration case in the label-free rule
    assert cal["volume_score_name"] == "attention_std" and cal["label_free_threshold"] > 0
    assert cal["map_polarity"] in POLARITIES and set(cal["polarity_cases"]) <= set(split["val"])   # healthy val only
    predictor = Predictor.from_model_folder(fold)
    data, hf, brain, _ = load_case(tmp_path / "preprocessed" / dataset / "itermask_3d", split["val"][0])
    pred = predictor.predict_arrays(data, hf, brain.astype(bool))
    s, amap = pred.summary, pred.anomaly
    region = eroded_region(brain.astype(bool), plans.configuration("2d").slice_axis, [3, 3])
    assert s["segmentation_rule"].startswith("label-free") and s["voxel_threshold"] == cal["voxel_threshold"]
    np.testing.assert_array_equal(pred.segmentation, (amap > cal["label_free_threshold"]) & region)
    assert (amap[~region] == 0).all() and 0 <= amap.min() and amap.max() <= 1
    assert s["volume_score"] == pytest.approx(float(amap[region].std()), rel=1e-5)
    # without calibration.json: no threshold, an empty segmentation that says why
    bare = Predictor(predictor.networks, predictor.plans, "2d", method, fold)
    empty = bare.predict_arrays(data, hf, brain.astype(bool))
    assert empty.segmentation.sum() == 0 and "no label-free threshold" in empty.summary["segmentation_rule"]


@pytest.mark.parametrize("planned, chosen", [("auto", "low"), ("two_sided", "two_sided")])
def test_prediction_reads_the_map_in_the_calibrated_polarity(tmp_path, monkeypatch, planned, chosen):
    """An "auto" fold whose choice is "low" predicts the mirrored map, with its thresholds taken on that map; a
    fixed polarity skips the choice and is recorded in calibration.json as well."""
    import itermask_auto.methods.constrained.method as constrained_method

    def choice(*args, **kwargs):
        assert planned == "auto", "a fixed polarity must not run the choice"
        return {"map_polarity": chosen}

    monkeypatch.setattr(constrained_method, "choose_polarity", choice)
    dataset, plans = _plan(tmp_path, monkeypatch, "constrained_entropy", map_polarity=planned)
    fold = run_training(dataset, "2d", 0, "constrained_entropy", epochs=2, iterations=2, num_threads=1)
    cal = json.loads((fold / "calibration.json").read_text())
    assert cal["map_polarity"] == chosen
    predictor = Predictor.from_model_folder(fold)
    split = json.loads((fold / "splits.json").read_text())
    data, hf, brain, _ = load_case(tmp_path / "preprocessed" / dataset / "itermask_3d", split["val"][0])
    brain = brain.astype(bool)
    pred = predictor.predict_arrays(data, hf, brain)
    assert pred.summary["tau_fit"]["map_polarity"] == chosen
    high_plans = copy.deepcopy(predictor.plans)
    high_plans.method_plans["constrained_entropy"]["map_polarity"] = "high"
    high = Predictor(predictor.networks, high_plans, "2d", "constrained_entropy", fold).predict_arrays(
        data, hf, brain).anomaly
    region = eroded_region(brain, plans.configuration("2d").slice_axis, [3, 3])
    v = high[region]
    expected = v.max() - v if chosen == "low" else np.abs(v - np.median(v))
    np.testing.assert_allclose(pred.anomaly[region], expected, atol=1e-6)
    np.testing.assert_array_equal(pred.segmentation, (pred.anomaly > cal["label_free_threshold"]) & region)
