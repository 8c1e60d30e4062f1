"""How long one training iteration of the planned network takes on the machine that plans.

The CPU profile's epochs fill a wall-clock budget. A constant throughput cannot say how many: the same IXI 3-D
epoch took 79 s on the 2-core AVX2 CPU the constant was calibrated on (fp32), 34-41 s on a 2-core AVX-512 Xeon
(fp32) and 17-18 s on a 2-core AVX512-BF16 EPYC (bf16 autocast). So the planner times a few optimiser steps of the
planned network (random input of the planned patch and batch, at the precision `auto` training will use, in the
trainer's memory layout, on as many threads as training takes by default) and plans the epochs from that;
`reference` keeps the constant (the same plan on every machine, as the checked-in reference plans and the test
suite need). Methods that train networks of their own (sadm, constrained, mmccd) or two U-Nets (itermask2) have
each stage timed the same way (`measure_stage_seconds`, training/step_probe.py)."""
from __future__ import annotations

import logging
import os
from typing import Optional

THROUGHPUT_ENV = "ITERMASK_PLAN_THROUGHPUT"
THROUGHPUT_MODES = ("measure", "reference")

logger = logging.getLogger(__name__)


def throughput_mode(requested: Optional[str] = None) -> str:
    """The mode asked for, else ITERMASK_PLAN_THROUGHPUT, else "measure"; anything else is refused in one line."""
    mode = requested or os.environ.get(THROUGHPUT_ENV, "").strip() or "measure"
    if mode not in THROUGHPUT_MODES:
        source = "--throughput" if requested else THROUGHPUT_ENV
        raise ValueError(f"{source}={mode!r}: use {' or '.join(THROUGHPUT_MODES)}"
                         f"{'' if requested else ', or unset it'}")
    return mode


def measure_seconds_per_iteration(config, warmup: Optional[int] = None,
                                  steps: Optional[int] = None) -> tuple[float, str]:
    """Median seconds of one optimiser step (forward, backward, Adam) of the planned reconstruction network at the
    planned patch and batch on this CPU; returns (seconds, a description of what was timed). The network is the
    plan's U-Net, which itermask3d and oneshot train (`ae`, its skip-less twin, trains the same epochs at ~the same
    cost); sadm, constrained, mmccd and itermask2 (two networks) have their own stages timed
    (training/step_probe.py) and plan their epochs from them (Method.epochs_for_machine). warmup / steps: untimed
    and timed steps (default: the probe's, training/step_probe.py)."""
    import torch

    from itermask_auto.experiment_planning.plans import TrainingPlan
    from itermask_auto.training.network import build_network
    from itermask_auto.training.schedule import autocast_dtype, build_optimizer
    from itermask_auto.training.step_probe import PROBE_STEPS, PROBE_WARMUP, time_steps

    recipe = TrainingPlan()   # the defaults the planner writes: Adam, `auto` precision
    dtype = autocast_dtype(torch.device("cpu"), recipe.mixed_precision)
    state = {}

    def step() -> None:
        if not state:   # built inside the timer's forked random stream: the caller's stream is left alone
            torch.manual_seed(0)
            net = build_network(config)
            if len(config.patch_size) == 3:   # as the trainer lays out 3-D networks on CPUs (training/trainer.py)
                net = net.to(memory_format=torch.channels_last_3d)
            state.update(net=net, optimiser=build_optimizer(net.parameters(), recipe),
                         x=torch.randn(config.batch_size, config.network.input_channels, *config.patch_size),
                         target=torch.randn(config.batch_size, config.network.output_channels, *config.patch_size))
        state["optimiser"].zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = state["net"](state["x"])
        torch.nn.functional.mse_loss(out.float(), state["target"]).backward()
        state["optimiser"].step()

    steps = PROBE_STEPS if steps is None else steps
    seconds, threads = time_steps(step, PROBE_WARMUP if warmup is None else warmup, steps)
    precision = "bf16" if dtype is not None else "fp32"
    what = (f"measured {seconds:.3f} s per step ({config.name} patch {config.patch_size}, batch {config.batch_size}, "
            f"{precision}, {threads} threads; median of {steps})")
    logger.info("planning throughput: %s", what)
    return seconds, what


def measure_stage_seconds(method, stage, plans, configuration: str) -> tuple[float, str]:
    """One training step of a method's own stage timed on this CPU (training/step_probe.py): (seconds, what)."""
    from itermask_auto.training.step_probe import stage_step_seconds
    return stage_step_seconds(method, stage, plans, configuration)
