"""A tiny preprocessed phantom dataset and a hand-built Plans, for training/inference tests.

Layout under tmp_root: raw/, preprocessed/, results/ (point ITERMASK_raw/_preprocessed/_results at them). The raw
folder holds only labelsTs/ with poisoned (unreadable) files, so a test can prove that nothing reads them."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.experiment_planning.plans import (CalibrationPlan, ConfigurationPlan, InferencePlan, NetworkPlan,
                                                     NormalizationPlan, Plans, TrainingMaskPlan, TrainingPlan)
from itermask_auto.preprocessing.normalization import normalize_channel
from itermask_auto.preprocessing.storage import save_case
from itermask_auto.utilities.atomic import write_json
from itermask_auto.utilities.frequency import high_frequency

logger = logging.getLogger(__name__)

DATASET = "Dataset990_TrainPhantom"
SPACING = (2.0, 2.0, 2.0)          # (z, y, x) mm
SIZE_XYZ = (40, 48, 40)            # phantom grid (x, y, z), SimpleITK order
HF_RADIUS = 0.078
BACKGROUND = -3.0


def _phantom_arrays(seed: int, size_xyz: Sequence[int] = SIZE_XYZ) -> Tuple[np.ndarray, np.ndarray]:
    """(image zyx float32, brain zyx bool) of a skull-stripped project phantom."""
    # anatomy_scale 0.5: a ~70x85x60 mm brain fits the 80x96x80 mm grid
    ph = make_phantom(seed, size=size_xyz, spacing=SPACING[::-1], skull=False, n_lesions=0, anatomy_scale=0.5)
    return (sitk.GetArrayFromImage(ph.image).astype(np.float32), sitk.GetArrayFromImage(ph.brain_mask).astype(bool))


def _normalise(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    return normalize_channel(image, brain, NormalizationPlan(background_value=BACKGROUND))[0]


def make_plans(patch: Sequence[int] = (32, 32, 32), features: Sequence[int] = (8, 16, 32),
               median_shape: Sequence[int] = (34, 42, 34)) -> Plans:
    n = len(features)
    dim = len(patch)
    network = NetworkPlan(features_per_stage=list(features), kernel_sizes=[[3] * dim] * n,
                          strides=[[1] * dim] + [[2] * dim] * (n - 1), n_conv_per_stage=2,
                          n_conv_per_stage_decoder=2, norm="instance", dropout=0.0, input_channels=2,
                          output_channels=1)
    config_3d = ConfigurationPlan(name="3d", spacing=list(SPACING), median_shape=list(median_shape),
                                  patch_size=list(patch), batch_size=2, network=network,
                                  data_identifier="itermask_3d", estimated_memory_gb=0.1)
    net_2d = NetworkPlan(features_per_stage=list(features), kernel_sizes=[[3, 3]] * n,
                         strides=[[1, 1]] + [[2, 2]] * (n - 1), n_conv_per_stage=2, n_conv_per_stage_decoder=2,
                         norm="batch", dropout=0.0, input_channels=2, output_channels=1)
    config_2d = ConfigurationPlan(name="2d", spacing=list(SPACING), median_shape=list(median_shape),
                                  patch_size=list(patch[-2:]), batch_size=4, network=net_2d,
                                  data_identifier="itermask_3d", estimated_memory_gb=0.05)
    return Plans(
        dataset_name=DATASET, plans_name="itermaskPlans", channel_names={"0": "T1"}, file_ending=".nii.gz",
        normalization=NormalizationPlan(scheme="zscore_brain", clip_percentiles=[0.5, 99.5],
                                        background_value=BACKGROUND),
        hf_radius_cycles_per_mm=HF_RADIUS,
        training_masks=TrainingMaskPlan(block_sizes_mm=[4.0, 2.0, 8.0], block_probabilities=[0.5, 0.25, 0.25],
                                        variance_range_blocks=[0.3, 10.0], n_points=20_000, fill="gaussian_noise",
                                        masked_loss_weight=1.0),
        training=TrainingPlan(optimizer="adam", initial_lr=1e-2, lr_schedule="poly", lr_step_fraction=0.6,
                              weight_decay=0.0, num_epochs=2, iterations_per_epoch=4, validation_iterations=2,
                              mixed_precision="auto", rotation_degrees=10.0, scaling_range=[0.9, 1.1],
                              mirror_axes=[2], num_folds=5, seed=12345),
        inference=InferencePlan(sweep_steps=5, sweep_max_percent=99.0, fit_max_threshold=10.0, fit_min_r2=0.85,
                                gamma=0.01, convergence_tolerance=0.01, max_shrink_passes=4, tile_step_size=0.5,
                                mode="itermask3d"),
        calibration=CalibrationPlan(alpha=0.01, detection_rule="max_healthy_score", detection_quantile=0.95),
        configurations={"3d": config_3d, "2d": config_2d}, default_configuration="3d", anisotropy_ratio=1.0,
        rules={"all": "hand-built test plan (tests/trainer_fixtures.py)"},
    )


def make_preprocessed_phantom_dataset(tmp_root: Path, n_cases: int = 6, patch: Sequence[int] = (32, 32, 32),
                                      features: Sequence[int] = (8, 16, 32),
                                      size_xyz: Sequence[int] = SIZE_XYZ) -> Tuple[str, Plans]:
    """Write tmp_root/preprocessed/<DATASET>/ (plans, dataset.json, cases) and poisoned tmp_root/raw labels."""
    tmp_root = Path(tmp_root)
    ds_dir = tmp_root / "preprocessed" / DATASET
    shapes = []
    plans = make_plans(patch, features)
    data_dir = ds_dir / plans.configuration("3d").data_identifier
    for i in range(n_cases):
        image, brain = _phantom_arrays(seed=i, size_xyz=size_xyz)
        zz, yy, xx = np.nonzero(brain)
        box = [slice(max(a.min() - 2, 0), a.max() + 3) for a in (zz, yy, xx)]
        image, brain = image[tuple(box)], brain[tuple(box)]
        data = _normalise(image, brain)
        hf = high_frequency(data, SPACING, HF_RADIUS)
        shapes.append(data.shape)
        properties = {"case": f"phantom_{i:03d}", "spacing": list(SPACING), "shape_after_crop": list(data.shape),
                      "original_size_xyz": list(size_xyz), "original_spacing_xyz": list(SPACING[::-1]),
                      "original_origin": [0.0, 0.0, 0.0], "original_direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                      "crop_bbox_zyx": [[int(s.start), int(s.stop)] for s in box]}
        save_case(data_dir, f"phantom_{i:03d}", data[None], hf[None], brain.astype(np.uint8), properties)
    plans.configurations["3d"].median_shape = [int(v) for v in np.median(shapes, axis=0)]
    plans.configurations["2d"].median_shape = plans.configurations["3d"].median_shape
    plans.save(ds_dir / "itermask_plans.json")
    write_json(ds_dir / "dataset.json", {"name": "TrainPhantom", "channel_names": {"0": "T1"},
                                         "file_ending": ".nii.gz", "numTraining": n_cases})
    labels = tmp_root / "raw" / DATASET / "labelsTs"
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(2):  # poisoned: not NIfTI at all; reading one would crash or be caught by the guard
        (labels / f"phantom_{i:03d}.nii.gz").write_bytes(b"POISON: lesion labels must never be read in training")
    for sub in ("raw", "preprocessed", "results"):
        (tmp_root / sub).mkdir(parents=True, exist_ok=True)
    return DATASET, plans


def set_roots(monkeypatch, tmp_root: Path) -> None:
    for var, sub in (("ITERMASK_raw", "raw"), ("ITERMASK_preprocessed", "preprocessed"),
                     ("ITERMASK_results", "results")):
        monkeypatch.setenv(var, str(Path(tmp_root) / sub))


def make_cheap_phantom_dataset(tmp_root: Path, n_cases: int, size_xyz: Sequence[int] = (30, 30, 30),
                               sweep_steps: int = 3, max_shrink_passes: int = 2) -> Tuple[str, Plans]:
    """make_preprocessed_phantom_dataset with small volumes (one 32³ window each) and few inference passes: the
    shared set-up of the tests that need a model but not a good one (bad input, crashes, prediction plumbing)."""
    dataset, plans = make_preprocessed_phantom_dataset(tmp_root, n_cases=n_cases, size_xyz=size_xyz)
    plans.inference.sweep_steps, plans.inference.max_shrink_passes = sweep_steps, max_shrink_passes
    plans.save(Path(tmp_root) / "preprocessed" / DATASET / "itermask_plans.json")
    return dataset, plans


def set_fresh_roots(monkeypatch, tmp_root: Path) -> Path:
    """Create tmp_root/{raw,preprocessed,results} and point the ITERMASK_* variables at them."""
    for sub in ("raw", "preprocessed", "results"):
        (Path(tmp_root) / sub).mkdir(parents=True, exist_ok=True)
    set_roots(monkeypatch, tmp_root)
    return Path(tmp_root)


def train_tiny_model(tmp_path_factory, name: str) -> Tuple[Path, str, Path]:
    """(data root, dataset, fold folder) of an itermask3d model trained for one iteration on cheap phantoms, with no
    calibration: the module-scoped `model` of the tests that need a model folder but not a good model."""
    import pytest
    import torch

    from itermask_auto.training.api import run_training
    root = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    set_roots(mp, root)
    dataset, _ = make_cheap_phantom_dataset(root, n_cases=4)
    fold_dir = run_training(dataset, "3d", fold=0, device="cpu", epochs=1, iterations=1, run_calibration=False,
                            num_threads=1)
    mp.undo()
    torch.set_num_threads(1)
    return root, dataset, Path(fold_dir)
