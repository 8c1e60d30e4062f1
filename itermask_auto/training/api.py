"""`run_training`: everything `itermask_train` does, callable from Python.

Finds the preprocessed dataset and its plan, the fold's cases (splits.json), trains (or continues), copies the
plan and the split into the fold folder, then calibrates on the fold's healthy validation cases. Reads only the
preprocessed folder: no raw data and no lesion label is ever opened here."""
from __future__ import annotations

import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Optional

from itermask_auto.experiment_planning.plans import PLANS_FILE, Plans
from itermask_auto.methods.registry import DEFAULT_METHOD, get_method
from itermask_auto.paths import preprocessed_root
from itermask_auto.preprocessing.storage import list_preprocessed_cases
from itermask_auto.training.model_folder import PLANS_COPY, model_folder
from itermask_auto.training.progress import file_logging
from itermask_auto.training.schedule import resolve_device, set_torch_threads
from itermask_auto.training.splits import fold_cases, load_or_create_splits
from itermask_auto.utilities.atomic import write_json
from itermask_auto.utilities.dataset import find_dataset

logger = logging.getLogger(__name__)

CALIBRATION_MODULE = "itermask_auto.inference.calibration"


def calibrate(fold_dir: Path, device: str) -> Optional[dict]:
    """Run the inference helper's calibration if that module exists; otherwise warn and skip."""
    if importlib.util.find_spec(CALIBRATION_MODULE) is None:
        logger.warning("%s is not available: calibration skipped for %s", CALIBRATION_MODULE, fold_dir)
        return None
    module = importlib.import_module(CALIBRATION_MODULE)
    logger.info("calibrating %s on its healthy validation cases", fold_dir)
    return module.calibrate_model_folder(fold_dir, device=device)


def _parse_fold(fold: int | str) -> int | str:
    if str(fold) == "all":
        return "all"
    try:
        return int(fold)
    except ValueError:
        raise ValueError(f"fold must be an integer or 'all', got {fold!r}") from None


def run_training(dataset: str | int, configuration: Optional[str] = None, fold: int | str = 0, method: str = DEFAULT_METHOD,
                 device: str = "cpu", continue_training: bool = False, calibrate_only: bool = False,
                 epochs: Optional[int] = None, iterations: Optional[int] = None, num_workers: int = 0,
                 compile: bool = False, run_calibration: bool = True, num_threads: Optional[int] = None) -> Path:
    """Train one fold (or only calibrate it) and return its model folder.

    num_threads: torch CPU threads (default: cores minus data workers); run_calibration=False skips calibration."""
    fold = _parse_fold(fold)
    spec = get_method(method)
    dataset_dir = find_dataset(preprocessed_root(), dataset)
    plans_path = dataset_dir / PLANS_FILE
    if not plans_path.is_file():
        raise FileNotFoundError(f"{dataset_dir}: not preprocessed ({PLANS_FILE} missing): "
                                f"run itermask_plan_and_preprocess -d {dataset} first")
    plans = Plans.load(plans_path)
    if configuration is None:  # the planner's choice: 2d on strongly anisotropic data, else 3d
        configuration = plans.default_configuration
        logger.info("configuration %s (the plan's default)", configuration)
    if configuration not in plans.configurations:
        raise ValueError(f"{plans_path}: configuration '{configuration}' is not planned "
                         f"(planned: {', '.join(sorted(plans.configurations))})")
    config = plans.configuration(configuration)
    fold_dir = model_folder(dataset_dir.name, spec.name, plans.plans_name, configuration, fold)
    torch_device = resolve_device(device)

    if len(config.patch_size) == 2 and config.slice_axis not in (0, 1, 2):
        raise ValueError(f"{plans_path}: 2d configuration with slice_axis {config.slice_axis} (must be 0, 1 or 2)")
    if not calibrate_only:
        data_folder = dataset_dir / config.data_identifier
        cases = list_preprocessed_cases(data_folder) if data_folder.is_dir() else []
        if len(cases) < 2:
            raise ValueError(f"{data_folder}: {len(cases)} preprocessed case(s) for configuration '{configuration}'"
                             f"; training needs at least 2 (run itermask_plan_and_preprocess -c {configuration})")
        splits = load_or_create_splits(dataset_dir, cases, plans.training.num_folds, plans.training.seed)
        train_cases, val_cases = fold_cases(splits, fold, cases)
        fold_dir.mkdir(parents=True, exist_ok=True)
        plans.save(fold_dir / PLANS_COPY)
        write_json(fold_dir / "splits.json", {"fold": str(fold), "train": train_cases, "val": val_cases})
        with file_logging(fold_dir):
            threads = set_torch_threads(torch_device, num_workers, num_threads)
            logger.info("training %s -> %s (device %s, %d torch threads, %d data workers)", dataset_dir.name,
                        fold_dir, torch_device, threads, num_workers)
            from itermask_auto.training.trainer import Trainer  # torch-heavy: import only when training
            trainer = Trainer(plans, configuration, spec, fold, fold_dir, dataset_dir.name, data_folder,
                              train_cases, val_cases, torch_device, num_epochs=epochs, iterations=iterations,
                              num_workers=num_workers, compile=compile)
            trainer.run(continue_training=continue_training)
            if spec.inference == "itermask2":  # IterMask2's second network: same fold, data and recipe
                from itermask_auto.training.first_iter import train_first_iter
                train_first_iter(fold_dir, plans, configuration, spec, fold, dataset_dir.name, data_folder,
                                 train_cases, val_cases, torch_device, num_epochs=epochs, iterations=iterations,
                                 num_workers=num_workers, compile=compile, continue_training=continue_training)
    elif not (fold_dir / "checkpoint_final.pth").is_file():
        raise FileNotFoundError(f"{fold_dir / 'checkpoint_final.pth'}: not found - train this fold before "
                                f"--calibrate_only")
    if run_calibration:
        with file_logging(fold_dir):
            calibrate(fold_dir, device)
    return fold_dir
