"""`make demo`'s own choices over the planned recipe: its epochs follow the rate the planner measured, and its
lr, validation batches, α and τ unit are written into the plan (with a rule a person can read) before training
reads it."""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest

from itermask_auto import demo
from itermask_auto.experiment_planning.planner import CPU_TRAIN_BUDGET_S
from itermask_auto.experiment_planning.plans import Plans

REFERENCE_PLAN = Path(__file__).resolve().parents[1] / "plans" / "Dataset001_IXI_T1" / "itermask_plans.json"


def _with_epochs(plans: Plans, epochs: int) -> Plans:
    training = dataclasses.replace(plans.training, num_epochs=epochs, iterations_per_epoch=50)
    return dataclasses.replace(plans, training=training)


def test_demo_epochs_take_the_demo_budget_at_the_planned_rate():
    plans = Plans.load(REFERENCE_PLAN)
    # a machine whose cpu recipe fills the 75-min budget with 188 epochs x 50 iterations, each a step x 1.15 for 20
    # validation batches per 50: a step 4500 / (188 x 50 x 1.15) = 0.416 s, a validation batch 0.375 steps; the
    # demo's epoch of 25 steps + 5 validation batches 0.416 x 26.875 = 11.19 s: 7 min = 37.5 -> 38 epochs
    assert CPU_TRAIN_BUDGET_S == 75 * 60 and demo.DEMO_TRAINING_S == 420
    assert plans.training.validation_iterations == 20 and demo.DEMO_VALIDATION_ITERATIONS == 5
    assert demo.demo_epochs(_with_epochs(plans, 188), 25) == 38
    assert demo.demo_epochs(_with_epochs(plans, 120), 25) == 24        # a slower machine: fewer epochs
    # the whole demo within 570 s: training (planned seconds x 1.15 overrun) + 120 steps for the rest. At 120 epochs
    # (step 0.652 s) the rest takes 78 s: min(420, (570 - 78) / 1.15 = 428) = 420 s, as above. At 60 epochs (step
    # 1.304 s): (570 - 157) / 1.15 = 360 s of training, 360 / (1.304 x 26.875) = 10.3 -> 10 epochs (420 s: 12)
    assert (demo.DEMO_WALL_S, demo.DEMO_OVERHEAD_STEPS, demo.DEMO_TRAINING_OVERRUN) == (570, 120, 1.15)
    assert demo.demo_epochs(_with_epochs(plans, 60), 25) == 10
    assert demo.demo_epochs(_with_epochs(plans, 30), 25) == demo.DEMO_EPOCH_RANGE[0]
    assert demo.demo_epochs(_with_epochs(plans, 400), 25) == demo.DEMO_EPOCH_RANGE[1]


def test_a_cpu_too_slow_for_ten_minutes_is_told_how_long_the_demo_takes(caplog):
    plans = Plans.load(REFERENCE_PLAN)
    with caplog.at_level(logging.WARNING, logger="itermask_auto.demo"):
        assert demo.demo_epochs(_with_epochs(plans, 60), 25) == 10
    assert not caplog.records
    # 30 epochs: step 2.609 s; 8 epochs x (25 steps + 5 validation batches) = 561 s x 1.15, + 120 steps = 313 s:
    # 958 s, about 16 min
    with caplog.at_level(logging.WARNING, logger="itermask_auto.demo"):
        assert demo.demo_epochs(_with_epochs(plans, 30), 25) == 8
    assert len(caplog.records) == 1 and "about 16 min" in caplog.records[0].getMessage()


@pytest.mark.parametrize("given", [None, 12])
def test_demo_choices_are_written_into_the_plan(tmp_path, given):
    path = tmp_path / "itermask_plans.json"
    shutil.copy(REFERENCE_PLAN, path)
    before = Plans.load(path)
    epochs = demo.apply_demo_choices(path, 25, given)
    after = Plans.load(path)
    assert epochs == (demo.demo_epochs(before, 25) if given is None else given)
    assert after.training.initial_lr == demo.DEMO_LR != before.training.initial_lr
    assert after.training.validation_iterations == demo.DEMO_VALIDATION_ITERATIONS
    assert before.training.validation_iterations == 20
    assert after.calibration.alpha == demo.DEMO_ALPHA != before.calibration.alpha
    assert after.inference.tau_scale == "hf_median_error" != before.inference.tau_scale
    assert after.inference.map_median_mm == before.inference.map_median_mm == 0   # the filter was withdrawn
    assert after.inference.component_filter == "healthy_validation" != before.inference.component_filter
    assert "component_filter healthy_validation" in after.rules["demo"]
    assert f"{epochs} epochs x 25 iterations" in after.rules["demo"]
    assert ("given" in after.rules["demo"]) == (given is not None)
    # nothing else moves: the rest of the plan is the planner's
    assert after.configurations == before.configurations and after.training.num_epochs == before.training.num_epochs
