"""The cpu epochs of methods with stages of their own (sadm, constrained, mmccd, itermask2's two networks) from
their steps timed on the planning machine (training/step_probe.py, Method.epochs_for_machine)."""
from __future__ import annotations

import pytest
import torch

from itermask_auto.experiment_planning.api import epochs_moved
from itermask_auto.experiment_planning.planner import (CPU_VALIDATION_FACTOR, budget_epochs, data_pipeline_seconds,
                                                       plan_experiment)
from itermask_auto.methods.constrained import plan as constrained_plan
from itermask_auto.methods.mmccd import plan as mmccd_plan
from itermask_auto.methods.base import Method, Stage, with_recipe
from itermask_auto.methods.registry import get_method
from itermask_auto.methods.sadm import plan as sadm_plan
from itermask_auto.training.step_probe import stage_step_seconds, synthetic_batch, time_steps
from test_reference_plans import DATASET_JSON, _fingerprint   # tests/ is on sys.path, as for conftest

TWO_SEQUENCES = {**DATASET_JSON, "channel_names": {"0": "FLAIR", "1": "T2"}}
FAKE_SECONDS = {"diffusion": 1.0, "delineation": 0.5, "vae": 0.3, "forward": 0.4, "backward": 0.3,
                "reconstruction": 0.25, "first_iter": 0.15}


def _plans(dataset_json=DATASET_JSON, profile="cpu", timed=None, shape_mm=(140.0, 170.0, 140.0), timed_methods=None):
    def stage_timer(method, stage, plans, configuration):
        if timed is not None:
            timed.append((method.name, stage.name, configuration))
        return FAKE_SECONDS[stage.name], "fake"
    return plan_experiment(_fingerprint([(2.0,) * 3] * 6, shape_mm), dataset_json, "D", profile=profile,
                           step_timer=lambda config: (0.2, "fake"), stage_timer=stage_timer,
                           timed_methods=timed_methods)


def _iteration(plans, stage_name: str, batch: int = 8, configuration: str = "2d") -> float:
    return FAKE_SECONDS[stage_name] + data_pipeline_seconds(batch, plans.configuration(configuration).patch_size)


def test_each_method_plans_its_epochs_from_its_own_timed_stages():
    timed = []
    plans = _plans(TWO_SEQUENCES, timed=timed)
    assert sorted(timed) == sorted([("constrained", "vae", "2d"), ("constrained_entropy", "vae", "2d"),
                                    ("mmccd", "forward", "2d"), ("mmccd", "backward", "2d"),
                                    ("sadm", "diffusion", "2d"), ("sadm", "delineation", "2d")]
                                   + [("itermask2", stage, c) for stage in ("reconstruction", "first_iter")
                                      for c in ("2d", "3d")])
    sadm = plans.method_plans["sadm"]
    fractions = sadm_plan.CPU_VALIDATION_STEP_FRACTION
    for stage, share, fraction in (("diffusion", sadm_plan.CPU_DIFFUSION_SHARE, fractions[0]),
                                   ("delineation", 1 - sadm_plan.CPU_DIFFUSION_SHARE, fractions[1])):
        batches = sadm_plan.CPU_ITERATIONS + sadm_plan.CPU_VALIDATION_ITERATIONS * fraction
        per_epoch = _iteration(plans, stage) * batches
        assert sadm[f"{stage}_recipe"]["num_epochs"] == int(sadm_plan.CPU_BUDGET_S * share / per_epoch)
    assert "measured on the planning machine" in sadm["rules"]["recipes"]
    for name in ("constrained", "constrained_entropy"):
        planned = plans.method_plans[name]
        per_epoch = _iteration(plans, "vae") * planned["iterations_per_epoch"] * constrained_plan.VALIDATION_OVERHEAD
        epochs = int(constrained_plan.TRAIN_BUDGET_S / per_epoch)
        assert 4 < epochs < constrained_plan.AUTHORS_EPOCHS   # inside the rule's limits: the formula itself decides
        assert planned["num_epochs"] == epochs and f"→ {epochs} epochs" in planned["rules"]["num_epochs"]
        assert f"of {epochs} here" in planned["rules"]["warmup_fraction"]
    mmccd = plans.method_plans["mmccd"]
    budget, share = (mmccd_plan.PROFILES["cpu"][k] for k in ("training_budget_s", "forward_share"))
    iterations = mmccd["iterations_per_epoch"]
    assert mmccd["forward_epochs"] == int(budget * share / (_iteration(plans, "forward") * iterations * 1.1))
    assert mmccd["backward_epochs"] == int(budget * (1 - share) / (_iteration(plans, "backward") * iterations * 1.1))
    assert "measured on the planning machine" in mmccd["training_rule"]
    # what the trainer reads: the stages' recipes
    assert get_method("sadm").stages(plans, "2d")[0].recipe["num_epochs"] == sadm["diffusion_recipe"]["num_epochs"]


