"""Re-planning from a checked-in fingerprint reproduces the checked-in plan, and planner rules hold."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from itermask_auto.experiment_planning.fingerprint import aggregate
from itermask_auto.experiment_planning.planner import plan_experiment
from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.experiment_planning.topology import divisibility

PLANS_DIR = Path(__file__).resolve().parents[1] / "plans"
REFERENCES = sorted(p for p in PLANS_DIR.iterdir() if (p / "itermask_plans.json").is_file())


@pytest.mark.parametrize("folder", REFERENCES, ids=[p.name for p in REFERENCES])
def test_replanning_reproduces_reference(folder):
    fingerprint = json.loads((folder / "dataset_fingerprint.json").read_text())
    reference = json.loads((folder / "itermask_plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans = plan_experiment(fingerprint, dataset_json, reference["dataset_name"], profile=reference["profile"])
    assert json.loads(json.dumps(plans.to_dict())) == reference
    assert Plans.from_dict(reference).to_dict() == reference  # the file round-trips through the dataclasses


def test_ixi_reference_is_present():
    assert any(p.name == "Dataset001_IXI_T1" for p in REFERENCES)


def _fingerprint(spacings, shape_mm=(140.0, 170.0, 140.0)):
    cases = [{"spacing": list(s), "shape_after_crop": [int(m / v) for m, v in zip(shape_mm, s)],
              "brain_volume_ml": 1200.0, "skull_stripped": True, "brain_mask_source": "given", "orientation": "LPS",
              "channels": [{"percentiles": {"0.5": 0, "50.0": 1, "99.5": 2}, "mean": 1.0, "std": 1.0}]}
             for s in spacings]
    return {"cases": cases, "aggregate": aggregate(cases)}


DATASET_JSON = {"channel_names": {"0": "FLAIR"}, "file_ending": ".nii.gz"}


def test_anisotropic_data_defaults_to_2d_and_uses_10th_percentile():
    fp = _fingerprint([(5.0, 0.45, 0.45)] * 5 + [(6.0, 0.5, 0.5)] * 5)
    plans = plan_experiment(fp, DATASET_JSON, "Dataset032_X", profile="cpu")
    assert plans.default_configuration == "2d"
    assert plans.configurations["3d"].spacing[0] == pytest.approx(5.0)  # 10th percentile of the coarse axis
    assert plans.configurations["2d"].slice_axis == 0
    assert plans.configurations["3d"].network.kernel_sizes[0][0] == 1  # no 3-wide kernel across thick slices


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_patch_is_divisible_and_fits_budget(profile):
    fp = _fingerprint([(1.0, 1.0, 1.0)] * 8)
    plans = plan_experiment(fp, {"channel_names": {"0": "T1", "1": "T2"}, "file_ending": ".nii.gz"}, "D",
                            profile=profile)
    for config in plans.configurations.values():
        div = divisibility(config.network.strides)
        assert all(p % d == 0 for p, d in zip(config.patch_size, div))
        assert config.network.input_channels == 4 and config.network.output_channels == 2
    assert plans.configurations["3d"].estimated_memory_gb <= (8.0 if profile == "gpu" else 0.15)
    assert plans.default_configuration == "3d"


def test_hf_radius_is_physical():
    """The radius is in cycles/mm: the same at 1 mm and 2 mm (as long as it is under the coarse Nyquist cap)."""
    one = plan_experiment(_fingerprint([(1.0,) * 3] * 4), DATASET_JSON, "D")
    two = plan_experiment(_fingerprint([(2.0,) * 3] * 4), DATASET_JSON, "D")
    assert one.hf_radius_cycles_per_mm == two.hf_radius_cycles_per_mm == pytest.approx(15 / 192, abs=1e-6)
