"""Real-data benchmark: train on healthy IXI T1, test on MSLUB T1 (expert labels), held-out healthy IXI and the same
held-out IXI scans with synthetic lesions; one table per method x test set into docs/benchmarks.md.

    python benchmarks/real_data.py [--methods itermask3d oneshot ae itermask2:2d] [--epochs N] [--iterations N]
                                   [--device cpu|cuda] [--profile cpu|gpu] [--throughput measure|reference]
                                   [--workers N] [--work_dir DIR] [--artefacts] [--smoke] [--mode itermask2]

A run is METHOD or METHOD:CONFIGURATION (default: the method's own, e.g. 2d for itermask2, 3d for itermask3d).
cpu profile epochs: from the step timed here (`--throughput measure`, default on a CPU) or the reference CPU's rule
(`reference`, default with `--device cuda`: `--profile cpu` then runs that recipe on a GPU); a plan in --work_dir stays.

Steps (each skipped when its output exists; everything lives under --work_dir, which gets its own
ITERMASK_raw/_preprocessed/_results):
1. Convert IXI T1 (Dataset001) and MSLUB T1 (Dataset011). The 5-fold splits cover every imagesTr case, so 16 IXI
   scans are held out at conversion time: every 10th of the 160 sorted names (offset 5) goes to imagesTs/masksTs
   and never reaches planning, training or calibration (144 remain; fold 0 = ~115 train / ~29 validation).
2. Synthetic lesions on the 16 held-out scans (Dataset101, itermask_synthetic, seed 0) with lesion shapes from the
   MSLUB expert masks of the 27 patients that are not test cases (07, 19, 26 excluded), and large lesions on the
   same 16 scans (Dataset103: 1-2 generated blobs of radius 10-25 mm, same intensity rule; the MS-lesion shapes
   are 16-160 voxels per scan at 2 mm, small enough for the high-frequency condition to let a network rebuild
   them). Size only: no mass effect or oedema. --artefacts also makes Dataset102 (4 held-out scans x
   slab/bias/spike/ghosting) scored by detection only.
3. Plan and preprocess Dataset001 (the configurations the runs need), train fold 0 of each method (unless a final
   checkpoint with the same epochs exists), calibrate on the fold's healthy validation cases.
4. Predict every test set, evaluate with itermask_auto.evaluation (calibrated threshold, never the labels), write
   the table between the real_data markers of docs/benchmarks.md (replaced on rerun). --smoke: phantoms instead
   (tiny, minutes on a CPU), the table to WORK_DIR/benchmarks_smoke.md."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without `pip install -e .`
from itermask_auto.utilities.atomic import atomic_path, read_json, write_json  # noqa: E402

logger = logging.getLogger("real_data")
SHARED = Path(os.environ.get("ITERMASK_SHARED_DATA", REPO.parent / "shared" / "data"))
BEGIN, END = "<!-- real_data:begin -->", "<!-- real_data:end -->"
IXI, MSLUB, SYNTH, ARTEFACTS, SYNTH_LARGE = 1, 11, 101, 102, 103
LARGE_BLOB_RADIUS_MM, LARGE_N_LESIONS = (10.0, 25.0), (1, 2)   # tumour-sized: 6-78 ml per scan on the 16 IXI scans
MSLUB_TEST_PATIENTS = ("patient07", "patient19", "patient26")
METHODS = ("itermask3d", "oneshot", "ae")


def parse_run(run: str) -> tuple[str, str]:
    """'METHOD' or 'METHOD:CONFIGURATION' -> (method, configuration)."""
    method, _, configuration = run.partition(":")
    from itermask_auto.methods.registry import get_method
    configuration = configuration or get_method(method).configurations[0]   # the method's own default
    if configuration not in ("3d", "2d"):
        raise SystemExit(f"run '{run}': configuration must be 3d or 2d")
    return method, configuration


def held_out(cases: List[str], n: int = 16) -> List[str]:
    step = max(1, len(cases) // n)
    return sorted(cases)[step // 2::step][:n]


def set_roots(work: Path) -> Dict[str, Path]:
    roots = {k: work / k for k in ("raw", "preprocessed", "results")}
    for k, p in roots.items():
        p.mkdir(parents=True, exist_ok=True)
        os.environ[f"ITERMASK_{k}"] = str(p)
    return roots


def convert_ixi_with_holdout(raw: Path, work: Path, n_held_out: int) -> Path:
    from itermask_auto.dataset_conversion import convert_ixi_t1
    final = raw / "Dataset001_IXI_T1"
    if (final / "imagesTs").is_dir():
        return final
    staging = work / ".staging_raw"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    folder = convert_ixi_t1.convert(SHARED / "ixi_t1_2mm", staging, IXI)
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in (folder / "imagesTr").glob("*_0000.nii.gz"))
    test = held_out(cases, n_held_out)
    for sub in ("imagesTs", "masksTs"):
        (folder / sub).mkdir()
    for case in test:
        os.replace(folder / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesTs" / f"{case}_0000.nii.gz")
        os.replace(folder / "masksTr" / f"{case}.nii.gz", folder / "masksTs" / f"{case}.nii.gz")
    meta = read_json(folder / "dataset.json")
    meta.update(numTraining=len(cases) - len(test), numTest=len(test),
                held_out=f"benchmarks/real_data.py: imagesTs = every {len(cases) // n_held_out}th sorted case")
    write_json(folder / "dataset.json", meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("IXI: %d training, %d held-out healthy test scans", len(cases) - len(test), len(test))
    return final


def has_dataset(raw: Path, dataset_id: int) -> bool:
    return any(p.name.startswith(f"Dataset{dataset_id:03d}_") for p in raw.iterdir())


def prepare_data(args, raw: Path) -> Dict[str, Path]:
    from itermask_auto.dataset_conversion import convert_mslub
    from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
    from itermask_auto.evaluation.synthetic import make_synthetic_dataset
    from itermask_auto.utilities.dataset import find_dataset
    if args.smoke:   # phantoms: 8 healthy training heads + 4 held-out healthy; 3 lesion heads as the "MSLUB" set
        size = (48, 56, 48)
        if not (raw / "Dataset001_SmokeTrain").is_dir():
            write_phantom_dataset(raw, IXI, "SmokeTrain", n_train=8, n_test_healthy=4, n_test_lesion=0, seed=0,
                                  size=size)
        if not (raw / "Dataset011_SmokeLesion").is_dir():
            write_phantom_dataset(raw, MSLUB, "SmokeLesion", n_train=0, n_test_healthy=0, n_test_lesion=3, seed=1,
                                  size=size)
    else:
        if not (SHARED / "ixi_t1_2mm").is_dir():
            raise SystemExit(f"shared data not found at {SHARED} (set ITERMASK_SHARED_DATA)")
        convert_ixi_with_holdout(raw, args.work_dir, args.n_held_out)
        if not (raw / "Dataset011_MSLUB_T1").is_dir():
            convert_mslub.convert(SHARED / "mslub_mni", raw, MSLUB)
    masks_dir = SHARED / "mslub_mni" / "lesion_masks_all_patients"
    masks = sorted(p for p in masks_dir.glob("*.nii.gz") if not p.name.startswith(MSLUB_TEST_PATIENTS)) \
        if masks_dir.is_dir() else "none"
    train = find_dataset(raw, IXI)
    if not has_dataset(raw, SYNTH):
        make_synthetic_dataset(train, SYNTH, "SynthLesions", ["lesion"], seed=0, raw_root=raw, split="Ts",
                               lesion_masks=masks)
    if not has_dataset(raw, SYNTH_LARGE):
        make_synthetic_dataset(train, SYNTH_LARGE, "SynthLargeLesions", ["lesion"], seed=0, raw_root=raw, split="Ts",
                               lesion_masks="none", n_lesions=LARGE_N_LESIONS, blob_radius=LARGE_BLOB_RADIUS_MM)
    sets = {"mslub": find_dataset(raw, MSLUB), "healthy": train, "synth_lesions": find_dataset(raw, SYNTH),
            "synth_large": find_dataset(raw, SYNTH_LARGE)}
    if args.artefacts:
        if not has_dataset(raw, ARTEFACTS):
            cases = sorted(p.name[:-len("_0000.nii.gz")] for p in (train / "imagesTs").glob("*_0000.nii.gz"))[:4]
            make_synthetic_dataset(train, ARTEFACTS, "SynthArtefacts", ["slab", "bias", "spike", "ghosting"],
                                   seed=0, raw_root=raw, split="Ts", cases=cases, lesion_masks="none")
        sets["artefacts"] = find_dataset(raw, ARTEFACTS)
    return sets


def preprocess(args, root: Path, configurations: List[str]):
    """Plan and preprocess Dataset001 for the configurations the runs need (those already there are kept)."""
    from itermask_auto.experiment_planning.api import plan_and_preprocess
    from itermask_auto.experiment_planning.plans import PLANS_FILE, Plans
    from itermask_auto.preprocessing.storage import list_preprocessed_cases
    from itermask_auto.utilities.dataset import find_dataset
    existing = next((d for d in root.glob(f"Dataset{IXI:03d}_*") if (d / PLANS_FILE).is_file()), None)
    plans = Plans.load(existing / PLANS_FILE) if existing else None
    if plans is not None and plans.profile != args.profile:
        logger.warning("the existing plan has profile %s, not %s: it is kept (use a new --work_dir to change it)",
                       plans.profile, args.profile)
    missing = [c for c in configurations if plans is None or c not in plans.configurations
               or len(list_preprocessed_cases(existing / plans.configuration(c).data_identifier)) < 2]
    if missing:
        plan_and_preprocess(IXI, tuple(missing), num_processes=args.np,
                            profile=plans.profile if plans is not None else args.profile, throughput=args.throughput)
    return Plans.load(find_dataset(root, IXI) / PLANS_FILE)


def planned_recipe(plans, method: str, configuration: str):
    """The TrainingPlan the method's first stage trains with (a method may plan its own epochs: Stage.recipe)."""
    from itermask_auto.methods.base import with_recipe
    from itermask_auto.methods.registry import get_method
    return with_recipe(plans.training, get_method(method).stages(plans, configuration)[0])