def test_itermask2_fits_both_its_networks_into_the_budget_of_each_configuration():
    plans = _plans()
    planned = plans.method_plans["itermask2"]
    method = get_method("itermask2")
    iterations = plans.training.iterations_per_epoch
    for configuration in ("2d", "3d"):
        batch = plans.configuration(configuration).batch_size
        seconds = sum(_iteration(plans, s, batch, configuration) for s in ("reconstruction", "first_iter"))
        epochs = budget_epochs(seconds * CPU_VALIDATION_FACTOR * iterations)
        assert 10 < epochs < 300   # inside budget_epochs' limits: the formula itself decides
        assert planned[f"{configuration}_recipe"] == {"num_epochs": epochs}
        # both networks' epochs with validation fit 75 minutes, one more epoch would not
        assert epochs * seconds * 1.15 * iterations <= 75 * 60 < (epochs + 1) * seconds * 1.15 * iterations
        assert f"→ {epochs} epochs each" in planned["rules"][f"{configuration}_recipe"]
        stages = method.stages(plans, configuration)   # what the trainer reads; --epochs still wins
        assert [with_recipe(plans.training, s).num_epochs for s in stages] == [epochs, epochs]
        assert {with_recipe(plans.training, s, epochs=3).num_epochs for s in stages} == {3}
    # one network timed for the plan's own `training` epochs: 0.2 s (the fake step timer) at the 3d batch
    assert plans.training.num_epochs > planned["3d_recipe"]["num_epochs"]
    # planned for the reference CPU: no recipe of its own, both networks train the plan's epochs
    reference = plan_experiment(_fingerprint([(2.0,) * 3] * 6), DATASET_JSON, "D", profile="cpu")
    assert "itermask2" not in reference.method_plans
    moved = epochs_moved(reference, plans)   # what a re-plan from the reference rule warns about
    assert f"itermask2.2d_recipe.num_epochs {planned['2d_recipe']['num_epochs']} (new)" in moved
    assert {with_recipe(reference.training, s).num_epochs for s in method.stages(reference, "2d")} == {
        reference.training.num_epochs}


def test_without_a_stage_timer_or_on_the_gpu_profile_nothing_is_timed():
    reference = plan_experiment(_fingerprint([(2.0,) * 3] * 6), TWO_SEQUENCES, "D", profile="cpu")
    assert reference.method_plans["sadm"]["diffusion_recipe"]["num_epochs"] == sadm_plan._cpu_epochs(
        sadm_plan.CPU_DIFFUSION_STEP_S, sadm_plan.CPU_DIFFUSION_SHARE, 0.3)
    assert "reference CPU" in reference.method_plans["sadm"]["rules"]["recipes"]
    timed = []
    gpu = _plans(TWO_SEQUENCES, profile="gpu", timed=timed)
    assert timed == [] and gpu.method_plans["constrained"]["num_epochs"] == constrained_plan.AUTHORS_EPOCHS
    # a single sequence: mmccd is not usable, so it is not timed
    timed = []
    _plans(timed=timed)
    assert "mmccd" not in {name for name, _, _ in timed}


