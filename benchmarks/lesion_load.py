"""IterMask3D's final mask against lesion load, under plan variants (issue 17: does the default follow the lesions?).

Trains (once, cached in --work_dir) an itermask3d model on healthy phantoms with the cpu profile, writes test
phantoms whose lesions cover about 0, 0.5, 2 and 8 % of the brain (two seeds each), then for each variant copies
the fold, edits the plan's inference/calibration keys, calibrates on the fold's healthy validation phantoms (no
label is read) and predicts the test phantoms. Prints per variant: calibrated γ and rim margin, the healthy
validation final-mask fraction, and per case the segmented fraction of the brain and its Dice against the label
(labels are read only for these printed scores).

    python benchmarks/lesion_load.py --work_dir /tmp/lesion_load [--epochs 8] [--iterations 25] [--n_train 10]
                                     [--alpha A]
                                     [--variants planned reference itermask2_mode itermask2_final
                                                 itermask2_final_scaled itermask2_final_hf]

Variants: `planned` = the keys the planner writes today; `reference` = the keys of plans made before issue 17
(knee on the absolute error, γ aimed at the first-pass quantile, no rim margin); `itermask2_mode` = the planned
keys with one τ calibrated on the healthy validation first-pass errors ((1 − α) quantile) instead of the
per-subject knee; `itermask2_final` = the same with τ searched so that the healthy validation FINAL masks cover α
(`calibration.itermask2_tau_target final_mask_fraction`); `itermask2_final_scaled` = that τ in units of each
case's median whole-brain-masked error (`inference.tau_scale median_error`); `itermask2_final_hf` = in units of
its high-pass first-pass error (`inference.tau_scale hf_median_error`, the demo's unit).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZE, SPACING = (64, 76, 64), (2.0, 2.0, 2.0)
LOADS, SEEDS = (0.0, 0.005, 0.02, 0.08), (801, 802)
REFERENCE_KEYS = {"inference.knee_scale": "absolute", "inference.fit_max_threshold": 10.0,
                  "calibration.gamma_target": "first_pass_quantile",
                  "calibration.brain_erosion_candidates_mm": [], "inference.brain_erosion_mm": 0.0}
EDITED_KEYS = tuple(REFERENCE_KEYS)
VARIANTS = {"planned": "planned", "reference": REFERENCE_KEYS, "itermask2_mode": "planned+itermask2",
            "itermask2_final": "planned+itermask2_final", "itermask2_final_scaled": "planned+itermask2_final_scaled",
            "itermask2_final_hf": "planned+itermask2_final_hf"}
TAU_UNITS = {"planned+itermask2_final": "absolute", "planned+itermask2_final_scaled": "median_error",
             "planned+itermask2_final_hf": "hf_median_error"}


def planned_keys(fold: Path) -> dict:
    """The keys the planner writes today for this dataset (the fold's own plan may be older)."""
    import json

    from itermask_auto.experiment_planning.planner import plan_experiment
    from itermask_auto.utilities.atomic import read_json
    old = read_json(fold / "plans.json")
    dataset_json = json.loads(next(Path(os.environ["ITERMASK_raw"]).glob(f"{old['dataset_name']}/dataset.json"))
                              .read_text())
    new = plan_experiment(read_json(fold / "dataset_fingerprint.json"), dataset_json, old["dataset_name"],
                          profile=old["profile"]).to_dict()
    return {k: new[k.split(".")[0]][k.split(".")[1]] for k in EDITED_KEYS}


def set_roots(work: Path) -> None:
    for name in ("raw", "preprocessed", "results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        os.environ[f"ITERMASK_{name}"] = str(work / name)


def trained_fold(work: Path, epochs: int, iterations: int, n_train: int = 10) -> Path:
    from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
    from itermask_auto.experiment_planning.api import plan_and_preprocess
    from itermask_auto.training.api import run_training
    found = sorted((work / "results").glob("*/itermask3d__*/fold_0/checkpoint_final.pth"))
    if found:
        have = len(list((work / "raw").glob("*/imagesTr/*_0000.nii.gz")))
        if have != n_train:
            raise SystemExit(f"{work}: its cached model came from {have} healthy phantoms (--n_train {have}), not "
                             f"{n_train}: use another --work_dir")
        return found[0].parent
    write_phantom_dataset(work / "raw", dataset_id=990, n_train=n_train, n_test_healthy=0, n_test_lesion=0,
                          size=SIZE, spacing=SPACING, with_masks=True)
    plan_and_preprocess(990, configurations=("3d",), num_processes=1, profile="cpu")
    return Path(run_training(990, "3d", 0, epochs=epochs, iterations=iterations, run_calibration=False))


def phantom_with_load(seed: int, load: float):
    """A phantom whose lesions cover about `load` of the brain: lesion count and radius searched on a grid."""
    import SimpleITK as sitk

    from itermask_auto.dataset_conversion.phantom import _fit_scale, make_phantom
    scale = _fit_scale(SIZE, SPACING, False)
    if load == 0:
        return make_phantom(seed, size=SIZE, spacing=SPACING, skull=False, n_lesions=0, anatomy_scale=scale)
    best = None
    for n in (1, 2, 3):
        for r in np.linspace(3, 26, 47):
            ph = make_phantom(seed, size=SIZE, spacing=SPACING, skull=False, n_lesions=n, anatomy_scale=scale,
                              lesion_radius_mm=(r, r * 1.1))
            got = (sitk.GetArrayFromImage(ph.label) > 0).sum() / (sitk.GetArrayFromImage(ph.brain_mask) > 0).sum()
            if best is None or abs(np.log(max(got, 1e-6) / load)) < abs(np.log(max(best[0], 1e-6) / load)):
                best = (got, ph)
            if got > 1.5 * load:
                break
    return best[1]


def test_cases(folder: Path) -> list[str]:
    import SimpleITK as sitk
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for seed in SEEDS:
        for load in LOADS:
            name = f"load{load * 100:g}_s{seed}"
            if not (folder / f"{name}_label.nii.gz").exists():
                ph = phantom_with_load(seed, load)
                sitk.WriteImage(ph.image, str(folder / f"{name}_0000.nii.gz"))
                sitk.WriteImage(ph.brain_mask, str(folder / f"{name}_mask.nii.gz"))
                sitk.WriteImage(ph.label, str(folder / f"{name}_label.nii.gz"))
            names.append(name)
    return names


def prepare_cases(fold: Path, cases: Path, names: list[str]) -> dict:
    """case -> (data, hf, brain, label) on the preprocessed grid, once for every variant: the edited keys are
    inference and calibration keys, which preprocessing does not read."""
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    plans = Plans.load(fold / "plans.json")
    prepared = {}
    for case in names:
        data, hf, brain = preprocess_case([cases / f"{case}_0000.nii.gz"], plans, "3d",
                                          cases / f"{case}_mask.nii.gz")[:3]
        prepared[case] = (data, hf, brain, label_on_grid(cases, case, plans, brain))
    return prepared


def run_variant(name: str, edits: dict, fold: Path, prepared: dict) -> None:
    from itermask_auto.calibration.calibrate import calibrate_model_folder
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.inference.predictor import Predictor
    vdir = fold.parent.parent / f"variant_{name}" / "fold_0"
    shutil.rmtree(vdir.parent, ignore_errors=True)
    shutil.copytree(fold, vdir)
    plan = Plans.load(vdir / "plans.json").to_dict()
    for key, value in edits.items():
        section, field = key.split(".")
        plan[section][field] = value
    Plans.from_dict(plan).save(vdir / "plans.json")
    cal = calibrate_model_folder(vdir)
    predictor = Predictor.from_model_folder(vdir)
    print(f"== {name}: alpha {cal.get('alpha')}, gamma {cal.get('gamma')}, rim margin {cal.get('brain_erosion_mm')} "
          f"mm, healthy validation "
          f"final mask {100 * cal.get('healthy_final_mask_fraction', float('nan')):.2f} % of the brain", flush=True)
    dice = []
    for case, (data, hf, brain, label) in prepared.items():
        p = predictor.predict_arrays(data, hf, brain)
        seg = p.segmentation > 0
        d = 2 * (seg & label).sum() / max(seg.sum() + label.sum(), 1)
        if label.any():
            dice.append(d)
        print(f"  {case}: segmented {100 * seg.sum() / brain.sum():.2f} % of the brain, lesion "
              f"{100 * label.sum() / brain.sum():.2f} %, Dice {d:.2f}, tau {p.summary.get('tau')}", flush=True)
    print(f"  Dice over the lesion cases: mean {np.mean(dice):.3f}, min {np.min(dice):.3f}", flush=True)


def label_on_grid(cases: Path, case: str, plans, brain: np.ndarray) -> np.ndarray:
    """The label through the same preprocessing as its image (as a one-channel image: normalised, so it is split
    half-way between its values in the brain)."""
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    if case.startswith("load0_"):
        return np.zeros_like(brain, dtype=bool)
    label, _, label_brain = preprocess_case([cases / f"{case}_label.nii.gz"], plans, "3d",
                                            cases / f"{case}_mask.nii.gz")[:3]
    values = label[0][label_brain]
    return (label[0] > (values.max() + values.min()) / 2) & brain


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/lesion_load"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--iterations", type=int, default=25)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--alpha", type=float, default=None,
                   help="healthy voxel FPR for every variant (calibration.alpha; default: the plan's). A lesion of "
                        "L of the brain can reach Dice 0.6 only if the healthy tissue marked beside it is <= 4/3 L")
    p.add_argument("--n_train", type=int, default=10,
                   help="healthy training phantoms (fold 0 keeps a fifth of them for validation: the calibration set)")
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    work = args.work_dir.resolve()
    set_roots(work)
    fold = trained_fold(work, args.epochs, args.iterations, args.n_train)
    prepared = prepare_cases(fold, work / "cases", test_cases(work / "cases"))
    for name in args.variants:
        edits = VARIANTS[name]
        if edits == "planned":
            edits = planned_keys(fold)
        elif edits == "planned+itermask2":
            edits = {**planned_keys(fold), "inference.mode": "itermask2"}
        elif edits in TAU_UNITS:
            edits = {**planned_keys(fold), "inference.mode": "itermask2",
                     "calibration.itermask2_tau_target": "final_mask_fraction", "inference.tau_scale": TAU_UNITS[edits]}
        if args.alpha is not None:
            edits = {**edits, "calibration.alpha": args.alpha}
        run_variant(name, edits, fold, prepared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
