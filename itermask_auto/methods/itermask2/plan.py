"""IterMask2's cpu epochs (`plans.method_plans["itermask2"]`, cpu profile with `--throughput measure`).

IterMask2 trains two networks (the masked autoencoder and the first-iteration network), each for the plan's
`training` epochs by default. Those epochs fill the cpu budget for ONE network of the default configuration (the
3-D U-Net on most datasets), so IterMask2 overran it: on IXI at 2 mm its two 2-D networks trained 248 epochs each
in 96.5 min against the 75-min budget (docs/benchmarks.md). Here both of its networks are timed on the planning
machine, per configuration, and share the same budget: one `<configuration>_recipe` each, which its stages apply
(`--epochs` still overrides)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from itermask_auto.experiment_planning.planner import CPU_TRAIN_BUDGET_S, CPU_VALIDATION_FACTOR, budget_epochs


def recipe_key(configuration: str) -> str:
    return f"{configuration}_recipe"


def measured_epochs(plans, configurations: Sequence[str], stages_of: Callable[[str], Sequence[Any]],
                    iteration_seconds: Callable[[Any, str], float]) -> Dict[str, Any]:
    """{"<configuration>_recipe": {"num_epochs": N}, ..., "rules": {...}} for each configuration of the plan that
    the method trains: N epochs of ALL its stages (seconds per iteration of each, from `iteration_seconds`: the
    engine's step timed here + the data pipeline) fill the planner's cpu budget, with its validation factor."""
    iterations = int(plans.training.iterations_per_epoch)
    planned: Dict[str, Any] = {}
    rules: Dict[str, str] = {}
    for configuration in configurations:
        if configuration not in plans.configurations:
            continue
        seconds = {stage.name: iteration_seconds(stage, configuration) for stage in stages_of(configuration)}
        per_epoch = sum(seconds.values()) * CPU_VALIDATION_FACTOR * iterations
        epochs = budget_epochs(per_epoch)
        planned[recipe_key(configuration)] = {"num_epochs": epochs}
        timed = " + ".join(f"{s:.3f} s ({name})" for name, s in seconds.items())
        rules[recipe_key(configuration)] = (
            f"cpu profile: {CPU_TRAIN_BUDGET_S // 60} min budget for its {len(seconds)} networks / (({timed}) per "
            f"iteration × {CPU_VALIDATION_FACTOR} validation × {iterations} it) → {epochs} epochs each; the "
            "engine's step of each stage timed on the planning machine + the data pipeline, the validation factor "
            "on both (the plan's `training` epochs are timed for one network)")
    if planned:
        planned["rules"] = rules
    return planned
