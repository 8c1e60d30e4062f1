"""The CPU profile's epochs from the step time measured on the planning machine (experiment_planning/throughput.py)."""
from __future__ import annotations

import pytest
import torch

from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
from itermask_auto.experiment_planning.cli import main as plan_main
from itermask_auto.experiment_planning.planner import (CPU_DATA_S_PER_SAMPLE, CPU_DATA_S_PER_VOXEL,
                                                       CPU_TRAIN_BUDGET_S, CPU_VALIDATION_FACTOR, PROFILES,
                                                       plan_experiment)
from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.experiment_planning.throughput import (THROUGHPUT_ENV, measure_seconds_per_iteration,
                                                          throughput_mode)
from test_reference_plans import DATASET_JSON, _fingerprint   # tests/ is on sys.path, as for conftest

ITERATIONS = PROFILES["cpu"]["iterations"]


def _plan_with_step(seconds: float, profile: str = "cpu") -> Plans:
    timed = []

    def timer(config):
        timed.append(config.name)
        return seconds, f"fake {seconds} s"
    plans = plan_experiment(_fingerprint([(2.0,) * 3] * 6), DATASET_JSON, "D", profile=profile, step_timer=timer)
    assert timed == ([] if profile == "gpu" else [plans.default_configuration])   # the configuration that trains
    return plans


@pytest.mark.parametrize("seconds", [0.05, 0.2, 0.35])
def test_epochs_fill_the_budget_at_the_measured_step(seconds):
    plans = _plan_with_step(seconds)
    config = plans.configuration(plans.default_configuration)
    voxels = config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
    data = config.batch_size * (CPU_DATA_S_PER_VOXEL * voxels + CPU_DATA_S_PER_SAMPLE)
    expected = int(CPU_TRAIN_BUDGET_S / ((seconds * CPU_VALIDATION_FACTOR + data) * ITERATIONS))
    assert plans.training.num_epochs == min(300, max(10, expected))
    assert f"fake {seconds} s" in plans.rules["training"] and f"{seconds:.3f} s/step" in plans.rules["training"]


def test_a_faster_machine_plans_more_epochs_and_limits_hold():
    slow, fast = _plan_with_step(0.4).training.num_epochs, _plan_with_step(0.1).training.num_epochs
    assert fast > slow
    assert _plan_with_step(100.0).training.num_epochs == 10 and _plan_with_step(1e-4).training.num_epochs == 300
    # the gpu profile's epochs are fixed: nothing is timed
    assert _plan_with_step(0.1, profile="gpu").training.num_epochs == PROFILES["gpu"]["epochs"]


def test_without_a_timer_the_reference_rule_is_kept():
    fp = _fingerprint([(2.0,) * 3] * 6)
    reference = plan_experiment(fp, DATASET_JSON, "D")
    assert reference.to_dict() == plan_experiment(fp, DATASET_JSON, "D").to_dict()
    assert "GMAC/s" in reference.rules["training"] and "measured" not in reference.rules["training"]


def test_measured_step_on_a_small_network():
    small_heads = _fingerprint([(2.0,) * 3] * 6, shape_mm=(48.0, 48.0, 48.0))   # a 24³ patch: a quick probe
    config = plan_experiment(small_heads, DATASET_JSON, "D").configuration("3d")
    threads = torch.get_num_threads()
    seconds, what = measure_seconds_per_iteration(config, warmup=1, steps=2)
    assert 0 < seconds < 60 and "s per step" in what and str(config.patch_size) in what
    assert torch.get_num_threads() == threads   # training's own thread count is not changed behind its back


def test_throughput_mode_from_argument_environment_and_default(monkeypatch):
    monkeypatch.delenv(THROUGHPUT_ENV, raising=False)
    assert throughput_mode() == "measure"
    assert throughput_mode("reference") == "reference"
    monkeypatch.setenv(THROUGHPUT_ENV, "reference")
    assert throughput_mode() == "reference" and throughput_mode("measure") == "measure"
    monkeypatch.setenv(THROUGHPUT_ENV, "fast")
    with pytest.raises(ValueError, match=THROUGHPUT_ENV):
        throughput_mode()


def test_plan_command_measures_by_default_and_refuses_a_bad_mode(data_roots, monkeypatch, caplog):
    raw = write_phantom_dataset(data_roots["raw"], dataset_id=991, n_train=3, n_test_healthy=1, n_test_lesion=1,
                                size=(32, 40, 32), spacing=(3.0, 3.0, 3.0), with_masks=False)
    args = ["-d", "991", "-np", "1", "--profile", "cpu", "-c", "3d", "--plan_only"]
    monkeypatch.setenv(THROUGHPUT_ENV, "sometimes")
    assert plan_main(args) == 1
    assert any(THROUGHPUT_ENV in r.getMessage() for r in caplog.records)
    assert not (data_roots["preprocessed"] / raw.name).exists()   # refused before anything was written
    monkeypatch.delenv(THROUGHPUT_ENV)
    assert plan_main(args) == 0
    measured = Plans.load(data_roots["preprocessed"] / raw.name / "itermask_plans.json")
    assert "measured" in measured.rules["training"] and "s per step" in measured.rules["training"]
    assert plan_main(args + ["--throughput", "reference", "--clean"]) == 0
    reference = Plans.load(data_roots["preprocessed"] / raw.name / "itermask_plans.json")
    assert "GMAC/s" in reference.rules["training"]
