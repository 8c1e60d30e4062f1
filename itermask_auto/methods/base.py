"""What a method is, as the engine sees it: the contract between `methods/<name>/` and the shared engine.

A method says
- which networks it builds from the plan, one per training **stage** (`stages`, `build_network`);
- the loss of one training step of each stage (`loss`) and its validation error (`validation_error`);
- how a trained model turns a preprocessed case into an anomaly map (`infer`) and, where it has one, its own
  segmentation rule (`segment`); optional extra calibration on healthy validation cases (`calibrate`).

The engine (training/, calibration/, inference/) owns everything else: plan and preprocessed data, patch/slice
sampling and augmentation (with the training masks a stage asks for), the epoch loop, optimiser and schedule,
mixed precision, atomic checkpoints and resume per stage, progress.png and the log, distribution over ranks,
healthy-only calibration of the voxel and detection thresholds, export.

Randomness in a step comes from `batch["seed"]` (one int64 per sample, fixed by the global sample index): draw
it with `sample_generators` / `per_sample_randn`, so a sample sees the same noise whatever the number of ranks,
data workers or restarts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:  # the engine's types; imported for annotations only (no import cycle at run time)
    import numpy as np
    import torch

    from itermask_auto.calibration.context import CalibrationContext
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.inference.result import InferenceResult


@dataclass(frozen=True)
class Stage:
    """One network trained by the engine's loop. Stages train in order; a later stage may use earlier ones frozen."""
    name: str                               # key of the network in Predictor.networks / StepContext.frozen
    folder: str = ""                        # checkpoint folder under fold_N ("" = fold_N itself)
    training_mask: str = "none"             # masks the engine's sampler draws into batch["mask"]: "blobs" | "none"
    patch_centre: str = "brain_voxel"       # "brain_voxel" (random brain voxel) | "slice_centre" (2d: whole slice)
    uses: Tuple[str, ...] = ()              # earlier stages whose trained networks this stage needs (frozen)
    recipe: Mapping[str, Any] = field(default_factory=dict)  # TrainingPlan fields overridden for this stage
    batch_size: Optional[int] = None        # overrides the configuration's batch size
    validation_label: str = "validation error"  # what validation_error measures (log and progress.png)


@dataclass
class StepContext:
    """What a training step may use besides its network and batch."""
    device: "torch.device"
    plans: "Plans"
    configuration: str
    epoch: int                              # 0-based epoch being trained
    num_epochs: int
    frozen: Dict[str, "torch.nn.Module"]    # trained networks of the stages listed in Stage.uses (eval, no grad)
    autocast: Callable[[], Any]             # context manager: the planned mixed precision for forward passes
    training: bool = True
    labelled: Optional[Any] = None          # `--labelled`: training/labelled.LabelledData (methods that accept it)


