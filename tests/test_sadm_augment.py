"""sadm's stage-2 photometric augmentation (methods/sadm/augment.py): nnU-Net v2's default intensity transforms,
seeded per sample, inside the brain only, in training and never in validation."""
from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.methods.sadm.augment import NNUNET_INTENSITY_DEFAULTS, build_photometric, photometric_batch
from itermask_auto.methods.sadm.plan import default_plan
from itermask_auto.methods.sadm.training import delineation_inputs, model_inputs

REFERENCE_PLAN = Path(__file__).resolve().parents[1] / "plans" / "Dataset001_IXI_T1" / "itermask_plans.json"


def _slices(n: int = 4, shape=(96, 80)):
    rng = np.random.default_rng(0)
    brain = np.zeros((n, *shape), bool)
    brain[:, 20:76, 12:68] = True
    images = np.zeros((n, 1, *shape), np.float32)
    images[:, 0][brain] = rng.uniform(0.3, 0.8, int(brain.sum()))
    return images, brain


def test_the_plan_takes_nnunets_defaults_and_unknown_transforms_are_refused():
    plan = default_plan(Plans.load(REFERENCE_PLAN))
    assert plan["delineation_augmentation"] == NNUNET_INTENSITY_DEFAULTS
    assert plan["rules"]["delineation_augmentation"]
    with pytest.raises(ValueError, match="unknown"):
        build_photometric({"solarize": [[0, 1], 1.0]}, 6.0)


def test_each_slice_is_changed_by_its_own_seed_inside_the_brain_only():
    images, brain = _slices()
    always = {name: [values[0], 1.0] for name, values in NNUNET_INTENSITY_DEFAULTS.items()}
    transforms = build_photometric(always, 6.0)
    out = photometric_batch(images, brain, [1, 2, 3, 4], transforms)
    np.testing.assert_array_equal(out, photometric_batch(images, brain, [1, 2, 3, 4], transforms))
    assert not np.array_equal(out[0], photometric_batch(images, brain, [9, 2, 3, 4], transforms)[0])
    assert (out[:, 0][~brain] == 0).all()                                 # the background stays model-space 0
    assert all(np.abs(out[j] - images[j])[:, brain[j]].mean() > 1e-3 for j in range(len(images)))
    np.testing.assert_array_equal(photometric_batch(images, brain, [1, 2, 3, 4], build_photometric({}, 6.0)), images)


def test_the_noise_standard_deviation_is_converted_from_z_score_units_to_model_space():
    images, brain = _slices(n=2)
    sd_z = 0.3                                                           # 0.05 in model space (÷ 6)
    out = photometric_batch(images, brain, [5, 6], build_photometric({"noise_sd_z": [[sd_z] * 2, 1.0]}, 6.0))
    sd = float((out - images)[:, 0][brain].std())
    assert sd == pytest.approx(0.3 / 6, rel=0.05)


class _Reconstruct(torch.nn.Module):
    def forward(self, x, t):     # a stand-in for the frozen diffusion model: x̂ = 0, so residual = input
        return torch.zeros_like(x)


def _ctx(plans, training: bool):
    return SimpleNamespace(plans=plans, configuration="2d", device=torch.device("cpu"), training=training,
                           autocast=contextlib.nullcontext, labelled=None)


def test_training_slices_are_augmented_before_their_anomaly_and_validation_slices_are_not():
    plans = Plans.load(REFERENCE_PLAN)
    background = float(plans.normalization.background_value)
    plan = {**default_plan(plans), "anomaly_kinds": {"noise_blend": 1.0},
            "delineation_augmentation": {"brightness": [[1.2, 1.2], 1.0]}}
    model_space, brain = _slices()
    z = np.where(brain[:, None], model_space * (-2 * background) + background, background).astype(np.float32)
    batch = {"image": torch.from_numpy(z), "brain": torch.from_numpy(brain), "seed": torch.arange(4) + 10}
    x, _ = model_inputs(batch, plans, plan)
    np.testing.assert_allclose(x.numpy(), model_space, atol=1e-5)
    seen = {}
    for training in (False, True):
        x_a, residual, target, kinds = delineation_inputs(batch, _ctx(plans, training), plan, _Reconstruct())
        seen[training] = (x_a.numpy(), target.numpy()[:, 0] > 0)
        assert kinds == ["noise_blend"] * 4
    (val, val_mask), (train, train_mask) = seen[False], seen[True]
    np.testing.assert_array_equal(val_mask, train_mask)                  # the same anomaly, drawn from the seed
    healthy = brain & ~val_mask
    np.testing.assert_allclose(val[:, 0][healthy], model_space[:, 0][healthy], atol=1e-5)    # validation: as is
    np.testing.assert_allclose(train[:, 0][healthy], 1.2 * model_space[:, 0][healthy], rtol=1e-4)
    assert (train[:, 0][~brain] == 0).all()
