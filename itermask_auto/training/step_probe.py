"""How long one training step takes on this machine, timed before any data is preprocessed.

The planner's cpu profile fills a wall-clock budget with epochs, so it needs the machine's step time: for the U-Net
methods it times the planned network (experiment_planning/throughput.py); methods that train networks and steps of
their own (sadm, constrained, mmccd, itermask2's two) are timed here, each stage with the engine's own step (the
method's loss, backward, gradient clip, optimiser; `Trainer.train_step`) on a synthetic batch of the stage's shape:
an ellipse of smooth random "tissue" as the brain, the training mask the stage asks for, per-sample seeds. It runs
at the last epoch, where every term of a staged loss is on (a constraint that starts after a warm-up), at the
precision the stage's recipe trains with, on the threads training takes by default. What the step does with its data
(synthetic anomalies, noise) is in it; the engine's sampling and augmentation are not (the planner adds them)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Tuple

import numpy as np
import torch

from itermask_auto.methods.base import Method, Stage, StepContext, stage_batch_size, with_recipe
from itermask_auto.training.masks import training_mask
from itermask_auto.training.schedule import autocast_dtype, build_optimizer, set_torch_threads
from itermask_auto.training.trainer import GRAD_CLIP

# the first steps allocate and pick oneDNN kernels: not timed. Single steps of one network jitter by up to 2x on a
# shared 2-core VM (IXI 3d: 0.18-0.43 s within one run), so the median of 7: with 3, three plans of one machine
# within minutes gave 0.22, 0.33 and 0.35 s (176-248 epochs)
PROBE_WARMUP = 2
PROBE_STEPS = 7


def time_steps(step: Callable[[], None], warmup: int = PROBE_WARMUP, steps: int = PROBE_STEPS) -> Tuple[float, int]:
    """(median seconds of `steps` calls of step after `warmup` untimed ones, the torch threads used). The threads
    are training's default (no data workers); the caller's thread count and random stream are left as they were.
    At least one untimed call: the probes build their network in it."""
    if warmup < 1 or steps < 1:
        raise ValueError(f"time_steps needs warmup >= 1 and steps >= 1 (got {warmup}, {steps})")
    cpu = torch.device("cpu")
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng():
        try:
            threads = set_torch_threads(cpu, num_workers=0)
            times = []
            for k in range(warmup + steps):
                start = time.perf_counter()
                step()
                if k >= warmup:
                    times.append(time.perf_counter() - start)
        finally:
            torch.set_num_threads(previous_threads)
    return statistics.median(times), threads


def synthetic_batch(plans, configuration: str, batch_size: int, mask_kind: str,
                    seed: int = 0) -> Dict[str, torch.Tensor]:
    """A batch as the engine's sampler hands it over ({"image", "hf", "mask", "brain", "seed"}): the planned patch,
    the brain an ellipse filling most of it, z-scored random tissue inside and the background value outside."""
    config = plans.configuration(configuration)
    patch, channels = [int(p) for p in config.patch_size], plans.num_channels
    spacing = [s for a, s in enumerate(config.spacing) if len(patch) == 3 or a != config.slice_axis]
    grid = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in patch], indexing="ij")
    brain = sum(g ** 2 for g in grid) < 0.8
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((batch_size, channels, *patch)).astype(np.float32)
    image[:, :, ~brain] = float(plans.normalization.background_value)
    masks = np.stack([training_mask(brain, spacing, plans.training_masks, rng, mask_kind) for _ in range(batch_size)])
    return {"image": torch.from_numpy(image), "hf": torch.from_numpy(0.1 * image),
            "mask": torch.from_numpy(masks), "brain": torch.from_numpy(np.repeat(brain[None], batch_size, 0)),
            "seed": torch.arange(batch_size, dtype=torch.int64) + 1_000 * seed}


def stage_step_seconds(method: Method, stage: Stage, plans, configuration: str,
                       warmup: int = PROBE_WARMUP, steps: int = PROBE_STEPS) -> Tuple[float, str]:
    """(median seconds of one training step of `stage` on this CPU, a description of what was timed). The stages it
    uses (Stage.uses) are built untrained: a frozen network costs the same forward pass either way."""
    cpu = torch.device("cpu")
    recipe = with_recipe(plans.training, stage)
    batch_size = stage_batch_size(stage, plans, configuration)
    dtype = autocast_dtype(cpu, recipe.mixed_precision)
    state: Dict[str, object] = {}

    def autocast():
        return torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)

    def step() -> None:
        if not state:   # built inside the timer's forked random stream: the caller's stream is left alone
            torch.manual_seed(0)
            network = method.build_network(stage, plans, configuration)
            if any(isinstance(m, torch.nn.Conv3d) for m in network.modules()):   # as the trainer lays it out
                network = network.to(memory_format=torch.channels_last_3d)
            by_name = {s.name: s for s in method.stages(plans, configuration)}
            frozen = {name: method.build_network(by_name[name], plans, configuration).eval().requires_grad_(False)
                      for name in stage.uses}
            state.update(network=network, optimiser=build_optimizer(network.parameters(), recipe),
                         batch=synthetic_batch(plans, configuration, batch_size, stage.training_mask),
                         ctx=StepContext(device=cpu, plans=plans, configuration=configuration,
                                         epoch=max(0, int(recipe.num_epochs) - 1), num_epochs=int(recipe.num_epochs),
                                         frozen=frozen, autocast=autocast))
        network, optimiser = state["network"], state["optimiser"]
        optimiser.zero_grad(set_to_none=True)
        loss = method.loss(stage, network, state["batch"], state["ctx"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
        optimiser.step()

    seconds, threads = time_steps(step, warmup, steps)
    patch = plans.configuration(configuration).patch_size
    what = (f"{method.name} stage '{stage.name}': {seconds:.3f} s per step measured (batch {batch_size} x "
            f"{'x'.join(str(p) for p in patch)}, {'bf16' if dtype is not None else 'fp32'}, {threads} threads; "
            f"median of {steps})")
    return seconds, what
