"""Should a fold's maps be median-filtered (`inference.map_median_mm`)? Each candidate width recalibrates a copy of
the fold (the engine's thresholds and IterMask3D's τ are then those of the filtered maps and masks), and is scored
on synthetic lesions drawn into the fold's HEALTHY VALIDATION scans (seeds the test sets do not use); a labelled
test set is only scored for the record.

Per draw and candidate: the pooled Dice of the final mask at the calibrated τ (itermask3d's segmentation: what a user
gets)
and the pooled voxel AUPRC of the map. Draws: `large` and `small` as in readout_choice.py (1-2 blobs of 10-25 mm,
2-6 blobs of 3-9 mm) and `design` (1-3 blobs of 5-10 mm: the lesion design of the built-in phantoms,
dataset_conversion/phantom.py, for a choice made for `make demo`), each with seeds SEED, SEED + 1, SEED + 2.

The rule, fixed before any run (2026-12-05): for the draw named by --decide (default `design`), a width replaces
0 only if its Dice, averaged over the three seeds, is ahead by >= 0.02 and its AUPRC, averaged likewise, is not
behind by more than 0.005; of those, the one ahead most in Dice. The other draws are printed for the record.
Extended before its first run on real data (2026-12-05, `--decide large small` for IXI): every further --decide
draw must not lose, Dice not behind by more than 0.02 and AUPRC not by more than 0.005.
What the rule does not see: the draws lie in the scans that calibrate each candidate, where every candidate marks α
by construction. With 2 validation heads (the demo) the filtered τ marked 1.2-1.8 α of new healthy heads; with 29
IXI scans it held. Check a chosen width's rate on held-out healthy scans before planning it (docs/benchmarks.md).

    python benchmarks/map_filter_choice.py FOLD_DIR --raw RAW_DATASET_WITH_masksTr --work WORK [--widths 0 5]
        [--test IMAGES MASKS LABELS]   (ITERMASK_preprocessed must hold the fold's preprocessed dataset)
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))   # its neighbours, also when imported (tests)
from map_ranking_on_labels import labelled_cases  # noqa: E402  (the same folder)
from readout_choice import DRAWS as READOUT_DRAWS  # noqa: E402

DRAWS = {**READOUT_DRAWS, "design": (903, (1, 3), (5.0, 10.0))}   # name: (dataset id in WORK/raw, n, radius mm)
MIN_DICE_GAIN, MAX_DICE_LOSS, MAX_AUPRC_LOSS = 0.02, 0.02, 0.005


def draw(fold: Path, raw_dataset: Path, work: Path, name: str, seed: int) -> Path:
    """Blobs of draw `name` in the fold's validation cases (their raw images and brain masks)."""
    from itermask_auto.evaluation.synthetic import make_synthetic_dataset
    from itermask_auto.utilities.dataset import find_dataset
    split = json.loads((fold / "splits.json").read_text())
    val = sorted(split[int(fold.name.split("_")[-1])]["val"] if isinstance(split, list) else split["val"])
    dataset_id, n_lesions, radius = DRAWS[name]
    dataset_id += 10 * (seed % 10)
    root = work / "raw"
    if any(root.glob(f"Dataset{dataset_id:03d}_*")):   # drawn by an earlier run
        return find_dataset(root, dataset_id)
    return make_synthetic_dataset(raw_dataset, dataset_id, f"ValidationBlobs_{name}_seed{seed}", ["lesion"],
                                  seed=seed, raw_root=root, split="Tr", cases=val, lesion_masks="none",
                                  n_lesions=n_lesions, blob_radius=radius)


def candidate_fold(fold: Path, width_mm: float) -> Path:
    """A recalibrated copy of the fold (beside it, so its dataset is found) with map_median_mm = width_mm."""
    from itermask_auto.calibration.calibrate import calibrate_model_folder
    copy = fold.parent / f"fold_median{width_mm:g}mm_{fold.name.split('_')[-1]}"
    if not (copy / "calibration.json").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(fold, copy, ignore=shutil.ignore_patterns("checkpoint_latest.pth", "checkpoint_best.pth"))
        plans = json.loads((copy / "plans.json").read_text())
        plans["inference"]["map_median_mm"] = float(width_mm)
        (copy / "plans.json").write_text(json.dumps(plans, indent=1))
        calibrate_model_folder(copy)
    return copy


