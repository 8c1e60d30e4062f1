"""Typed plan: what `itermask_plan_and_preprocess` decides and every later stage reads.

Stored as `itermask_plans.json` (readable, editable). Every key is documented in docs/plans.md.
Axis order everywhere is the canonical array order (z, y, x) of the preprocessed data: see
`preprocessing/orientation.py`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from itermask_auto.utilities.atomic import read_json, write_json

PLANS_FILE = "itermask_plans.json"
FINGERPRINT_FILE = "dataset_fingerprint.json"


@dataclass
class NetworkPlan:
    """U-Net topology (dynamic-network-architectures PlainConvUNet arguments)."""
    features_per_stage: List[int]
    kernel_sizes: List[List[int]]
    strides: List[List[int]]
    n_conv_per_stage: int = 2
    n_conv_per_stage_decoder: int = 2
    norm: str = "instance"          # "instance" | "batch"
    dropout: float = 0.0
    input_channels: int = 2         # image channels + one high-frequency channel per image channel
    output_channels: int = 1        # reconstructed image channels


@dataclass
class ConfigurationPlan:
    name: str                        # "3d" | "2d"
    spacing: List[float]             # target spacing (mm), canonical (z, y, x)
    median_shape: List[int]          # median brain-cropped shape at target spacing
    patch_size: List[int]            # 3 entries for 3d, 2 (y, x in-plane) for 2d
    batch_size: int
    network: NetworkPlan
    data_identifier: str             # subfolder of the preprocessed dataset holding this configuration's arrays
    estimated_memory_gb: float = 0.0  # the planner's activation-memory estimate for one training step
    slice_axis: int = 0              # 2d only: the canonical axis slices are taken along (0 = z, axial)


@dataclass
class NormalizationPlan:
    scheme: str = "zscore_brain"     # z-score inside the brain mask, per channel
    # mean/std come from brain voxels between these percentiles (robust to lesions); the voxels are NOT clipped
    # there, or a hyperintense lesion larger than 0.5 % of the brain would be flattened
    clip_percentiles: List[float] = field(default_factory=lambda: [0.5, 99.5])
    output_clip: float = 8.0         # normalised values are clipped to ±output_clip (tames extreme outliers)
    background_value: float = -3.0   # value written outside the brain after normalisation


@dataclass
class TrainingMaskPlan:
    """IterMask3D Gaussian-blob mask generator, sizes in mm so it does not depend on spacing."""
    block_sizes_mm: List[float]      # block edge of the coarse grid the blob is drawn on
    block_probabilities: List[float]
    variance_range_blocks: List[float] = field(default_factory=lambda: [0.3, 10.0])  # eigenvalues λ ~ U(lo, hi)
    n_points: int = 100_000
    fill: str = "gaussian_noise"     # masked voxels replaced by N(0, 1)
    masked_loss_weight: float = 1.0  # >1 weights the masked region more in the MSE


@dataclass
class TrainingPlan:
    optimizer: str = "adam"
    initial_lr: float = 1e-3
    lr_schedule: str = "poly"        # "poly" (nnU-Net) | "step" (IterMask3D: ×0.1 at lr_step_fraction)
    lr_step_fraction: float = 0.6
    weight_decay: float = 0.0
    num_epochs: int = 100
    iterations_per_epoch: int = 100
    validation_iterations: int = 20
    mixed_precision: str = "auto"    # "auto" (bf16 on CPU if supported, bf16/fp16 on CUDA) | "fp32"
    rotation_degrees: float = 10.0
    scaling_range: List[float] = field(default_factory=lambda: [0.9, 1.1])
    mirror_axes: List[int] = field(default_factory=lambda: [2])   # left-right only: brains are ~symmetric
    num_folds: int = 5
    seed: int = 12345


@dataclass
class InferencePlan:
    """IterMask3D schedule (reference: 100 sweep passes, γ=0.01, shrink until <1 % change)."""
    sweep_steps: int = 10            # number of sweep passes; quantile fractions are spread over sweep_max_percent
    sweep_max_percent: float = 99.0  # the last sweep pass keeps the top (100 - 99) % of brain voxels masked
    fit_max_threshold: float = 10.0  # t(i) points used for the a·tan(b·i) fit stop when t exceeds this
    fit_min_r2: float = 0.85
    gamma: float = 0.01              # k* = first sweep index i (reference units, 1..100) with dt/di > gamma
    gamma_rule: str = "calibrated"   # "calibrated": γ from calibration.json when present | "fixed": always `gamma`
    segmentation: str = "final_mask"  # CASE_seg of itermask3d: "final_mask" (with a calibrated γ) | "voxel_threshold"
    convergence_tolerance: float = 0.01
    max_shrink_passes: int = 8
    tile_step_size: float = 0.5      # sliding-window step as a fraction of the patch
    mode: str = "itermask3d"         # "itermask3d" (per-subject τ) | "itermask2" (τ from calibration)
    # method itermask2 (first-iteration network + masked AE): τ = this percentile of the masked error under random
    # training masks on the healthy validation cases; the first mask = this fraction of brain voxels with the
    # highest first-iteration error (IterMask2: 80th percentile, top 60 %)
    itermask2_tau_percentile: float = 80.0
    initial_mask_fraction: float = 0.6
    # the knee is read on t / (the case's median whole-brain-masked error) ("median_error"), a scale that does not
    # depend on how well a model reconstructs; "absolute" (plans made before it) reads it on t itself
    knee_scale: str = "absolute"
    # mode "itermask2": the calibrated τ is in units of "absolute" error (plans made before it) or of each case's
    # median whole-brain-masked error ("median_error": τ then follows a scan whose errors are all higher, e.g. from
    # another site, as the knee does; "q99_error": its 99th percentile, steadier within a site); calibration
    # records the unit it searched in, and prediction uses that one; "hf_median_error": the median of its squared
    # error after the residual's local mean is removed (the low-frequency guess that scatters the plain median)
    tau_scale: str = "absolute"
    # "hf_median_error" (knee_scale or tau_scale): σ (voxels) of the local mean removed from the first pass's residual
    unit_highpass_voxels: float = 2.0
    # every method: anomaly maps, thresholds and segmentations live in the brain mask eroded by this much (the
    # brain's rim is where healthy scans make most false positives); calibration may choose it (calibration plan)
    brain_erosion_mm: float = 0.0
    # every method: the anomaly map is median-filtered over this width (mm; 0 = off, plans made before it), the
    # final mask majority-filtered alike (inference/map_filter.py): thin healthy error lines and specks go, blobs stay
    map_median_mm: float = 0.0
    # itermask3d's exported map (each keeps final mask == {map > τ}): "last_pass" = each voxel's error in the last
    # shrink pass in which it was still masked (plans made before it); "final_over_first" = that inside the final
    # mask, elsewhere the first pass's error mapped below τ (τ·e/(e + τ): the first pass's order, which the shrink's
    # unmasking scrambles); "final_first_ranked" = the final mask on top in the first pass's order
    map_readout: str = "last_pass"
    # every method's segmentation: "healthy_validation" = calibration records the largest connected component of
    # the healthy validation cases' segmentations and prediction drops smaller components (inference/components.py);
    # "off" (default, and plans made before it): the segmentation as the method makes it
    component_filter: str = "off"


@dataclass
class CalibrationPlan:
    alpha: float = 0.01              # target healthy voxel false-positive rate of the segmentation
    # healthy voxel false-positive rates whose thresholds calibration.json also reports ("voxel_thresholds")
    voxel_fpr_levels: List[float] = field(default_factory=lambda: [0.01, 0.05, 0.1])
    detection_rule: str = "max_healthy_score"  # volume threshold rule, see docs/plans.md
    detection_quantile: float = 0.95
    gamma_case_quantile: float = 0.9  # γ = this quantile of the healthy validation cases' own γ (see calibration)
    # per-case γ target: "first_pass_quantile" (plans made before: the (1 − α) quantile of the whole-brain-masked
    # error, out of reach of the sweep) | "sweep_quantile" (the case's own sweep curve at i = 100·(1 − α))
    gamma_target: str = "first_pass_quantile"
    # IterMask3D in inference.mode "itermask2" (one calibrated τ, shrink only): "first_pass_quantile" = the (1 − α)
    # quantile of the healthy whole-brain-masked errors (healthy final masks then end far below α) |
    # "final_mask_fraction" = the τ whose shrink leaves α of the healthy validation brains masked (a search over
    # τ, at most `tau_search_steps` secant steps after bracketing; one shrink per validation case per step)
    itermask2_tau_target: str = "first_pass_quantile"
    tau_search_steps: int = 6
    # brain erosion chosen on the healthy validation maps among these (mm); empty = the plan's brain_erosion_mm
    brain_erosion_candidates_mm: List[float] = field(default_factory=list)
    # brain masks of the calibration cases: "preprocessed" (as training), "automatic" (re-preprocessed without the
    # dataset's masks, as a user predicting without masks gets them) or "both" (thresholds that hold for either)
    brain_masks: str = "preprocessed"
    # one-sided confidence of the stated bounds on a new healthy scan's detection and voxel false-positive rates
    bound_confidence: float = 0.9


@dataclass
class Plans:
    dataset_name: str
    plans_name: str
    channel_names: Dict[str, str]    # "0": "T1", ...
    file_ending: str
    normalization: NormalizationPlan
    hf_radius_cycles_per_mm: float
    training_masks: TrainingMaskPlan
    training: TrainingPlan
    inference: InferencePlan
    calibration: CalibrationPlan
    configurations: Dict[str, ConfigurationPlan]
    default_configuration: str
    anisotropy_ratio: float          # max/min target spacing; > 3 makes 2d the default
    profile: str = "cpu"             # "cpu" | "gpu": the hardware profile the plan was made for
    rules: Dict[str, str] = field(default_factory=dict)  # planned key -> rule that produced it
    # each method's own planned parameters (methods/<name>/: Method.default_plan), editable like the rest
    method_plans: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def configuration(self, name: Optional[str] = None) -> ConfigurationPlan:
        name = name or self.default_configuration
        if name not in self.configurations:
            raise KeyError(f"configuration '{name}' is not in the plan (has: {sorted(self.configurations)})")
        return self.configurations[name]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Plans":
        d = dict(d)
        configs = {
            k: ConfigurationPlan(**{**v, "network": NetworkPlan(**v["network"])})
            for k, v in d.pop("configurations").items()
        }
        return cls(
            configurations=configs,
            normalization=NormalizationPlan(**d.pop("normalization")),
            training_masks=TrainingMaskPlan(**d.pop("training_masks")),
            training=TrainingPlan(**d.pop("training")),
            inference=InferencePlan(**d.pop("inference")),
            calibration=CalibrationPlan(**d.pop("calibration")),
            **d,
        )

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Plans":
        try:
            return cls.from_dict(read_json(path))
        except (TypeError, KeyError) as e:
            raise ValueError(f"{path}: not a valid itermask plan ({e})") from e
