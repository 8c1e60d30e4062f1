"""Where a trained model lives and how it is saved and loaded.

$ITERMASK_results/DatasetXXX_Name/<method>__<plans_name>__<config>/fold_N/ holds checkpoint_{latest,best,final}.pth,
plans.json, splits.json (this fold's {"fold", "train", "val"}), dataset_fingerprint.json, progress.png,
training_log.txt, calibration.json; a method's later stages keep their checkpoints in subfolders (Stage.folder).
A checkpoint is a dict: network, optimizer, grad_scaler, epoch (epochs completed), num_epochs, best_val_loss,
history, rng, meta {method, stage, configuration, dataset_name, plans_name, fold, plans, world_size}."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.imageio.errors import InputError
from itermask_auto.methods.base import Method, Stage
from itermask_auto.methods.registry import get_method
from itermask_auto.paths import results_root
from itermask_auto.utilities.atomic import atomic_path

logger = logging.getLogger(__name__)

PLANS_COPY = "plans.json"
FINAL = "checkpoint_final.pth"


def model_folder(dataset_folder_name: str, method: str, plans_name: str, configuration: str, fold: int | str) -> Path:
    return results_root() / dataset_folder_name / f"{method}__{plans_name}__{configuration}" / f"fold_{fold}"


def plans_as_stored(plans: Plans) -> Dict[str, Any]:
    """The plan dict exactly as plans.json reads back (JSON round trip: tuples become lists)."""
    return json.loads(json.dumps(plans.to_dict()))


def same_plan(stored: Dict[str, Any], plans: Plans) -> bool:
    """Compared through the dataclasses, so a plan key added since training (with its default) is no mismatch."""
    return plans_as_stored(Plans.from_dict(stored)) == plans_as_stored(plans)


NETWORK_PLAN_KEYS = ("plans_name", "channel_names", "normalization", "hf_radius_cycles_per_mm", "configurations")


def same_network_plan(stored: Dict[str, Any], plans: Plans) -> bool:
    """What the trained weights depend on is unchanged (inference and calibration keys may be edited after
    training: they are read when predicting and calibrating)."""
    a, b = plans_as_stored(Plans.from_dict(stored)), plans_as_stored(plans)
    return all(a[k] == b[k] for k in NETWORK_PLAN_KEYS)


def save_checkpoint(path: Path, payload: Dict[str, Any]) -> None:
    """torch.save to a temporary file next to `path`, then rename: an interrupted save never corrupts it."""
    with atomic_path(path, ".pth") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (train first, or pick another checkpoint)")
    try:
        # our checkpoints hold only tensors and plain Python values, so the safe loader suffices
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is not ours / is damaged
        raise InputError(path, f"not a readable itermask checkpoint ({type(e).__name__}: {e})".splitlines()[0]) from e
    if not isinstance(ckpt, dict) or "network" not in ckpt or "meta" not in ckpt:
        raise InputError(path, "not an itermask checkpoint (no 'network'/'meta')")
    return ckpt


def load_stage_network(fold_dir: Path, method: Method, stage: Stage, plans: Plans, configuration: str,
                       checkpoint: str = FINAL, device: str | torch.device = "cpu") -> torch.nn.Module:
    """One stage's trained network, eval() on `device`, checked against the fold's plan and configuration."""
    path = Path(fold_dir) / stage.folder / checkpoint
    if not path.is_file() and stage.folder:
        raise FileNotFoundError(f"{path}: not found - method {method.name} needs its '{stage.name}' network "
                                f"(itermask_train ... -m {method.name} trains every stage)")
    ckpt = load_checkpoint(path, device)
    meta = ckpt["meta"]
    if not same_network_plan(meta["plans"], plans):
        raise InputError(path, f"was trained with another plan than {Path(fold_dir) / PLANS_COPY} "
                               f"(plans_name {meta.get('plans_name')!r} vs {plans.plans_name!r})")
    if meta.get("configuration", configuration) != configuration:
        raise InputError(path, f"was trained for configuration {meta['configuration']!r}, not {configuration!r}")
    network = method.build_network(stage, plans, configuration)
    try:
        network.load_state_dict(ckpt["network"])
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit the planned network: {str(e).splitlines()[0]}")
    return network.to(device).eval()


def read_fold(fold_dir: str | Path, checkpoint: str = FINAL,
              device: str | torch.device = "cpu") -> Tuple[Dict[str, torch.nn.Module], Plans, str, Method]:
    """({stage name: network.eval()}, plans, configuration, method) of a trained fold."""
    fold_dir = Path(fold_dir)
    plans_path = fold_dir / PLANS_COPY
    if not plans_path.is_file():
        raise FileNotFoundError(f"{plans_path}: not found - {fold_dir} is not a trained model folder")
    plans = Plans.load(plans_path)
    meta = load_checkpoint(fold_dir / checkpoint, device)["meta"]   # the first stage names method and configuration
    try:
        method = get_method(meta["method"])
    except KeyError as e:
        raise InputError(fold_dir / checkpoint, f"{e.args[0]}: this version cannot predict with it") from None
    configuration = meta["configuration"]
    networks = {stage.name: load_stage_network(fold_dir, method, stage, plans, configuration, checkpoint, device)
                for stage in method.stages(plans, configuration)}
    return networks, plans, configuration, method


def load_trained_model(fold_dir: str | Path, checkpoint: str = FINAL,
                       device: str | torch.device = "cpu") -> Tuple[torch.nn.Module, Plans, str, str]:
    """(first stage's network.eval() on `device`, plans, configuration name, method name) of a trained fold."""
    networks, plans, configuration, method = read_fold(fold_dir, checkpoint, device)
    return next(iter(networks.values())), plans, configuration, method.name
