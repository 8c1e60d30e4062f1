"""BraTS healthy-slice benchmark: the 2-D papers' protocol (train on the tumour-free axial slices of training
patients, test on held-out patients) for every 2-D method; the second table of docs/benchmarks.md.

    python benchmarks/brats_slices.py [--methods itermask2 ae oneshot sadm constrained mmccd] [--folds 0 1 2]
                                      [--epochs N] [--iterations N] [--device cpu|cuda] [--profile cpu|gpu]
                                      [--work_dir work_data/brats_slices] [--smoke]

1. Convert ../shared/data/brats2015_flair_t1c (dataset_conversion/convert_brats_slabs.py) into Dataset041 (FLAIR)
   and Dataset042 (FLAIR + T1c): imagesTr = the tumour-free axial slabs of all 6 patients (the labels only chose
   the slices), imagesTs = whole volumes with whole-tumour labels; patient-level folds (test 2 patients, healthy
   validation 1 patient, training 3 patients), installed as the preprocessed splits.json.
2. Plan and preprocess the 2d configuration. The planner sizes epochs for the default configuration (3d on these
   isotropic data); this protocol trains 2d, so the epochs are re-planned for the 2d configuration with the
   planner's own rule (plan_training: the same 75-min CPU budget), recorded in the plan's rules.
3. A method runs on FLAIR if it accepts a single sequence, else on FLAIR + T1c (mmccd); a method that is not
   registered, or accepts neither, is skipped with one line.
4. Per fold: train (or reuse), calibrate on the fold's healthy validation slabs, predict the fold's test patients
   and, as healthy data, their tumour-free slabs (patients the model never saw). A reused fold keeps the training
   time and s/volume measured when it was trained and predicted (WORK_DIR/brats_slices_results.json).
5. Evaluate all test patients of the folds run together (each predicted by the model of the fold that held it out,
   at that fold's healthy-calibrated threshold; never the labels): Dice, AUPRC, AUROC of the pooled in-brain voxels,
   voxel FPR on the test patients' tumour-free slabs against α, s/volume; table between the brats_slices markers.
   The map's Dice and slab FPR at the healthy α cut (the table's α-map columns) need one model, so they are
   filled for single-fold runs only ("—" when several folds are evaluated together).
--smoke: phantom patients instead of BraTS, tiny networks and schedules; table into WORK_DIR/benchmarks_smoke.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCHMARKS))
import real_data  # noqa: E402  (its helpers: roots, formatting, the docs section writer)
from itermask_auto.utilities.atomic import read_json, write_json  # noqa: E402

logger = logging.getLogger("brats_slices")
BEGIN, END = "<!-- brats_slices:begin -->", "<!-- brats_slices:end -->"
METHODS = ("itermask2", "ae", "oneshot", "sadm", "constrained", "mmccd")
FLAIR, PAIR = 41, 42
SMOKE_METHOD_PLANS = {"mmccd": {"network": {"channels": [8, 8, 16], "attention_levels": [False, False, True],
                                            "num_res_blocks": 1, "norm_num_groups": 8},
                                "stripe_positions": 2, "ddim_steps": 1, "mask_batch": 64}}


def prepare(args, raw: Path) -> Dict[int, Path]:
    from itermask_auto.dataset_conversion import convert_brats_slabs
    from itermask_auto.dataset_conversion.brats_like_phantoms import write_brats_like_phantoms
    source = real_data.SHARED / "brats2015_flair_t1c"
    if args.smoke:
        source = args.work_dir / "brats_like_phantoms"
        if not source.is_dir():
            write_brats_like_phantoms(source, n_patients=6, seed=0)
    elif not source.is_dir():
        raise SystemExit(f"shared data not found at {source} (set ITERMASK_SHARED_DATA)")
    out = {}
    for dataset_id in (FLAIR, PAIR):
        found = [p for p in raw.glob(f"Dataset{dataset_id:03d}_*") if (p / "folds.json").is_file()]
        out[dataset_id] = found[0] if found else convert_brats_slabs.convert(source, raw, dataset_id)
    return out


def preprocess(args, dataset_id: int, raw_folder: Path):
    """Plan and preprocess 2d (kept when there), install the patient-level splits, re-plan epochs for 2d."""
    from itermask_auto.dataset_conversion.convert_brats_slabs import install_splits
    from itermask_auto.experiment_planning.api import plan_and_preprocess
    from itermask_auto.experiment_planning.planner import plan_training
    from itermask_auto.experiment_planning.plans import PLANS_FILE, Plans
    from itermask_auto.paths import preprocessed_root
    from itermask_auto.preprocessing.storage import list_preprocessed_cases
    folder = preprocessed_root() / raw_folder.name
    plans = Plans.load(folder / PLANS_FILE) if (folder / PLANS_FILE).is_file() else None
    if plans is None or len(list_preprocessed_cases(folder / plans.configuration("2d").data_identifier)) < 2:
        plan_and_preprocess(dataset_id, ("2d",), num_processes=args.np, profile=args.profile)
        plans = Plans.load(folder / PLANS_FILE)
    install_splits(raw_folder, preprocessed_root())
    if plans.default_configuration != "2d" and "2d epochs" not in plans.rules.get("training", ""):
        training, rule = plan_training(plans.profile, plans.configuration("2d"))
        plans.training.num_epochs = training.num_epochs
        plans.rules["training"] = (rule + " (2d epochs: re-planned by benchmarks/brats_slices.py for the "
                                          "configuration this protocol trains)")
    # the protocol trains every U-Net method these epochs (its tables so far did): not itermask2's own budget rule
    plans.method_plans.pop("itermask2", None)
    if args.smoke:
        for name, keys in SMOKE_METHOD_PLANS.items():
            if name in plans.method_plans and plans.method_plans[name].get("usable", True):
                plans.method_plans[name].update(keys)
    plans.save(folder / PLANS_FILE)
    return plans


def choose_dataset(method: str, plans: Dict[int, object]) -> Optional[int]:
    """FLAIR when the method accepts one sequence, else FLAIR + T1c; None (with a line) when neither."""
    from itermask_auto.methods.registry import METHODS as REGISTERED
    if method not in REGISTERED:
        logger.warning("%s: not a registered method in this checkout - skipped", method)
        return None
    reasons = []
    for dataset_id in (FLAIR, PAIR):
        try:
            REGISTERED[method].check(plans[dataset_id], "2d")
            return dataset_id
        except ValueError as e:
            reasons.append(str(e))
    logger.warning("%s: skipped (%s)", method, "; ".join(reasons))
    return None


def links(folder: Path, files: List[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    return folder


def train(args, dataset_id: int, method: str, fold: int) -> tuple[Path, float]:
    """(fold dir, training + calibration seconds; 0 when a calibrated model with the same epochs is reused)."""
    import torch
    from itermask_auto.training.api import run_training
    from itermask_auto.training.checkpoint import model_folder
    from itermask_auto.utilities.dataset import find_dataset
    from itermask_auto.paths import preprocessed_root
    from itermask_auto.experiment_planning.plans import PLANS_FILE, Plans
    ds = find_dataset(preprocessed_root(), dataset_id)
    plans = Plans.load(ds / PLANS_FILE)
    fold_dir = model_folder(ds.name, method, plans.plans_name, "2d", fold)
    final = fold_dir / "checkpoint_final.pth"
    if final.is_file() and (fold_dir / "calibration.json").is_file():
        stored = torch.load(final, map_location="cpu", weights_only=True)["num_epochs"]
        if args.epochs is None or stored == args.epochs:
            return fold_dir, 0.0
    start = time.perf_counter()
    run_training(dataset_id, "2d", fold, method, args.device, continue_training=True, epochs=args.epochs,
                 iterations=args.iterations, num_threads=args.threads, num_workers=args.workers)
    return fold_dir, time.perf_counter() - start


def predict(args, fold_dir: Path, raw_folder: Path, fold: Dict, out: Path, fresh: bool) -> Dict[str, Dict]:
    """The fold's test volumes into out/test and their tumour-free slabs into out/slabs (kept from an earlier run
    unless the model was trained now); timing per set."""
    from itermask_auto.inference.predict_folder import predict_folder
    meta = read_json(raw_folder / "dataset.json")
    n_ch = len(meta["channel_names"])
    cases = {"test": list(fold["test_patients"]),
             "slabs": [s["case"] for p in fold["test_patients"] for s in meta["slabs"][p]]}
    sources = {"test": ("imagesTs", "masksTs"), "slabs": ("imagesTr", "masksTr")}
    timing = {}
    for name, ids in cases.items():
        images, masks = sources[name]
        folder = links(args.work_dir / "inputs" / raw_folder.name / fold_dir.name / name,
                       [raw_folder / images / f"{c}_{ch:04d}.nii.gz" for c in ids for ch in range(n_ch)])
        if fresh:
            for c in ids:
                for f in (out / name).glob(f"{c}[_.]*"):
                    f.unlink()
        before = sum((out / name / f"{c}_anomaly.nii.gz").is_file() for c in ids)
        start = time.perf_counter()
        res = predict_folder(folder, out / name, device=args.device, model_dir=fold_dir, continue_prediction=True,
                             masks_dir=raw_folder / masks, progress=False)
        done = [c for c in ids if c in res["cases"]]
        timing[name] = {"wall_s": time.perf_counter() - start, "predicted_now": len(done) - before,
                        "failures": res["failures"],
                        "passes": float(np.mean([res["cases"][c]["network_passes"] for c in done])) if done else None}
    return timing


def evaluate(args, raw_folder: Path, out: Path) -> Dict[str, float]:
    from itermask_auto.evaluation.api import evaluate_folder
    masks = links(args.work_dir / "eval_masks" / raw_folder.name, sorted((raw_folder / "masksTs").glob("*.nii.gz"))
                  + sorted((raw_folder / "masksTr").glob("*.nii.gz")))
    s = evaluate_folder(out / "test", raw_folder / "labelsTs", healthy_dir=out / "slabs", brain_dir=masks,
                        report=False)
    at_alpha = next((v for k, v in (s.get("dice_at_healthy_thresholds") or {}).items() if k.startswith("alpha_")), {})
    return {"dice": s["segmentation"]["pooled_dice"], "auprc": s["voxel_ranking"]["pooled_auprc"],
            "auroc": s["voxel_ranking"]["pooled_auroc"], "slab_fpr": s["healthy_voxel_fpr"]["voxel_fpr"],
            "alpha": s["healthy_voxel_fpr"]["alpha"], "n": s["n_cases"], "n_slabs": s["n_healthy_cases"],
            "dice_alpha": at_alpha.get("pooled_dice"), "slab_fpr_alpha": at_alpha.get("healthy_voxel_fpr")}


def carry_measurements(previous: Dict, method: str, fold: int, train_s: float,
                       timing: Dict) -> tuple[float, Dict]:
    """A fold reused from an earlier run (brats_slices_results.json) keeps the training time and the test-volume
    timing measured when it was trained and predicted."""
    earlier, key = previous.get(method) or {}, str(fold)
    if not train_s and (earlier.get("train_s") or {}).get(key):
        train_s = float(earlier["train_s"][key])
    old_test = ((earlier.get("timing") or {}).get(key) or {}).get("test") or {}
    if not timing["test"]["predicted_now"] and old_test.get("predicted_now"):
        timing = {**timing, "test": old_test}
    return train_s, timing


def table(args, results: Dict, plans: Dict[int, object]) -> str:
    names = {FLAIR: "FLAIR", PAIR: "FLAIR + T1c"}
    recipe = "as planned (2d epochs re-planned, see step 2)"
    if args.epochs or args.iterations:
        recipe = f"**NOT the planned recipe: --epochs {args.epochs} --iterations {args.iterations}**"
    lines = [BEGIN, "## BraTS healthy-slice benchmark (benchmarks/brats_slices.py)", "",
             f"Command: `{' '.join(['python', 'benchmarks/brats_slices.py'] + sys.argv[1:])}`  ",
             f"Machine: {real_data.machine()}  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M')}; folds {args.folds} (patient-level: each tests 2 patients, "
             f"calibrates on 1 patient's tumour-free slabs, trains on 3 patients' slabs); training {recipe}; device "
             f"{args.device}, plan profile {args.profile}"
             f"{'; **SMOKE run on phantoms, not real data**' if args.smoke else ''}.", "",
             "BraTS 2015 (6 patients) at 2 mm; training data = tumour-free axial slabs (the labels chose the slices, "
             "nothing else). Dice = CASE_seg, the method's segmentation rule (the map above the threshold calibrated "
             "on healthy validation slabs at α, or the method's own label-free rule: itermask2's final mask, "
             "constrained's healthy-percentile threshold, sadm's); Dice α-map = the map above the healthy α voxel "
             "threshold; both chosen without the labels. AUPRC/AUROC of the pooled in-brain voxels of the test "
             "volumes (whole tumour); slab FPR = marked fraction of the test patients' tumour-free slabs (CASE_seg; "
             "α-map), vs α; s/volume = wall time of itermask_predict per test volume (preprocessing + inference + "
             "export); evaluations = network passes per volume (mmccd: per slice). A fold reused from an earlier run "
             "in the same work folder keeps the training time and s/volume measured then.", "",
             "| method | sequences | folds | test volumes | Dice | Dice α-map | AUPRC | AUROC | slab voxel FPR: "
             "CASE_seg; α-map (α) | s/volume | passes | training / fold |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        m, t = r["metrics"], r["timing"]
        n_now = sum(x["test"]["predicted_now"] for x in t.values())
        wall = sum(x["test"]["wall_s"] for x in t.values()) / n_now if n_now else None
        passes = float(np.mean([x["test"]["passes"] for x in t.values() if x["test"]["passes"] is not None]))
        train_min = [s / 60 for s in r["train_s"].values() if s]
        lines.append(f"| {method} | {names[r['dataset']]} | {','.join(str(f) for f in r['train_s'])} | {m['n']} | "
                     f"{real_data.fmt(m['dice'])} | {real_data.fmt(m.get('dice_alpha'))} | "
                     f"{real_data.fmt(m['auprc'])} | {real_data.fmt(m['auroc'])} | {real_data.fmt(m['slab_fpr'], 4)}; "
                     f"{real_data.fmt(m.get('slab_fpr_alpha'), 4)} ({real_data.fmt(m['alpha'], 2)}) | "
                     f"{real_data.fmt(wall, 1)} | {real_data.fmt(passes, 0)} | "
                     f"{real_data.fmt(float(np.mean(train_min)), 1) + ' min' if train_min else 'reused'} |")
    return "\n".join(lines + ["", END])


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="2-D methods (unknown ones are skipped)")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override the planned epochs (noted in the table)")
    p.add_argument("--iterations", type=int, default=None, help="override the planned iterations per epoch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for training")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes for training")
    p.add_argument("--profile", choices=("cpu", "gpu"), default=None)
    p.add_argument("--work_dir", type=Path, default=REPO / "work_data" / "brats_slices")
    p.add_argument("--np", type=int, default=2, help="processes for preprocessing")
    p.add_argument("--smoke", action="store_true", help="phantom patients instead of BraTS (end-to-end check)")
    p.add_argument("--docs", type=Path, default=None,
                   help="markdown file for the table (default docs/benchmarks.md; smoke: WORK_DIR/benchmarks_smoke.md)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.profile = args.profile or ("gpu" if args.device.startswith("cuda") else "cpu")
    if args.smoke:
        args.epochs, args.iterations = args.epochs or 1, args.iterations or 3
    start = time.perf_counter()
    args.work_dir = args.work_dir.resolve()
    roots = real_data.set_roots(args.work_dir)
    raw = prepare(args, roots["raw"])
    plans = {i: preprocess(args, i, raw[i]) for i in (FLAIR, PAIR)}
    results_file = args.work_dir / "brats_slices_results.json"
    previous = read_json(results_file) if results_file.is_file() else {}
    results = {}
    for method in args.methods:
        dataset_id = choose_dataset(method, plans)
        if dataset_id is None:
            continue
        folds = read_json(raw[dataset_id] / "folds.json")
        out = args.work_dir / "predictions" / f"{method}_{raw[dataset_id].name}"
        train_s, timing = {}, {}
        for fold in args.folds:
            fold_dir, train_s[fold] = train(args, dataset_id, method, fold)
            timing[fold] = predict(args, fold_dir, raw[dataset_id], folds[fold], out, fresh=train_s[fold] > 0)
            train_s[fold], timing[fold] = carry_measurements(previous, method, fold, train_s[fold], timing[fold])
        results[method] = {"dataset": dataset_id, "train_s": train_s, "timing": timing,
                           "metrics": evaluate(args, raw[dataset_id], out)}
        logger.info("%s: %s", method, json.dumps(results[method]["metrics"]))
    write_json(results_file, {**previous, **results})
    docs = args.docs or (args.work_dir / "benchmarks_smoke.md" if args.smoke else REPO / "docs" / "benchmarks.md")
    section = table(args, results, plans)
    real_data.write_section(docs, section, BEGIN, END)
    print(section)
    print(f"\nwritten to {docs}; whole run {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