def train(args, method: str, configuration: str) -> tuple[Path, bool, float]:
    """(fold dir, trained now?, training+calibration seconds) - skipped when an equal final model exists."""
    import torch
    from itermask_auto.experiment_planning.plans import PLANS_FILE, Plans
    from itermask_auto.paths import preprocessed_root
    from itermask_auto.training.api import run_training
    from itermask_auto.training.checkpoint import model_folder
    from itermask_auto.utilities.dataset import find_dataset
    ds = find_dataset(preprocessed_root(), IXI)
    plans = Plans.load(ds / PLANS_FILE)
    fold_dir = model_folder(ds.name, method, plans.plans_name, configuration, 0)
    want = stage_plans(plans, method, configuration, args)[0][1].num_epochs   # the first stage's (its recipe)
    final = fold_dir / "checkpoint_final.pth"
    if final.is_file() and torch.load(final, map_location="cpu", weights_only=True)["num_epochs"] == want:
        if not (fold_dir / "calibration.json").is_file():
            run_training(IXI, configuration, 0, method, args.device, calibrate_only=True,
                         num_threads=args.threads, num_workers=args.workers)
        return fold_dir, False, 0.0
    start = time.perf_counter()
    run_training(IXI, configuration, 0, method, args.device, continue_training=not final.is_file(),
                 epochs=args.epochs, iterations=args.iterations, num_threads=args.threads, num_workers=args.workers)
    return fold_dir, True, time.perf_counter() - start


