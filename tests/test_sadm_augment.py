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
from itermask_auto.methods.sadm.anomalies import synthetic_batch
from itermask_auto.methods.sadm.training import SALT_ANOMALY, delineation_inputs, model_inputs, sample_rngs

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
    images = np.concatenate([images, 0.5 * images], axis=1)              # two channels
    always = {name: [values[0], 1.0] for name, values in NNUNET_INTENSITY_DEFAULTS.items()}
    transforms = build_photometric(always, 6.0)
    out = photometric_batch(images, brain, [1, 2, 3, 4], transforms)
    np.testing.assert_array_equal(out, photometric_batch(images, brain, [1, 2, 3, 4], transforms))
    other = photometric_batch(images, brain, [9, 2, 3, 4], transforms)
    assert not np.array_equal(out[0], other[0])
    np.testing.assert_array_equal(out[1:], other[1:])                     # a slice's draw is its own seed's
    order = [2, 0, 3, 1]
    np.testing.assert_array_equal(photometric_batch(images[order], brain[order], [3, 1, 4, 2], transforms),
                                  out[order])
    assert (out.transpose(1, 0, 2, 3)[:, ~brain] == 0).all()            # the background stays model-space 0
    assert all(np.abs(out[j, c] - images[j, c])[brain[j]].mean() > 1e-3 for j in range(4) for c in range(2))
    np.testing.assert_array_equal(photometric_batch(images, brain, [1, 2, 3, 4], build_photometric({}, 6.0)), images)


@pytest.mark.parametrize("name", list(NNUNET_INTENSITY_DEFAULTS))
def test_every_planned_transform_changes_the_brain_on_its_own(name):
    images, brain = _slices(n=2)
    (lo, hi), _ = NNUNET_INTENSITY_DEFAULTS[name]
    value = hi if name != "gamma" else lo                                 # a draw away from the identity
    out = photometric_batch(images, brain, [7, 8], build_photometric({name: [[value, value], 1.0]}, 6.0))
    assert np.abs(out - images)[:, 0][brain].mean() > 1e-3


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
    config = plans.configuration("2d")
    spacing = [s for a, s in enumerate(config.spacing) if a != config.slice_axis]
    seen = {}
    for training in (False, True):
        x_a, residual, target, kinds = delineation_inputs(batch, _ctx(plans, training), plan, _Reconstruct())
        seen[training] = (x_a.numpy(), target.numpy()[:, 0] > 0)
        assert kinds == ["noise_blend"] * 4
        # the anomaly is made on the (augmented) slice: the same draws on 1.2 x gives the training slices
        expected, masks, _ = synthetic_batch(x.numpy() * (1.2 if training else 1.0), brain, spacing,
                                             list(plans.channel_names.values()),
                                             sample_rngs(batch["seed"], SALT_ANOMALY), plan)
        np.testing.assert_allclose(x_a.numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(seen[training][1], masks)
    (val, val_mask), (train, _) = seen[False], seen[True]
    healthy = brain & ~val_mask
    np.testing.assert_allclose(train[:, 0][healthy], 1.2 * val[:, 0][healthy], rtol=1e-4)
    assert (train[:, 0][~brain] == 0).all()