class Method:
    """Base class of a method. Subclasses set `name`, `description` and implement the abstract parts."""
    name: str = ""
    description: str = ""
    configurations: Tuple[str, ...] = ("3d", "2d")   # configurations it can train; the first is its default
    volume_score_name: str = "top1_mean"             # key of InferenceResult.scores used for detection
    accepts_labelled: bool = False                   # may train on a labelled dataset (`itermask_train --labelled`)

    # ---- planning ------------------------------------------------------------------------------------------
    def default_plan(self, plans: "Plans") -> Dict[str, Any]:
        """The method's own planned parameters (stored, editable, in plans.method_plans[name])."""
        return {}

    def epochs_for_machine(self, planned: Dict[str, Any], plans: "Plans",
                           iteration_seconds: Callable[["Stage", str], float]) -> Dict[str, Any]:
        """`planned` (this method's default_plan) with the cpu profile's epochs from the planning machine's seconds
        per training iteration of each stage: `iteration_seconds(stage, configuration)` times the engine's step of
        that stage here and adds the data pipeline. The planner calls it when it measures (`--throughput measure`,
        cpu profile), with plans.method_plans already holding the default plans. Default: unchanged (the method
        trains the plan's `training` epochs, which the planner measures itself)."""
        return planned

    def method_plan(self, plans: "Plans") -> Dict[str, Any]:
        """Planned parameters: the defaults for this plan, overridden by what plans.method_plans[name] holds."""
        return {**self.default_plan(plans), **(plans.method_plans.get(self.name) or {})}

    def check(self, plans: "Plans", configuration: str) -> None:
        """Raise ValueError (one line) when the method cannot run on this dataset/configuration."""
        if configuration not in self.configurations:
            raise ValueError(f"method {self.name} trains configuration(s) {', '.join(self.configurations)}, "
                             f"not '{configuration}'")

    # ---- training ------------------------------------------------------------------------------------------
    def stages(self, plans: "Plans", configuration: str) -> List[Stage]:
        raise NotImplementedError

    def build_network(self, stage: Stage, plans: "Plans", configuration: str) -> "torch.nn.Module":
        raise NotImplementedError

    def loss(self, stage: Stage, network: "torch.nn.Module", batch: Dict[str, "torch.Tensor"],
             ctx: StepContext) -> "torch.Tensor":
        raise NotImplementedError

    def validation_error(self, stage: Stage, network: "torch.nn.Module", batch: Dict[str, "torch.Tensor"],
                         ctx: StepContext) -> Tuple[float, float]:
        """(sum, count) of the stage's validation error over a batch; the engine reports sum/count over the
        fixed validation batches. Default: the loss, counted once per batch."""
        return float(self.loss(stage, network, batch, ctx).detach()), 1.0

    def training_data_note(self, plans: "Plans", configuration: str) -> Dict[str, Any]:
        """What the method's training reads or makes besides the healthy training cases (e.g. how it synthesises
        anomalies); the engine writes it, with any `--labelled` dataset, to fold_N/training_data.json (model card)."""
        return {}

    # ---- inference -----------------------------------------------------------------------------------------
    def infer(self, predictor: "Predictor", data: "np.ndarray", hf: "np.ndarray", brain: "np.ndarray",
              keep_masks: bool = False) -> "InferenceResult":
        """Preprocessed arrays (C, Z, Y, X), (C, Z, Y, X), (Z, Y, X) bool -> anomaly map and scores."""
        raise NotImplementedError

    def segment(self, predictor: "Predictor", result: "InferenceResult",
                brain: "np.ndarray") -> Tuple["np.ndarray", str]:
        """(uint8 segmentation, rule). Default: the anomaly map above the calibrated healthy voxel threshold;
        without calibration.json, the procedure's own final mask."""
        import numpy as np
        cal = predictor.calibration
        if cal is None or cal.get("voxel_threshold") is None:
            return result.final_mask.astype(np.uint8), "the method's own final mask (no calibration.json)"
        seg = (result.anomaly_map > cal["voxel_threshold"]) & brain.astype(bool)
        return seg.astype(np.uint8), "anomaly map > calibrated voxel_threshold"

    def calibrate(self, predictor: "Predictor", context: "CalibrationContext") -> Dict[str, Any]:
        """Method-specific calibration on the healthy validation cases, run before the engine's thresholds.
        Returns keys merged into calibration.json (and into predictor.calibration before the cases are scored).
        Work on `context.my_cases` (this rank's share) and merge with `context.gather`."""
        return {}

    def check_calibration(self, plans: "Plans", calibration: Dict[str, Any]) -> None:
        """Raise ValueError when a fold's calibration.json no longer belongs to the plan the fold holds (e.g. it was
        made for another map than the plan now names). Default: nothing to check."""

    def calibration_infer(self, predictor: "Predictor", case: str, data: "np.ndarray", hf: "np.ndarray",
                          brain: "np.ndarray", context: "CalibrationContext") -> "InferenceResult":
        """How a healthy validation case is scored for the thresholds (default: `infer`; a method may reuse
        what `calibrate` left in context.state)."""
        return self.infer(predictor, data, hf, brain)

    def calibrate_from_healthy_maps(self, first_errors: "np.ndarray", alpha: float) -> Dict[str, Any]:
        """Keys for calibration.json from the pooled healthy first-pass errors (InferenceResult.first_error)."""
        return {}

    def __repr__(self) -> str:
        return f"<method {self.name}>"


def stage_batch_size(stage: Stage, plans: "Plans", configuration: str) -> int:
    """The planned (global) batch of a stage: its own, else the configuration's."""
    return int(stage.batch_size or plans.configuration(configuration).batch_size)


def with_recipe(training_plan, stage: Stage, epochs: Optional[int] = None, iterations: Optional[int] = None):
    """The TrainingPlan a stage trains with: the plan's, the stage's overrides, then the command line's."""
    plan = dataclasses.replace(training_plan, **dict(stage.recipe))
    if epochs:
        plan = dataclasses.replace(plan, num_epochs=int(epochs))
    if iterations:
        plan = dataclasses.replace(plan, iterations_per_epoch=int(iterations))
    return plan


def sample_generators(seeds: "torch.Tensor", salt: int = 0) -> List["torch.Generator"]:
    """One CPU torch.Generator per sample, seeded from its batch seed (plus `salt` for independent streams)."""
    import torch
    return [torch.Generator().manual_seed((int(s) + 1_000_003 * salt) % (2 ** 63)) for s in seeds.tolist()]


def per_sample_randn(seeds: "torch.Tensor", shape: Sequence[int], device, salt: int = 0,
                     dtype=None) -> "torch.Tensor":
    """(B, *shape) standard normal noise, each sample's from its own seed (independent of batch layout)."""
    import torch
    noise = torch.stack([torch.randn(tuple(shape), generator=g) for g in sample_generators(seeds, salt)])
    return noise.to(device=device, dtype=dtype or torch.float32)


def per_sample_uniform(seeds: "torch.Tensor", device, salt: int = 0) -> "torch.Tensor":
    """(B,) uniform [0, 1) numbers, one per sample from its own seed."""
    import torch
    values = [float(torch.rand(1, generator=g)) for g in sample_generators(seeds, salt)]
    return torch.tensor(values, device=device)