def stage_plans(plans, method: str, configuration: str, args) -> list:
    """[(stage name, TrainingPlan)] a run trains: the plan's recipe, each stage's own, then --epochs/--iterations."""
    from itermask_auto.methods.base import with_recipe
    from itermask_auto.methods.registry import get_method
    return [(stage.name, with_recipe(plans.training, stage, args.epochs, args.iterations))
            for stage in get_method(method).stages(plans, configuration)]


def predict(args, method: str, configuration: str, sets: Dict[str, Path], out: Path, fresh: bool) -> Dict[str, Dict]:
    from itermask_auto.inference.predict_folder import predict_folder
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    timing = {}
    for name, ds in sets.items():
        folder = ds / "imagesTs"
        before = len(list((out / name).glob("*_anomaly.nii.gz")))   # kept from an earlier run (--continue)
        start = time.perf_counter()
        res = predict_folder(folder, out / name, IXI, configuration, 0, method, args.device, continue_prediction=True,
                             masks_dir=ds / "masksTs", progress=False, mode=args.mode)
        cases = list(res["cases"].values())
        timing[name] = {"wall_s": time.perf_counter() - start, "n": len(cases), "predicted_now": len(cases) - before,
                        "failures": res["failures"],
                        "seconds": float(np.mean([c["seconds"] for c in cases])) if cases else None,
                        "passes": float(np.mean([c["network_passes"] for c in cases])) if cases else None}
    return timing