def score(fold: Path, images: Path, masks: Path, labels: Path) -> Dict[str, float]:
    """Pooled Dice of the fold's segmentation at its calibrated rule and pooled AUPRC of its map."""
    from itermask_auto.evaluation.metrics import average_precision
    from itermask_auto.inference.predictor import Predictor
    predictor = Predictor.from_model_folder(fold)
    maps: List[np.ndarray] = []
    segs: List[np.ndarray] = []
    truths: List[np.ndarray] = []
    for case, result, in_brain_values, truth in labelled_cases(predictor, images, masks, labels):
        seg = result.final_mask   # itermask3d's segmentation at its calibrated τ (its plan's `final_mask` rule)
        maps.append(in_brain_values(result.anomaly_map))
        segs.append(in_brain_values(seg.astype(np.float32)) > 0.5)
        truths.append(truth)
    truth, seg = np.concatenate(truths), np.concatenate(segs)
    dice = 2 * float((seg & truth).sum()) / max(1.0, float(seg.sum() + truth.sum()))
    return {"dice": dice, "auprc": average_precision(np.concatenate(maps), truth)}


def choose(table: Dict[str, Dict[str, Dict[str, float]]], decide: List[str]) -> str:
    """The rule of the module docstring; table[width][draw] = {dice, auprc} averaged over the seeds."""
    def passes(width: str, draw: str, dice_margin: float) -> bool:
        row, base = table[width][draw], table["0"][draw]
        return row["dice"] >= base["dice"] + dice_margin and row["auprc"] >= base["auprc"] - MAX_AUPRC_LOSS
    ok = [w for w in table if w != "0" and passes(w, decide[0], MIN_DICE_GAIN)
          and all(passes(w, d, -MAX_DICE_LOSS) for d in decide[1:])]
    return max(ok, key=lambda w: table[w][decide[0]]["dice"]) if ok else "0"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fold", type=Path)
    p.add_argument("--raw", type=Path, required=True, help="the fold's raw dataset (imagesTr, masksTr)")
    p.add_argument("--work", type=Path, required=True, help="folder for the validation draws")
    p.add_argument("--widths", type=float, nargs="+", default=[0.0, 5.0], help="candidate widths, mm (0 first)")
    p.add_argument("--draws", nargs="+", default=list(DRAWS), choices=list(DRAWS))
    p.add_argument("--decide", nargs="+", default=["design"], choices=list(DRAWS),
                   help="the draw that must gain, then any that must not lose (the rule above)")
    p.add_argument("--seed", type=int, default=1, help="first lesion seed (the real-data test sets use 0)")
    p.add_argument("--test", type=Path, nargs=3, action="append", default=[], metavar=("IMAGES", "MASKS", "LABELS"),
                   help="a labelled test set scored for the record (not used by the choice); repeatable")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    if args.widths[0] != 0 or not set(args.decide) <= set(args.draws):
        p.error("--widths must start with 0 and --draws must include every --decide draw")
    table: Dict[str, Dict[str, Dict[str, float]]] = {}
    for width in args.widths:
        fold = args.fold if width == 0 and json.loads((args.fold / "plans.json").read_text())["inference"].get(
            "map_median_mm", 0) == 0 else candidate_fold(args.fold, width)
        row = table.setdefault(f"{width:g}", {})
        for name in args.draws:
            per_seed = []
            for seed in range(args.seed, args.seed + 3):
                ds = draw(args.fold, args.raw, args.work, name, seed)
                per_seed.append(score(fold, ds / "imagesTs", ds / "masksTs", ds / "labelsTs"))
            row[name] = {k: float(np.mean([s[k] for s in per_seed])) for k in ("dice", "auprc")}
            print(f"width {width:g} mm, draw {name}: {row[name]} (seeds {[round(s['dice'], 3) for s in per_seed]})",
                  flush=True)
        for i, (images, masks, labels) in enumerate(args.test):
            row[f"test{i}"] = score(fold, images, masks, labels)
            print(f"width {width:g} mm, test set {images.parent.name} (for the record): {row[f'test{i}']}", flush=True)
    columns = list(next(iter(table.values())))
    print("\n| width (mm) | " + " | ".join(f"{c} Dice | {c} AUPRC" for c in columns) + " |")
    print("|---|" + "---|---|" * len(columns))
    for width, row in table.items():
        print(f"| {width} | " + " | ".join(f"{row[c]['dice']:.3f} | {row[c]['auprc']:.3f}" for c in columns) + " |")
    chosen = choose(table, args.decide)
    print(f"\nchosen by the validation draws {args.decide}: map_median_mm {chosen}")
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "map_filter_choice.json").write_text(json.dumps({"table": table, "chosen": chosen}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
