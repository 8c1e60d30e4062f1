"""`plan_and_preprocess`: fingerprint → plan → preprocess, into a staging folder renamed only on success."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from itermask_auto.experiment_planning.fingerprint import extract_fingerprint
from itermask_auto.experiment_planning.planner import check_timed_methods, plan_experiment
from itermask_auto.experiment_planning.plans import FINGERPRINT_FILE, PLANS_FILE, Plans
from itermask_auto.experiment_planning.throughput import (measure_seconds_per_iteration, measure_stage_seconds,
                                                          throughput_mode)
from itermask_auto.imageio.errors import InputError
from itermask_auto.paths import preprocessed_root, raw_root
from itermask_auto.preprocessing.preprocessor import preprocess_case
from itermask_auto.preprocessing.provenance import (PREPROCESSING_INPUTS_FILE, preprocessing_inputs,
                                                    recorded_inputs)
from itermask_auto.preprocessing.storage import list_preprocessed_cases, save_case
from itermask_auto.utilities.atomic import read_json, write_json
from itermask_auto.utilities.dataset import find_dataset, list_cases, load_dataset_json
from itermask_auto.utilities.parallel import run_parallel

logger = logging.getLogger(__name__)

KEPT_ACROSS_RUNS = ("splits.json",)  # trained models refer to it; --clean drops it


def existing_plan(final: Path, dataset_name: str) -> Plans:
    """The plan already in the preprocessed folder, for --use_existing_plan (a plan edited by hand)."""
    path = final / PLANS_FILE
    if not path.is_file():
        raise InputError(path, "no plan to use: run itermask_plan_and_preprocess without --use_existing_plan first")
    plans = Plans.load(path)
    if plans.dataset_name != dataset_name:
        raise InputError(path, f"plan of dataset {plans.dataset_name}, not {dataset_name}")
    return plans


def clear_leftovers_of_killed_runs(final: Path) -> None:
    """A killed run leaves `.NAME.partial-PID` (unfinished output: deleted) and, if killed between its two renames,
    `.NAME.replaced-PID` (the previous dataset: put back when nothing took its place, else deleted)."""
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        logger.info("removing unfinished output of an earlier run: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    for old in sorted(final.parent.glob(f".{final.name}.replaced-*")):
        if not final.exists():
            logger.warning("restoring %s from %s (a run was killed while replacing it)", final, old.name)
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)


def earlier_plan(final: Path) -> Optional[Plans]:
    """The plan already in the preprocessed folder; None where there is none or it cannot be read."""
    try:
        return Plans.load(final / PLANS_FILE)
    except Exception:  # no or unreadable old plan: nothing to compare with
        return None


def unchanged_data_folders(old: Optional[Plans], final: Path, staging: Path, plans: Plans, preprocessed_now: set,
                           cases: Sequence[str]) -> List[str]:
    """Data folders of `final` to carry over: configurations not preprocessed in this run (all of them with
    --plan_only) that the new plan preprocesses exactly as the folder's arrays were made (its recorded
    preprocessing_inputs.json, else the old plan's), for the same cases and fingerprint (a re-plan must not silently
    delete valid data). The others are reported as dropped."""
    kept: List[str] = []
    try:
        same_fingerprint = read_json(final / FINGERPRINT_FILE) == read_json(staging / FINGERPRINT_FILE)
    except Exception:
        same_fingerprint = False
    if old is None:   # nothing can be shown to be unchanged
        return kept
    for name in sorted(set(old.configurations) & set(plans.configurations) - preprocessed_now):
        folder = final / old.configuration(name).data_identifier
        if not folder.is_dir() or (staging / folder.name).exists():   # absent, or already made by this run
            continue
        same_cases = list_preprocessed_cases(folder) == sorted(cases)
        made_with = recorded_inputs(folder) or preprocessing_inputs(old, name)   # folders made before the record
        if same_fingerprint and same_cases and made_with == preprocessing_inputs(plans, name):
            kept.append(folder.name)
            logger.info("kept the preprocessed %s data (%s): the new plan preprocesses it the same way", name,
                        folder.name)
        else:
            logger.warning("dropped the preprocessed %s data (%s): the new plan preprocesses it differently or the "
                           "cases or their fingerprint changed; run itermask_plan_and_preprocess -c %s to make it "
                           "again",
                           name, folder.name, name)
    return kept


def collect_training_cases(raw_folder: Path) -> tuple[Dict, Dict[str, List[Path]], Dict[str, Path]]:
    """dataset.json, the healthy training cases' channel files, and their optional brain masks."""
    meta = load_dataset_json(raw_folder)
    ending = meta["file_ending"]
    cases = list_cases(raw_folder / "imagesTr", len(meta["channel_names"]), ending)
    if not cases:
        raise InputError(raw_folder / "imagesTr", "no training cases found")
    declared = meta.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        raise InputError(raw_folder / "dataset.json",
                         f"numTraining is {declared} but imagesTr holds {len(cases)} cases")
    masks: Dict[str, Path] = {}
    mask_dir = raw_folder / "masksTr"
    if mask_dir.is_dir():
        for p in sorted(mask_dir.iterdir()):
            if p.name.startswith("."):
                continue
            case = p.name[: -len(ending)] if p.name.endswith(ending) else None
            if case not in cases:
                raise InputError(p, f"brain mask has no matching case in imagesTr (expected CASE{ending})")
            masks[case] = p
    return meta, cases, masks