def brain_dir(work: Path, name: str, *datasets: Path) -> Path:
    """One folder of brain-mask links for a test set and the healthy negatives (evaluate_folder takes one)."""
    folder = work / "eval_masks" / name
    folder.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        for m in (ds / "masksTs").glob("*.nii.gz"):
            link = folder / m.name
            if not link.exists():
                link.symlink_to(m.resolve())
    return folder


def volume_scores(pred_dir: Path) -> List[float]:
    return [read_json(p.with_name(p.name[:-len("_anomaly.nii.gz")] + ".json"))["volume_score"]
            for p in sorted(pred_dir.glob("*_anomaly.nii.gz"))]


def evaluate(args, sets: Dict[str, Path], out: Path) -> Dict[str, Dict]:
    from itermask_auto.evaluation.api import auroc, evaluate_folder
    rows = {}
    healthy = out / "healthy"
    for name in ("mslub", "synth_lesions", "synth_large"):
        s = evaluate_folder(out / name, sets[name] / "labelsTs", healthy_dir=healthy,
                            brain_dir=brain_dir(args.work_dir, name, sets[name], sets["healthy"]), report=False)
        fp = sum(c["fp"] for c in s["cases"])
        neg = sum(c["brain_voxels"] - c["label_voxels"] for c in s["cases"])
        rows[name] = {"dice": s["segmentation"]["pooled_dice"], "auprc": s["voxel_ranking"]["pooled_auprc"],
                      "auroc": s["voxel_ranking"]["pooled_auroc"], "fpr": fp / max(neg, 1),
                      "alpha": s["healthy_voxel_fpr"]["alpha"], "det_auroc": s["detection"]["auroc"],
                      "n": s["n_cases"], "dice_alpha": alpha_map_dice(s)}
        rows["healthy"] = {"fpr": s["healthy_voxel_fpr"]["voxel_fpr"], "alpha": s["healthy_voxel_fpr"]["alpha"],
                           "n": s["healthy_voxel_fpr"]["n_cases"]}
    if "artefacts" in sets:   # global artefacts have empty voxel labels: detection from the volume scores only
        pos, neg = volume_scores(out / "artefacts"), volume_scores(healthy)
        truth = np.array([1] * len(pos) + [0] * len(neg), bool)
        rows["artefacts"] = {"det_auroc": auroc(np.array(pos + neg), truth), "n": len(pos)}
    return rows