def test_only_the_methods_asked_for_are_timed_the_others_keep_the_reference_epochs():
    timed = []
    plans = _plans(TWO_SEQUENCES, timed=timed, timed_methods=("sadm",))
    reference = plan_experiment(_fingerprint([(2.0,) * 3] * 6), TWO_SEQUENCES, "D", profile="cpu")
    assert sorted(timed) == [("sadm", "delineation", "2d"), ("sadm", "diffusion", "2d")]
    assert "measured on the planning machine" in plans.method_plans["sadm"]["rules"]["recipes"]
    for name in ("constrained", "mmccd"):
        assert plans.method_plans[name] == reference.method_plans[name]
    assert "2d_recipe" not in plans.method_plans.get("itermask2", {})
    timed.clear()   # the demo's call: its method plans from the main step, nothing else is timed
    _plans(TWO_SEQUENCES, timed=timed, timed_methods=("itermask3d",))
    assert timed == []
    with pytest.raises(ValueError, match="unknown method.*sadmm"):
        _plans(timed_methods=("sadmm",))


def test_synthetic_batches_have_the_samplers_keys_and_shapes():
    plans = _plans()
    for configuration, kind in (("2d", "none"), ("3d", "blobs")):
        patch = plans.configuration(configuration).patch_size
        batch = synthetic_batch(plans, configuration, 2, kind)
        assert {k: (v.dtype, tuple(v.shape)) for k, v in batch.items()} == {
            "image": (torch.float32, (2, 1, *patch)), "hf": (torch.float32, (2, 1, *patch)),
            "mask": (torch.bool, (2, *patch)), "brain": (torch.bool, (2, *patch)), "seed": (torch.int64, (2,))}
        assert batch["brain"].float().mean() > 0.3 and batch["seed"].unique().numel() == 2
        inside = batch["image"][:, 0][batch["brain"]]
        assert float(inside.std()) > 0.5 and bool((batch["image"][:, 0][~batch["brain"]] == -3.0).all())
        if kind == "blobs":   # the training masks lie in the brain
            assert batch["mask"].any() and not (batch["mask"] & ~batch["brain"]).any()


@pytest.mark.parametrize("name", ["sadm", "constrained", "mmccd", "itermask3d", "itermask2"])
def test_a_real_stage_step_is_timed_and_leaves_threads_and_random_stream_alone(name):
    plans = _plans(TWO_SEQUENCES, shape_mm=(64.0, 64.0, 64.0))   # small slices and patches: a quick step
    method = get_method(name)
    configuration = method.configurations[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(5)
        expected = torch.rand(3)
        torch.manual_seed(5)
        for stage in method.stages(plans, configuration):
            seconds, what = stage_step_seconds(method, stage, plans, configuration, warmup=1, steps=1)
            assert 0 < seconds < 120 and f"stage '{stage.name}'" in what
        assert torch.get_num_threads() == 1   # the probe took training's threads and gave them back
        assert torch.equal(torch.rand(3), expected)
    finally:
        torch.set_num_threads(threads)


class _RecordingMethod(Method):
    """One tiny stage whose loss records the context it is called with."""
    name = "recording"
    configurations = ("2d",)

    def __init__(self):
        self.contexts = []

    def stages(self, plans, configuration):
        return [Stage("only", recipe={"num_epochs": 7})]

    def build_network(self, stage, plans, configuration):
        return torch.nn.Conv2d(plans.num_channels, 1, 3, padding=1)

    def loss(self, stage, network, batch, ctx):
        self.contexts.append((ctx.epoch, ctx.num_epochs, ctx.training))
        return network(batch["image"]).float().square().mean()


def test_the_probe_steps_at_the_last_epoch_where_every_loss_term_is_on():
    plans, method = _plans(shape_mm=(64.0, 64.0, 64.0)), _RecordingMethod()
    stage_step_seconds(method, method.stages(plans, "2d")[0], plans, "2d", warmup=1, steps=2)
    assert method.contexts == [(6, 7, True)] * 3
    with pytest.raises(ValueError, match="warmup >= 1"):
        time_steps(lambda: None, warmup=0, steps=1)


def test_a_method_whose_timing_fails_keeps_its_reference_epochs(caplog):
    def broken(method, stage, plans, configuration):
        raise RuntimeError("out of memory")
    plans = plan_experiment(_fingerprint([(2.0,) * 3] * 6), DATASET_JSON, "D", profile="cpu", stage_timer=broken)
    reference = plan_experiment(_fingerprint([(2.0,) * 3] * 6), DATASET_JSON, "D", profile="cpu")
    assert plans.method_plans == reference.method_plans
    assert any("timing sadm failed (RuntimeError: out of memory)" in r.getMessage() for r in caplog.records)
