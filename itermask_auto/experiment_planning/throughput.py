"""How long one training iteration of the planned network takes on the machine that plans.

The CPU profile's epochs fill a wall-clock budget. A constant throughput cannot say how many: the same IXI 3-D
epoch took 79 s on the 2-core AVX2 CPU the constant was calibrated on (fp32), 34-41 s on a 2-core AVX-512 Xeon
(fp32) and 17-18 s on a 2-core AVX512-BF16 EPYC (bf16 autocast). So the planner times a few optimiser steps of the
planned network (random input of the planned patch and batch, at the precision `auto` training will use, in the
trainer's memory layout, on as many threads as training takes by default) and plans the epochs from that;
`reference` keeps the constant (the same plan on every machine, as the checked-in reference plans and the test
suite need)."""
from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Optional

THROUGHPUT_ENV = "ITERMASK_PLAN_THROUGHPUT"
THROUGHPUT_MODES = ("measure", "reference")
PROBE_WARMUP = 1   # the first step allocates and picks oneDNN kernels: not timed
PROBE_STEPS = 3

logger = logging.getLogger(__name__)


def throughput_mode(requested: Optional[str] = None) -> str:
    """The mode asked for, else ITERMASK_PLAN_THROUGHPUT, else "measure"; anything else is refused in one line."""
    mode = requested or os.environ.get(THROUGHPUT_ENV, "").strip() or "measure"
    if mode not in THROUGHPUT_MODES:
        source = "--throughput" if requested else THROUGHPUT_ENV
        raise ValueError(f"{source}={mode!r}: use {' or '.join(THROUGHPUT_MODES)}"
                         f"{'' if requested else ', or unset it'}")
    return mode


def measure_seconds_per_iteration(config, warmup: int = PROBE_WARMUP, steps: int = PROBE_STEPS) -> tuple[float, str]:
    """Median seconds of one optimiser step (forward, backward, Adam) of the planned reconstruction network at the
    planned patch and batch on this CPU; returns (seconds, a description of what was timed). The network is the
    plan's U-Net, which itermask3d, oneshot and itermask2 train (`ae`, its skip-less twin, trains the same epochs
    at ~the same cost); sadm, constrained and mmccd plan their epochs with rules of their own (methods/*/plan.py)."""
    import torch

    from itermask_auto.experiment_planning.plans import TrainingPlan
    from itermask_auto.training.network import build_network
    from itermask_auto.training.schedule import autocast_dtype, build_optimizer, set_torch_threads

    cpu = torch.device("cpu")
    previous_threads = torch.get_num_threads()
    # fork_rng: building the network draws weights from the global generator; the caller's stream stays as it was
    with torch.random.fork_rng():
        try:
            threads = set_torch_threads(cpu, num_workers=0)   # training's default: no data workers
            torch.manual_seed(0)
            net = build_network(config)
            if len(config.patch_size) == 3:   # as the trainer lays out 3-D networks on CPUs (training/trainer.py)
                net = net.to(memory_format=torch.channels_last_3d)
            recipe = TrainingPlan()   # the defaults the planner writes: Adam, `auto` precision
            optimiser = build_optimizer(net.parameters(), recipe)
            x = torch.randn(config.batch_size, config.network.input_channels, *config.patch_size)
            target = torch.randn(config.batch_size, config.network.output_channels, *config.patch_size)
            dtype = autocast_dtype(cpu, recipe.mixed_precision)
            times = []
            for step in range(warmup + steps):
                start = time.perf_counter()
                optimiser.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    out = net(x)
                torch.nn.functional.mse_loss(out.float(), target).backward()
                optimiser.step()
                if step >= warmup:
                    times.append(time.perf_counter() - start)
        finally:
            torch.set_num_threads(previous_threads)
    seconds = statistics.median(times)
    precision = "bf16" if dtype is not None else "fp32"
    what = (f"measured {seconds:.3f} s per step ({config.name} patch {config.patch_size}, batch {config.batch_size}, "
            f"{precision}, {threads} threads; median of {steps})")
    logger.info("planning throughput: %s", what)
    return seconds, what
