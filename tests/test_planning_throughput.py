"""The CPU profile's epochs from the step time measured on the planning machine (experiment_planning/throughput.py)."""
from __future__ import annotations

import logging

import pytest
import torch

from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
from itermask_auto.experiment_planning.cli import main as plan_main
from itermask_auto.experiment_planning.planner import (CPU_DATA_S_PER_SAMPLE, CPU_DATA_S_PER_VOXEL,
                                                       CPU_TRAIN_BUDGET_S, CPU_VALIDATION_FACTOR, PROFILES,
                                                       plan_experiment, plan_training)
from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.experiment_planning.throughput import (THROUGHPUT_ENV, measure_seconds_per_iteration,
                                                          throughput_mode)
from test_reference_plans import DATASET_JSON, PLANS_DIR, _fingerprint   # tests/ is on sys.path, as for conftest

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


def test_ixi_plan_at_a_measured_step_gives_the_hand_computed_epochs():
    """IXI's reference 3d configuration (batch 2 × 64×80×48) at a 0.194 s step: 0.194 × 1.15 + 2 × (0.252 µs ×
    245,760 + 4.6 ms) = 0.356 s per iteration, 17.8 s per epoch, 252 epochs in 75 min; the reference rule: 57."""
    config = Plans.load(PLANS_DIR / "Dataset001_IXI_T1" / "itermask_plans.json").configuration("3d")
    assert (config.patch_size, config.batch_size) == ([64, 80, 48], 2)
    training, rule = plan_training("cpu", config, lambda c: (0.194, "fake"))
    assert training.num_epochs == 252 and "0.133 s data pipeline" in rule
    assert plan_training("cpu", config)[0].num_epochs == 57


def test_measured_step_on_a_small_network():
    small_heads = _fingerprint([(2.0,) * 3] * 6, shape_mm=(48.0, 48.0, 48.0))   # a 24³ patch: a quick probe
    config = plan_experiment(small_heads, DATASET_JSON, "D").configuration("3d")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # unlike the probe's (all cores): the restore below is then a real check
    try:
        torch.manual_seed(7)
        expected_draw = torch.rand(1)
        torch.manual_seed(7)
        seconds, what = measure_seconds_per_iteration(config, warmup=1, steps=2)
        assert torch.rand(1) == expected_draw   # the caller's random stream is untouched
        assert torch.get_num_threads() == 1     # and its thread count
    finally:
        torch.set_num_threads(threads)
    assert 0 < seconds < 60 and "s per step" in what and str(config.patch_size) in what
    assert "fp32" in what   # the suite pins fp32 (conftest): the probe takes the precision training would


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
    caplog.set_level(logging.INFO)
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
    # the methods with stages of their own are timed too; sadm cannot take these small slices: not timed, one line
    assert "measured on the planning machine" in measured.method_plans["constrained"]["rules"]["num_epochs"]
    assert any("sadm not timed (sadm slice_size" in r.getMessage() for r in caplog.records)
    assert "reference CPU" in measured.method_plans["sadm"]["rules"]["recipes"]
    assert set(measured.method_plans["itermask2"]) == {"2d_recipe", "3d_recipe", "rules"}   # its two networks
    assert plan_main(args + ["--throughput", "reference", "--clean"]) == 0
    reference = Plans.load(data_roots["preprocessed"] / raw.name / "itermask_plans.json")
    assert "GMAC/s" in reference.rules["training"]
    # --time_methods: only constrained's stage is timed; a misspelt name is one line, nothing replaced
    caplog.clear()
    assert plan_main(args + ["--clean", "--time_methods", "constrained"]) == 0
    some = Plans.load(data_roots["preprocessed"] / raw.name / "itermask_plans.json")
    assert "measured on the planning machine" in some.method_plans["constrained"]["rules"]["num_epochs"]
    assert "2d_recipe" not in some.method_plans.get("itermask2", {})
    assert any("not timed (not asked for): " in r.getMessage() and "itermask2" in r.getMessage()
               and "constrained," not in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert plan_main(args + ["--time_methods", "constrianed"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unknown method(s) to time: constrianed" in errors[0]
    assert not any("training cases" in r.getMessage() for r in caplog.records)   # refused before reading it
    assert Plans.load(data_roots["preprocessed"] / raw.name / "itermask_plans.json").method_plans == some.method_plans


def test_a_replan_that_moves_the_epochs_says_so(data_roots, monkeypatch, caplog):
    from itermask_auto.experiment_planning import api
    raw = write_phantom_dataset(data_roots["raw"], dataset_id=992, n_train=3, n_test_healthy=1, n_test_lesion=1,
                                size=(32, 40, 32), spacing=(3.0, 3.0, 3.0), with_masks=False)
    monkeypatch.setattr(api, "measure_seconds_per_iteration", lambda config: (100.0, "a slow machine"))
    args = ["-d", "992", "-np", "1", "--profile", "cpu", "-c", "3d", "--plan_only"]
    assert plan_main(args + ["--throughput", "measure"]) == 0
    assert Plans.load(data_roots["preprocessed"] / raw.name / "itermask_plans.json").training.num_epochs == 10
    caplog.clear()
    assert plan_main(args + ["--throughput", "reference"]) == 0
    reference = Plans.load(data_roots["preprocessed"] / raw.name / "itermask_plans.json").training.num_epochs
    assert reference != 10
    changed = [r.getMessage() for r in caplog.records if "epochs changed" in r.getMessage()]
    assert len(changed) == 1 and f"training from 10 to {reference}" in changed[0]
    # the reference rule plans no itermask2 recipes: the re-plan names them as gone
    assert "itermask2.3d_recipe.num_epochs no longer planned (was " in changed[0]
