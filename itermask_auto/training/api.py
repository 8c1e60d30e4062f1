"""`run_training`: everything `itermask_train` does, callable from Python.

Finds the preprocessed dataset and its plan, the fold's cases (splits.json), trains each of the method's stages
in order (or continues them), copies the plan, the split and the dataset fingerprint into the fold folder, then
calibrates on the fold's healthy validation cases. Reads only the preprocessed folder: no raw data and no lesion
label is ever opened here. Under torchrun every rank runs this; only rank 0 writes files."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Optional

from itermask_auto.calibration.calibrate import calibrate_model_folder
from itermask_auto.experiment_planning.plans import FINGERPRINT_FILE, PLANS_FILE, Plans
from itermask_auto.methods.registry import DEFAULT_METHOD, METHODS, get_method
from itermask_auto.model_sharing.model_card import TRAINING_DATA_NOTE
from itermask_auto.paths import preprocessed_root, raw_root
from itermask_auto.preprocessing.provenance import check_arrays_match_plan
from itermask_auto.preprocessing.storage import list_preprocessed_cases
from itermask_auto.training.checkpoint import FINAL, PLANS_COPY, model_folder
from itermask_auto.training.progress import file_logging
from itermask_auto.training.schedule import resolve_device, set_torch_threads
from itermask_auto.training.splits import fold_cases, load_or_create_splits
from itermask_auto.utilities.atomic import read_json, write_json
from itermask_auto.utilities.dataset import find_dataset
from itermask_auto.utilities.distributed import SINGLE, Ranks, barrier, init_from_environment

logger = logging.getLogger(__name__)


def _parse_fold(fold: int | str) -> int | str:
    if str(fold) == "all":
        return "all"
    try:
        return int(fold)
    except ValueError:
        raise ValueError(f"fold must be an integer or 'all', got {fold!r}") from None


def load_plan(dataset: str | int, configuration: Optional[str],
              supported: Optional[tuple] = None) -> tuple[Path, Plans, str]:
    """(preprocessed dataset folder, plan, configuration). Without a configuration: the plan's default if the
    method supports it (`supported`, first = the method's own default), else the method's default."""
    dataset_dir = find_dataset(preprocessed_root(), dataset)
    plans_path = dataset_dir / PLANS_FILE
    if not plans_path.is_file():
        raise FileNotFoundError(f"{dataset_dir}: not preprocessed ({PLANS_FILE} missing): "
                                f"run itermask_plan_and_preprocess -d {dataset} first")
    plans = Plans.load(plans_path)
    if configuration is None:  # the planner's choice (2d on strongly anisotropic data, else 3d) if the method has it
        configuration = plans.default_configuration
        if supported and configuration not in supported:
            configuration = supported[0]
            logger.info("configuration %s (the method's; the plan's default %s is not one it trains)", configuration,
                        plans.default_configuration)
        else:
            logger.info("configuration %s (the plan's default)", configuration)
    if configuration not in plans.configurations:
        raise ValueError(f"{plans_path}: configuration '{configuration}' is not planned "
                         f"(planned: {', '.join(sorted(plans.configurations))})")
    config = plans.configuration(configuration)
    if len(config.patch_size) == 2 and config.slice_axis not in (0, 1, 2):
        raise ValueError(f"{plans_path}: 2d configuration with slice_axis {config.slice_axis} (must be 0, 1 or 2)")
    return dataset_dir, plans, configuration


def run_training(dataset: str | int, configuration: Optional[str] = None, fold: int | str = 0,
                 method: str = DEFAULT_METHOD, device: str = "cpu", continue_training: bool = False,
                 calibrate_only: bool = False, epochs: Optional[int] = None, iterations: Optional[int] = None,
                 num_workers: int = 0, compile: bool = False, run_calibration: bool = True,
                 num_threads: Optional[int] = None, verify_replicas: bool = False,
                 labelled: Optional[str | int] = None) -> Path:
    """Train one fold (or only calibrate it) and return its model folder.

    num_threads: torch CPU threads (default: cores minus data workers); run_calibration=False skips calibration;
    verify_replicas: (torchrun) check after every step that all ranks hold bit-identical weights;
    labelled: a raw dataset (imagesTr + labelsTr) added to training, for methods that accept weak supervision."""
    fold = _parse_fold(fold)
    spec = get_method(method)
    if labelled is not None and not spec.accepts_labelled:
        raise ValueError(f"method {spec.name} does not train on labelled data (--labelled); methods that do: "
                         f"{', '.join(sorted(n for n, m in METHODS.items() if m.accepts_labelled)) or 'none'}")
    dataset_dir, plans, configuration = load_plan(dataset, configuration, spec.configurations)
    spec.check(plans, configuration)
    fold_dir = model_folder(dataset_dir.name, spec.name, plans.plans_name, configuration, fold)
    ranks, device = init_from_environment(device)
    torch_device = resolve_device(device)
    if not calibrate_only:
        labelled_data = _labelled(labelled, plans, configuration, dataset_dir, fold_dir, continue_training, ranks)
        _train_stages(spec, plans, configuration, fold, fold_dir, dataset_dir, torch_device, ranks,
                      continue_training, epochs, iterations, num_workers, compile, num_threads, verify_replicas,
                      labelled_data)
    elif not (fold_dir / FINAL).is_file():
        raise FileNotFoundError(f"{fold_dir / FINAL}: not found - train this fold before --calibrate_only")
    if run_calibration:
        with file_logging(fold_dir, enabled=ranks.is_main):
            if calibrate_only and ranks.is_main:
                warn_plan_drift(plans, fold_dir, spec.name)
            calibrate(fold_dir, device, ranks=ranks)
    barrier(ranks)
    return fold_dir


def _labelled(dataset, plans: Plans, configuration: str, dataset_dir: Path, fold_dir: Path,
              continue_training: bool, ranks: Ranks):
    """The `--labelled` dataset prepared (rank 0) and loaded (every rank); None without one. A fold continued with
    --c keeps the labelled dataset (or none) it was started with."""
    name = find_dataset(raw_root(), dataset).name if dataset is not None else None
    note = fold_dir / TRAINING_DATA_NOTE
    if continue_training and (fold_dir / PLANS_COPY).is_file():
        before = read_json(note).get("labelled_dataset") if note.is_file() else None
        if before != name:
            how = f"with --labelled {before}" if before else "without --labelled"
            raise ValueError(f"{fold_dir}: was trained {how}; continue it the same way")
    if dataset is None:
        return None
    from itermask_auto.training.labelled import load_labelled, prepare_labelled
    if ranks.is_main:
        prepare_labelled(dataset, plans, configuration, dataset_dir)
    barrier(ranks)
    return load_labelled(dataset, plans, configuration, dataset_dir)


def warn_plan_drift(dataset_plans: Plans, fold_dir: Path, method: str) -> list[str]:
    """--calibrate_only calibrates with the fold's own plans.json (the plan its networks were trained with), not
    the dataset's: name the keys of `inference`, `calibration` and the method's own plan in which the two differ,
    so an edit made in the wrong file is not silently ignored. Returns the differing keys."""
    if not (fold_dir / PLANS_COPY).is_file():    # calibration itself says what is missing
        return []
    # both through Plans: keys an older plans.json lacks read as their defaults on either side
    ours, theirs = (_calibration_keys(plans.to_dict(), method)
                    for plans in (dataset_plans, Plans.load(fold_dir / PLANS_COPY)))
    keys = [k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
    if keys:
        logger.warning("%s differs from the dataset's plan in %s: --calibrate_only uses the fold's copy (edit that "
                       "file to recalibrate with another setting)", fold_dir / PLANS_COPY, ", ".join(keys))
    return keys


def _calibration_keys(plans: dict, method: str) -> dict:
    """{"inference.tau_scale": value, "method_plans.sadm.anomaly_kinds.noise_blend": value, ...}: every leaf of the
    plan sections calibration reads."""
    def leaves(tree, prefix: str) -> dict:
        if not isinstance(tree, dict):
            return {prefix: tree}
        return {k: v for key, sub in tree.items() for k, v in leaves(sub, f"{prefix}.{key}").items()}
    return {**leaves(plans["inference"], "inference"), **leaves(plans["calibration"], "calibration"),
            **leaves(plans["method_plans"].get(method, {}), f"method_plans.{method}")}


def calibrate(fold_dir: Path, device: str, ranks: Ranks = SINGLE) -> dict:
    """Healthy-only calibration of a trained fold (calibration/calibrate.py), split over the ranks."""
    logger.info("calibrating %s on its healthy validation cases", fold_dir)
    return calibrate_model_folder(fold_dir, device, ranks=ranks)


def _train_stages(spec, plans: Plans, configuration: str, fold, fold_dir: Path, dataset_dir: Path, device,
                  ranks: Ranks, continue_training: bool, epochs, iterations, num_workers: int, compile: bool,
                  num_threads: Optional[int], verify_replicas: bool, labelled=None) -> None:
    config = plans.configuration(configuration)
    data_folder = dataset_dir / config.data_identifier
    cases = list_preprocessed_cases(data_folder) if data_folder.is_dir() else []
    if len(cases) < 2:
        raise ValueError(f"{data_folder}: {len(cases)} preprocessed case(s) for configuration '{configuration}'"
                         f"; training needs at least 2 (run itermask_plan_and_preprocess -c {configuration})")
    # prediction preprocesses new scans with this plan: the training arrays must have been made with it too
    check_arrays_match_plan(data_folder, plans, configuration, dataset_dir.name)
    if ranks.is_main:   # splits.json is created once; the other ranks read it after the barrier
        load_or_create_splits(dataset_dir, cases, plans.training.num_folds, plans.training.seed)
    barrier(ranks)
    splits = load_or_create_splits(dataset_dir, cases, plans.training.num_folds, plans.training.seed)
    train_cases, val_cases = fold_cases(splits, fold, cases)
    if ranks.is_main:
        fold_dir.mkdir(parents=True, exist_ok=True)
        plans.save(fold_dir / PLANS_COPY)
        write_json(fold_dir / "splits.json", {"fold": str(fold), "train": train_cases, "val": val_cases})
        if (dataset_dir / FINGERPRINT_FILE).is_file():   # the training range, for out-of-distribution checks
            shutil.copyfile(dataset_dir / FINGERPRINT_FILE, fold_dir / FINGERPRINT_FILE)
        write_training_data_note(fold_dir, spec.training_data_note(plans, configuration), labelled)
    barrier(ranks)
    from itermask_auto.training.trainer import Trainer  # torch-heavy: import only when training
    with file_logging(fold_dir, enabled=ranks.is_main):
        threads = set_torch_threads(device, num_workers, num_threads)
        logger.info("training %s -> %s (device %s, %d torch threads, %d data workers%s)", dataset_dir.name,
                    fold_dir, device, threads, num_workers,
                    f", {ranks.world_size} ranks" if ranks.distributed else "")
        frozen = {}
        for stage in spec.stages(plans, configuration):
            stage_dir = fold_dir / stage.folder
            if ranks.is_main:
                stage_dir.mkdir(parents=True, exist_ok=True)
            trainer = Trainer(plans, configuration, spec, fold, stage_dir, dataset_dir.name, data_folder,
                              train_cases, val_cases, device, num_epochs=epochs, iterations=iterations,
                              num_workers=num_workers, compile=compile, stage=stage,
                              frozen={k: frozen[k] for k in stage.uses}, ranks=ranks,
                              verify_replicas=verify_replicas, labelled=labelled)
            trainer.run(continue_training=continue_training)
            frozen[stage.name] = trainer.network.eval().requires_grad_(False)
            barrier(ranks)


def write_training_data_note(fold_dir: Path, note: dict, labelled) -> None:
    """fold_N/training_data.json (model card): the method's note and the --labelled dataset with its case ids;
    removed when there is nothing to say (a fold retrained without them)."""
    note = dict(note)
    if labelled is not None:
        note.update(labelled_dataset=labelled.dataset, labelled_cases=len(labelled.case_ids),
                    labelled_case_ids=labelled.case_ids,
                    labelled_source=f"imagesTr + labelsTr of {labelled.dataset}, preprocessed with this plan")
    path = fold_dir / TRAINING_DATA_NOTE
    if note:
        write_json(path, note)
    elif path.is_file():
        path.unlink()