def alpha_map_dice(summary: Dict) -> Optional[float]:
    """Pooled Dice of the map above the healthy α voxel threshold (evaluation's dice_at_healthy_thresholds)."""
    at = summary.get("dice_at_healthy_thresholds") or {}
    return next((v["pooled_dice"] for k, v in at.items() if k.startswith("alpha_")), None)


def fmt(v, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def machine() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), {gpu}, "
            f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end")


def table(args, results: Dict, plans) -> str:
    labels = {"mslub": "MSLUB T1 (expert labels)", "healthy": "IXI held-out healthy",
              "synth_lesions": "IXI held-out + synthetic lesions", "artefacts": "IXI held-out + artefacts",
              "synth_large": "IXI held-out + large synthetic lesions (blobs, radius {:g}-{:g} mm)".format(
                  *LARGE_BLOB_RADIUS_MM)}
    recipes = {}
    for r in results.values():
        tp = planned_recipe(plans, r["method"], r["configuration"])
        recipes.setdefault(f"{tp.num_epochs} epochs x {tp.iterations_per_epoch} iterations", []).append(
            f"{r['method']} ({r['configuration']})")
    planned = "; ".join(f"{k} ({', '.join(v)})" if len(recipes) > 1 else k for k, v in recipes.items())
    recipe = f"{planned} (as planned)"
    if args.epochs or args.iterations:
        recipe = (f"**NOT the planned recipe: {args.epochs or 'planned'} epochs x "
                  f"{args.iterations or 'planned'} iterations** (plan: {planned})")
    lines = [BEGIN, "## Real-data benchmark (benchmarks/real_data.py)", "",
             f"Command: `{' '.join(['python', 'benchmarks/real_data.py'] + sys.argv[1:])}`  ",
             f"Machine: {machine()}  ", f"Date: {time.strftime('%Y-%m-%d %H:%M')}; training: {recipe}; "
             f"device {args.device}, plan profile {plans.profile}"
             f"{'; **SMOKE run on phantoms, not real data**' if args.smoke else ''}.", "",
             "Dice at the threshold calibrated on healthy validation scans (never the labels); AUPRC/AUROC of "
             "the pooled in-brain voxels; FPR = segmented non-lesion (healthy row: all) brain voxels, vs α; "
             "detection AUROC of the volume score against the held-out healthy scans; s/volume = wall time of "
             "itermask_predict per scan predicted in this run (preprocessing + inference + export; — when all "
             "were reused); passes = network passes per scan.",
             "Stage recipes: " + "; ".join(
                 f"{r['method']} ({r['configuration']}): " + ", ".join(
                     f"{name} {tp.num_epochs} x {tp.iterations_per_epoch}"
                     for name, tp in stage_plans(plans, r["method"], r["configuration"], args))
                 for r in results.values()) + ".",
             "Dice = CASE_seg (the method's segmentation rule); Dice α-map = the map above the healthy α voxel "
             "threshold, where the method's own rule differs (IterMask3D's final mask, label-free thresholds).",
             "", "| method (configuration) | test set | n | Dice | Dice α-map | AUPRC | AUROC | voxel FPR (α) | "
             "detection AUROC | s/volume | passes/volume | training |", "|---" * 12 + "|"]
    mode = f", -mode {args.mode}" if args.mode else ""
    for run, r in results.items():
        for name, m in r["metrics"].items():
            t = r["timing"].get(name, {})
            wall = t["wall_s"] / t["predicted_now"] if t.get("predicted_now") else None   # None: all reused
            fpr = f"{fmt(m.get('fpr'), 4)} ({fmt(m.get('alpha'), 2)})" if "fpr" in m else "—"
            lines.append(f"| {r['method']} ({r['configuration']}{mode}) | {labels[name]} | {m.get('n', '—')} | "
                         f"{fmt(m.get('dice'))} | {fmt(m.get('dice_alpha'))} | {fmt(m.get('auprc'))} | "
                         f"{fmt(m.get('auroc'))} | {fpr} | {fmt(m.get('det_auroc'))} | "
                         f"{fmt(wall, 1)} | {fmt(t.get('passes'), 1)} | "
                         f"{fmt(r['train_s'] / 60, 1) + ' min' if r['train_s'] else 'reused'} |")
    return "\n".join(lines + ["", END])


