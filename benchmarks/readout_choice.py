"""Which map should `itermask3d` hand out? Candidate readouts of one inference, compared on synthetic lesions drawn
into the fold's HEALTHY VALIDATION scans (seeds the test sets do not use); a test set is only scored for the record.

One inference (the plan's mode, the fold's calibration) gives, per voxel: ℓ, the error in the last shrink pass in
which it was still masked (the map `itermask3d` exported until this script chose another, 2026-12-05); f, the first
pass's error (whole brain masked: the `oneshot` map of the same network); F, the final mask (= {ℓ > τ}); τ, the
case's threshold; s, the case's error unit (τ / the calibrated τ in units). Every candidate keeps F = {map > τ} (the
segmentation is unchanged):

  last_pass               ℓ
  final_over_first        F: ℓ; elsewhere τ·f/(f + τ)   (outside F the first pass's order, below τ)
  final_first_ranked      F: τ + f; elsewhere τ·f/(f + τ) (F on top, ranked and the rest ordered by the first pass)
  …_units                 each of the above divided by s: maps of all cases on the one scale τ is calibrated in

`first_pass` (f itself; its top voxels are not F) is printed for reference, not a candidate. The rule, fixed before
any run: a candidate replaces `last_pass` only if its pooled AUPRC on the large-blob validation draw is ahead by
≥ 0.005 and on the small-blob draw not behind by more than 0.005; of those, the one ahead most on the large draw.

    python benchmarks/readout_choice.py FOLD_DIR --raw RAW_IXI_DATASET --work WORK [--test IMAGES MASKS LABELS]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from map_ranking_on_labels import labelled_cases  # noqa: E402  (the same folder)

DRAWS = {  # name: (dataset id in WORK/raw, n_lesions, blob radius mm): the real-data test sets' recipes, seed 1
    "large": (901, (1, 2), (10.0, 25.0)),
    "small": (902, (2, 6), (3.0, 9.0)),   # the small set draws real MS masks; blobs here (no label is read)
}
MIN_GAIN, MAX_LOSS = 0.005, 0.005


def readouts(last: np.ndarray, first: np.ndarray, final: np.ndarray, tau: float, unit: float) -> Dict[str, np.ndarray]:
    """The candidate maps of one case (and `first_pass` for reference); all float32, 0 where `last` and `first` are.
    `last` must be the last pass's map (a fold whose plan says `inference.map_readout last_pass`)."""
    from itermask_auto.methods.itermask3d.procedure import MAP_READOUTS, readout_map
    maps = {name: readout_map(last, first, final, tau, name) for name in MAP_READOUTS}
    maps.update({f"{k}_units": v / unit for k, v in list(maps.items())})
    maps["first_pass"] = first
    return {k: v.astype(np.float32) for k, v in maps.items()}


def draw_validation_lesions(fold: Path, raw_dataset: Path, work: Path, seed: int) -> Dict[str, Path]:
    """Synthetic blobs in the fold's validation cases (their raw images and brain masks), one dataset per draw."""
    from itermask_auto.evaluation.synthetic import make_synthetic_dataset
    from itermask_auto.utilities.dataset import find_dataset
    split = json.loads((fold / "splits.json").read_text())   # the fold's own split (a list of folds in older ones)
    val = sorted(split[int(fold.name.split("_")[-1])]["val"] if isinstance(split, list) else split["val"])
    out = {}
    for name, (dataset_id, n_lesions, radius) in DRAWS.items():
        root = work / "raw"
        if any(root.glob(f"Dataset{dataset_id:03d}_*")):   # drawn by an earlier run
            out[name] = find_dataset(root, dataset_id)
        else:
            out[name] = make_synthetic_dataset(raw_dataset, dataset_id, f"ValidationBlobs_{name}", ["lesion"],
                                               seed=seed, raw_root=root, split="Tr", cases=val, lesion_masks="none",
                                               n_lesions=n_lesions, blob_radius=radius)
    return out


def score_set(predictor, images: Path, masks: Path, labels: Path) -> Dict[str, float]:
    """Pooled AUPRC of each readout over the labelled cases of a folder (input geometry, inside the brain masks)."""
    from itermask_auto.evaluation.metrics import average_precision
    tau_units = predictor.calibration.get("itermask2_tau")
    values: Dict[str, List[np.ndarray]] = {}
    truths = []
    for case, result, in_brain_values, truth in labelled_cases(predictor, images, masks, labels):
        unit = result.tau / tau_units if tau_units else 1.0
        truths.append(truth)
        for name, volume in readouts(result.anomaly_map, result.first_error, result.final_mask, result.tau,
                                     unit).items():
            values.setdefault(name, []).append(in_brain_values(volume))
        print(f"  {len(truths)} {case}: tau {result.tau:.4g}, final mask {result.final_mask.mean():.4f}", flush=True)
    truth = np.concatenate(truths)
    return {name: average_precision(np.concatenate(parts), truth) for name, parts in values.items()}


def choose(scores: Dict[str, Dict[str, float]]) -> str:
    """The rule of the module docstring."""
    base_large, base_small = scores["large"]["last_pass"], scores["small"]["last_pass"]
    ok = [k for k in scores["large"] if k != "first_pass"
          and scores["large"][k] >= base_large + MIN_GAIN and scores["small"][k] >= base_small - MAX_LOSS]
    return max(ok, key=lambda k: scores["large"][k]) if ok else "last_pass"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fold", type=Path)
    p.add_argument("--raw", type=Path, required=True, help="the fold's raw dataset (imagesTr, masksTr)")
    p.add_argument("--work", type=Path, required=True, help="folder for the validation draws")
    p.add_argument("--seed", type=int, default=1, help="lesion seed (the real-data test sets use 0)")
    p.add_argument("--test", type=Path, nargs=3, action="append", default=[], metavar=("IMAGES", "MASKS", "LABELS"),
                   help="a labelled test set scored for the record (not used by the choice); repeatable")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    from itermask_auto.inference.predictor import Predictor
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_model_folder(args.fold)
    # the candidates are built from the last pass's map, whatever the fold's plan exports
    predictor.plans.inference = dataclasses.replace(predictor.plans.inference, map_readout="last_pass")
    draws = draw_validation_lesions(args.fold, args.raw, args.work, args.seed)
    scores = {}
    for name, ds in draws.items():
        print(f"validation draw '{name}' ({ds.name}):", flush=True)
        scores[name] = score_set(predictor, ds / "imagesTs", ds / "masksTs", ds / "labelsTs")
    for i, (images, masks, labels) in enumerate(args.test):
        print(f"test set {images.parent.name} (for the record, not used by the choice):", flush=True)
        scores[f"test{i}:{images.parent.name}"] = score_set(predictor, images, masks, labels)
    names = list(scores)
    print("\n| readout | " + " | ".join(f"AUPRC {n}" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for k in scores["large"]:
        print(f"| {k} | " + " | ".join(f"{scores[n][k]:.4f}" for n in names) + " |")
    chosen = choose(scores)
    print(f"\nchosen by the validation draws: {chosen}")
    (args.work / "readout_choice.json").write_text(json.dumps({"scores": scores, "chosen": chosen}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