def _preprocess_one(case_id: str, channel_paths: List[Path], mask_path: Path, plans_file: Path,
                    configuration: str, out_dir: Path) -> List[int]:
    plans = Plans.load(plans_file)
    data, hf, brain, properties = preprocess_case(channel_paths, plans, configuration, mask_path=mask_path)
    properties["case_id"] = case_id
    save_case(out_dir, case_id, data, hf, brain, properties)
    return list(data.shape[1:])


def planned_epochs(plans) -> Dict[str, int]:
    """Every epoch count of a plan by name: the U-Net methods' `training`, and each method's own (sadm's stage
    recipes, constrained's num_epochs, mmccd's forward/backward epochs, itermask2's per-configuration recipes)."""
    out = {"training": int(plans.training.num_epochs)}
    for name, planned in sorted(plans.method_plans.items()):
        for key, value in planned.items():
            if key.endswith("epochs") and isinstance(value, int):
                out[f"{name}.{key}"] = value
            elif isinstance(value, dict) and isinstance(value.get("num_epochs"), int):
                out[f"{name}.{key}.num_epochs"] = value["num_epochs"]
    return out


def epochs_moved(old, new) -> List[str]:
    """'NAME from X to Y' for each epoch count that differs between two plans; a count only one of them plans (e.g.
    itermask2's recipes, which the reference rule leaves to `training`) is named as new or no longer planned."""
    before, after = planned_epochs(old), planned_epochs(new)
    return ([f"{k} from {before[k]} to {after[k]}" for k in after if k in before and before[k] != after[k]]
            + [f"{k} {after[k]} (new)" for k in after if k not in before]
            + [f"{k} no longer planned (was {before[k]})" for k in before if k not in after])