def write_section(path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the markers `begin` and `end` of `path` by `section` (appended if absent)."""
    text = path.read_text() if path.is_file() else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with atomic_path(path, ".md") as tmp:
        Path(tmp).write_text(text)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   help="runs: METHOD or METHOD:CONFIGURATION (default configuration: the method's own)")
    p.add_argument("--epochs", type=int, default=None,
                   help="override the planned epochs (the table then says the recipe was not the planned one)")
    p.add_argument("--iterations", type=int, default=None, help="override the planned iterations per epoch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mode", choices=("itermask3d", "itermask2"), default=None,
                   help="itermask3d's inference mode for prediction (itermask_predict -mode); the plan's by default")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for training")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes for training")
    p.add_argument("--profile", choices=("cpu", "gpu"), default=None,
                   help="planner profile (default: gpu with --device cuda, else cpu); --device cuda --profile cpu "
                        "runs the CPU recipe on a GPU")
    p.add_argument("--throughput", choices=("measure", "reference"), default=None, help="cpu profile's epochs: "
                   "from the step timed here (default on a CPU) or the reference CPU's rule (default on cuda)")
    p.add_argument("--work_dir", type=Path, default=REPO / "work_data" / "real_data")
    p.add_argument("--n_held_out", type=int, default=16)
    p.add_argument("--np", type=int, default=2, help="processes for preprocessing")
    p.add_argument("--artefacts", action="store_true", help="also score artefact detection (Dataset102)")
    p.add_argument("--smoke", action="store_true", help="phantoms instead of the shared data (end-to-end check)")
    p.add_argument("--docs", type=Path, default=None,
                   help="markdown file for the table (default docs/benchmarks.md; smoke: WORK_DIR/benchmarks_smoke.md)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runs = [parse_run(r) for r in args.methods]   # unknown methods fail here
    if args.mode and {m for m, _ in runs} != {"itermask3d"}:
        raise SystemExit("--mode is an itermask3d inference mode: run it with --methods itermask3d only")
    args.profile = args.profile or ("gpu" if args.device.startswith("cuda") else "cpu")
    args.throughput = args.throughput or ("reference" if args.device.startswith("cuda") else "measure")
    if args.smoke:   # a few iterations: the smoke run checks the plumbing, not the models
        args.epochs, args.iterations = args.epochs or 1, args.iterations or 3
    start = time.perf_counter()
    args.work_dir = args.work_dir.resolve()
    roots = set_roots(args.work_dir)
    sets = prepare_data(args, roots["raw"])
    plans = preprocess(args, roots["preprocessed"], sorted({c for _, c in runs}))
    results = {}
    for method, configuration in runs:
        fold_dir, fresh, train_s = train(args, method, configuration)
        run = f"{method}_{configuration}" + (f"_{args.mode}" if args.mode else "")
        out = args.work_dir / "predictions" / run
        timing = predict(args, method, configuration, sets, out, fresh)
        results[run] = {"method": method, "configuration": configuration, "fold_dir": str(fold_dir),
                        "train_s": train_s, "timing": timing, "metrics": evaluate(args, sets, out)}
        logger.info("%s: %s", run, json.dumps(results[run]["metrics"]))
    write_json(args.work_dir / "real_data_results.json", results)
    docs = args.docs or (args.work_dir / "benchmarks_smoke.md" if args.smoke else REPO / "docs" / "benchmarks.md")
    section = table(args, results, plans)
    write_section(docs, section)
    print(section)
    print(f"\nwritten to {docs}; whole run {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
