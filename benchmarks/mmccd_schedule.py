"""MMCCD: what the planned test-time schedule costs in map quality. On a few BraTS slices, the planned schedule and the
authors' full one (64 positions x 2 orientations x 100 DDIM steps = 12,928 network evaluations per slice) run with
the same trained networks; printed: evaluations and seconds per slice, AUPRC and AUROC of each map on those slices
(whole tumour, in-brain pixels), and the Pearson / Spearman correlation of the two maps inside the eroded brain.

    python benchmarks/mmccd_schedule.py --model FOLD_DIR [--slices 3] [--schedules planned 64x100]
                                        [--cases PATIENT ...] [--threads 2] [--device cpu]

FOLD_DIR: a trained mmccd fold of the BraTS slab dataset (benchmarks/brats_slices.py trains them under
WORK_DIR/results/Dataset042_BraTSSlabs_FLAIR_T1c/mmccd__itermaskPlans_cpu__2d/fold_N). Slices: per held-out patient
of that fold (folds.json; or --cases), the --slices axial slices with the most tumour (the authors test each subject's
largest-tumour slice). A schedule is "planned" or POSITIONSxSTEPS. Cost: the full schedule took 3.9 min per slice on
an idle 2-core AVX-512 CPU (12,928 evaluations x ~18 ms), so --slices 3 on fold 0's 2 patients is ~25 min.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def label_on_grid(label_path: Path, props: Dict) -> np.ndarray:
    """The label moved onto the preprocessed grid exactly as preprocess_case moves the images (nearest)."""
    import SimpleITK as sitk
    from itermask_auto.preprocessing.cropping import crop
    from itermask_auto.preprocessing.orientation import Reorientation
    from itermask_auto.preprocessing.resampling import resample
    reo = Reorientation(**props["reorientation"])
    label = reo.to_canonical(sitk.GetArrayFromImage(sitk.ReadImage(str(label_path))) > 0)
    label = crop(label, props["bbox"]).astype(np.float32)
    return resample(label, props["resampled_shape"], order=0, lowres_axis=props["lowres_axis"]) > 0.5


def schedules(names: List[str], planned: Dict) -> Dict[str, tuple]:
    out = {}
    for name in names:
        if name == "planned":
            out[f"planned ({planned['stripe_positions']}x{planned['ddim_steps']})"] = (
                planned["stripe_positions"], planned["ddim_steps"])
        else:
            positions, steps = (int(v) for v in name.lower().split("x"))
            out[f"{positions}x{steps}" + (" (authors)" if (positions, steps) == (64, 100) else "")] = (positions, steps)
    return out


def default_raw(model: Path, dataset_name: str) -> Path:
    """The fold's raw dataset: under $ITERMASK_raw, or else beside the results root as brats_slices.py lays out its work
    folder (WORK/results/DATASET/TRAINER/fold_N -> WORK/raw/DATASET)."""
    root = os.environ.get("ITERMASK_raw")
    candidates = ([Path(root) / dataset_name] if root else []) + [model.resolve().parents[3] / "raw" / dataset_name]
    found = next((raw for raw in candidates if (raw / "folds.json").is_file()), None)
    if found is None:
        places = " or ".join(map(str, candidates))
        raise SystemExit(f"no folds.json of the slab dataset in {places}; give it with --raw")
    return found


def main(argv: Optional[List[str]] = None) -> int:
    import torch
    from scipy.stats import pearsonr, spearmanr
    from itermask_auto.evaluation.metrics import auroc, average_precision
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.methods.mmccd.stripes import eroded_brain
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    from itermask_auto.utilities.atomic import read_json
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="trained mmccd fold folder")
    p.add_argument("--raw", type=Path, default=None, help="the raw slab dataset (default: the fold's dataset under "
                                                          "$ITERMASK_raw, else under the work folder's raw/)")
    p.add_argument("--cases", nargs="+", default=None, help="test patients (default: the fold's held-out patients)")
    p.add_argument("--slices", type=int, default=3, help="slices per patient (those with the most tumour)")
    p.add_argument("--schedules", nargs="+", default=["planned", "64x100"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_model_folder(args.model, args.device)
    if predictor.method != "mmccd":
        raise SystemExit(f"{args.model}: a {predictor.method} model, not mmccd")
    raw = args.raw or default_raw(args.model, predictor.plans.dataset_name)
    fold = int(args.model.name.split("_")[-1])
    cases = args.cases or read_json(raw / "folds.json")[fold]["test_patients"]
    n_ch = predictor.plans.num_channels
    planned = predictor.spec.method_plan(predictor.plans)
    axis = predictor.config.slice_axis
    inplane = [s for a, s in enumerate(predictor.config.spacing) if a != axis]
    maps: Dict[str, List[np.ndarray]] = {}
    seconds: Dict[str, float] = {}
    labels, inner = [], []
    print(f"model {args.model}; cases {cases}; {args.slices} slice(s) each; {args.threads} thread(s); load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    runs = schedules(args.schedules, planned)
    for case in cases:
        data, hf, brain, props = preprocess_case([raw / "imagesTs" / f"{case}_{c:04d}.nii.gz" for c in range(n_ch)],
                                                 predictor.plans, predictor.configuration,
                                                 raw / "masksTs" / f"{case}.nii.gz")
        label = label_on_grid(raw / "labelsTs" / f"{case}.nii.gz", props) & brain
        per_slice = np.moveaxis(label, axis, 0).reshape(label.shape[axis], -1).sum(1)
        chosen = np.argsort(-per_slice, kind="stable")[:args.slices]
        keep = np.zeros(label.shape[axis], bool)
        keep[chosen] = True
        selected = brain & np.expand_dims(keep, tuple(a for a in range(3) if a != axis))
        region = eroded_brain(brain, axis, planned["erosion_radius_mm"], inplane) & selected
        labels.append(label[selected])
        inner.append(region[selected])
        for name, (positions, steps) in runs.items():
            plans = copy.deepcopy(predictor.plans)
            plans.method_plans["mmccd"] = {**planned, "stripe_positions": positions, "ddim_steps": steps}
            predictor.plans = plans
            start = time.perf_counter()
            result, _ = predictor.infer(data, hf, selected)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            maps.setdefault(name, []).append(result.anomaly_map[selected])
            print(f"  {case} slices {sorted(chosen.tolist())} ({int(per_slice[chosen].sum())} tumour px): {name} "
                  f"{result.passes} evaluations/slice, {time.perf_counter() - start:.0f} s", flush=True)
    y, region = np.concatenate(labels), np.concatenate(inner)
    n_slices = len(cases) * args.slices
    print(f"\n{n_slices} slices, {int(y.sum())} tumour pixels of {y.size} in-brain pixels")
    print("| schedule | evaluations/slice | s/slice | AUPRC | AUROC |\n|---|---|---|---|---|")
    for name, (positions, steps) in runs.items():
        m = np.concatenate(maps[name])
        print(f"| {name} | {2 * positions * (steps + 1)} | {seconds[name] / n_slices:.1f} | "
              f"{average_precision(m, y):.3f} | {auroc(m, y):.3f} |")
    names = list(runs)
    for other in names[1:]:
        a, b = np.concatenate(maps[names[0]])[region], np.concatenate(maps[other])[region]
        print(f"map correlation {names[0]} vs {other} (eroded brain, {region.sum()} px): Pearson "
              f"{pearsonr(a, b)[0]:.3f}, Spearman {spearmanr(a, b)[0]:.3f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