def plan_and_preprocess(dataset: str | int, configurations: Sequence[str] = ("3d", "2d"), num_processes: int = 2,
                        profile: str = "cpu", gpu_memory_gb: Optional[float] = None, clean: bool = False,
                        verify_dataset_integrity: bool = False, plan_only: bool = False,
                        throughput: Optional[str] = None, timed_methods: Optional[Sequence[str]] = None,
                        use_existing_plan: bool = False) -> Path:
    """Run the whole first stage for one dataset; return the preprocessed dataset folder. throughput (cpu profile):
    "measure" times the planned network's step (and the own stages of sadm, constrained, mmccd, itermask2, or of
    those among timed_methods) here to plan the epochs, "reference" plans for the project's reference CPU; None
    reads ITERMASK_PLAN_THROUGHPUT, else "measure". use_existing_plan: preprocess with the folder's
    itermask_plans.json as it is (edited by hand) instead of planning again."""
    measure = throughput_mode(throughput) == "measure" and profile == "cpu"
    check_timed_methods(timed_methods)   # before minutes of fingerprinting
    timer, stage_timer = (measure_seconds_per_iteration, measure_stage_seconds) if measure else (None, None)
    raw_folder = find_dataset(raw_root(), dataset)
    meta, cases, masks = collect_training_cases(raw_folder)
    logger.info("%s: %d training cases, %d channel(s) %s, %d given brain masks", raw_folder.name, len(cases),
                len(meta["channel_names"]), list(meta["channel_names"].values()), len(masks))
    if verify_dataset_integrity:
        from itermask_auto.experiment_planning.integrity import verify_integrity
        verify_integrity(raw_folder, meta, cases, masks, num_processes)

    final = preprocessed_root() / raw_folder.name
    clear_leftovers_of_killed_runs(final)
    staging = preprocessed_root() / f".{raw_folder.name}.partial-{os.getpid()}"
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(raw_folder / "dataset.json", staging / "dataset.json")
        if final.is_dir() and not clean:
            for name in KEPT_ACROSS_RUNS:
                if (final / name).is_file():
                    shutil.copyfile(final / name, staging / name)
        fingerprint = extract_fingerprint(cases, masks, staging / "brain_masks", num_processes)
        write_json(staging / FINGERPRINT_FILE, fingerprint)
        if use_existing_plan:
            plans = existing_plan(final, raw_folder.name)
            logger.info("preprocessing with the existing plan %s (not re-planned)", final / PLANS_FILE)
        else:
            plans = plan_experiment(fingerprint, meta, raw_folder.name, profile=profile, gpu_memory_gb=gpu_memory_gb,
                                    step_timer=timer, stage_timer=stage_timer, timed_methods=timed_methods)
        plans.save(staging / PLANS_FILE)
        log_plan_summary(plans)
        old = earlier_plan(final)
        moved = epochs_moved(old, plans) if old is not None and not use_existing_plan else []
        if moved:   # a timed step varies from machine to machine and run to run
            why = "the training steps timed on this machine" if timer else "the reference rule"
            logger.warning("the planned epochs changed: %s (%s; --use_existing_plan keeps the earlier plan)",
                           "; ".join(moved), why)
        if not plan_only:
            for name in configurations:
                config = plans.configuration(name)
                out_dir = staging / config.data_identifier
                jobs = [(c, cases[c], staging / "brain_masks" / f"{c}.nii.gz", staging / PLANS_FILE, name, out_dir)
                        for c in sorted(cases)]
                run_parallel(_preprocess_one, jobs, num_processes, desc=f"preprocess {name}")
                write_json(out_dir / PREPROCESSING_INPUTS_FILE, preprocessing_inputs(plans, name))
        kept: List[str] = []
        if final.is_dir() and not clean:
            done = set() if plan_only else set(configurations)
            kept = unchanged_data_folders(old, final, staging, plans, done, list(cases))
        # swap by renames; valid arrays move from the old folder into the new one only once it is in place, so no
        # failure can leave them in the staging folder that is cleaned up below
        aside = final.with_name(f".{final.name}.replaced-{os.getpid()}")
        if final.exists():
            os.replace(final, aside)
        try:
            os.replace(staging, final)
        except BaseException:
            if aside.exists():
                os.replace(aside, final)
            raise
        for name in kept:
            os.replace(aside / name, final / name)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("preprocessed dataset written to %s", final)
    return final


def log_plan_summary(plans: Plans) -> None:
    for name, c in plans.configurations.items():
        logger.info("plan %s%s: spacing %s, patch %s, batch %d, features %s, ~%.2f GB activations", name,
                    " (default)" if name == plans.default_configuration else "", [round(s, 3) for s in c.spacing],
                    c.patch_size, c.batch_size, c.network.features_per_stage, c.estimated_memory_gb)
    t = plans.training
    logger.info("training: %d epochs × %d iterations, lr %g (%s); hf radius %.4f cycles/mm; alpha %g",
                t.num_epochs, t.iterations_per_epoch, t.initial_lr, t.lr_schedule, plans.hf_radius_cycles_per_mm,
                plans.calibration.alpha)
    for name, planned in sorted(plans.method_plans.items()):
        if planned.get("usable") is False:   # a method that cannot run on this dataset says why, at planning (a
            # line, not a warning: the dataset may never need it; training it is refused with the same reason)
            logger.info("method %s not planned: %s", name, planned.get("reason", "not usable on this dataset"))
