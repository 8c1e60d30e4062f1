"""DIAGNOSIS ONLY — READS TEST LABELS. How each map a method offers ranks the lesion voxels of a labelled test set.

Nothing in the pipeline reads this script's output, and no setting may be chosen from it: every figure it prints
that depends on a threshold is a best-on-test value, an UPPER BOUND, to be shown only beside the honest
healthy-calibrated figure (benchmarks/real_data.py). It answers "could any threshold on this map reach the target?"
(issue 14: sadm's stage-2 probability could not reach MSLUB Dice 0.10 at any threshold; docs/benchmarks.md).

For a trained fold and a test folder (CASE_0000 images, CASE brain masks, CASE labels, nnU-Net naming; one-channel
plans), predicts each case, brings every map of `InferenceResult.maps` (else the anomaly map) back to the input's
geometry and prints per case and map the in-brain AUROC and AUPRC, then per map the pooled AUPRC, AUROC and the
best-on-test Dice (upper bound) with the fraction of the brain it marks. The maps of `InferenceResult.maps` are the
method's own, before the engine's postprocessing (the plan's map_median_mm; 0, none, in the planned recipes); the
fallback anomaly map is the postprocessed one.

    python benchmarks/map_ranking_on_labels.py FOLD_DIR -i IMAGES -masks MASKS -labels LABELS [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_dice_upper_bound(values: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(best Dice over every threshold, fraction of voxels marked there): best-on-test, an upper bound."""
    order = np.argsort(-values, kind="stable")
    tp = np.cumsum(truth[order])
    marked = np.arange(1, values.size + 1)
    dice = 2 * tp / (marked + truth.sum())
    k = int(np.argmax(dice))
    return float(dice[k]), float((k + 1) / values.size)


def labelled_cases(predictor, images: Path, masks: Path,
                   labels: Path) -> Iterator[Tuple[str, Any, Callable, np.ndarray]]:
    """Per CASE_0000 image of `images`: (case, the fold's InferenceResult on the preprocessed grid, a function taking
    a map on that grid to its in-brain values in the input's geometry, the in-brain truth). Brain masks from
    `masks`/CASE.nii.gz (preprocessing and scoring), labels from `labels`/CASE.nii.gz."""
    import SimpleITK as sitk

    from itermask_auto.preprocessing.export import to_original_geometry
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    for image in sorted(images.glob("*_0000.nii.gz")):
        case = image.name[:-len("_0000.nii.gz")]
        mask = masks / f"{case}.nii.gz"
        data, hf, brain, props = preprocess_case([image], predictor.plans, predictor.configuration, mask)
        result, _ = predictor.infer(data, hf, brain)
        in_brain = sitk.GetArrayFromImage(sitk.ReadImage(str(mask))) > 0
        truth = (sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{case}.nii.gz"))) > 0)[in_brain]

        def in_brain_values(volume: np.ndarray, props=props, in_brain=in_brain) -> np.ndarray:
            original = to_original_geometry(volume.astype(np.float32), props, order=1)
            return sitk.GetArrayFromImage(original)[in_brain]
        yield case, result, in_brain_values, truth


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fold", type=Path)
    p.add_argument("-i", "--images", type=Path, required=True)
    p.add_argument("-masks", type=Path, required=True)
    p.add_argument("-labels", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    from itermask_auto.evaluation.metrics import auroc, average_precision
    from itermask_auto.inference.predictor import Predictor
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_model_folder(args.fold)
    values: Dict[str, List[np.ndarray]] = {}
    truths: List[np.ndarray] = []
    print("| case | map | AUROC | AUPRC |\n|---|---|---|---|")
    for case, result, in_brain_values, truth in labelled_cases(predictor, args.images, args.masks, args.labels):
        truths.append(truth)
        for name, volume in (result.maps or {"anomaly_map": result.anomaly_map}).items():
            scored = in_brain_values(volume)
            values.setdefault(name, []).append(scored)
            if truth.any():
                print(f"| {case} | {name} | {auroc(scored, truth):.3f} | {average_precision(scored, truth):.3f} |")
    truth = np.concatenate(truths)
    print("\n| map | pooled AUPRC | pooled AUROC | best-on-test Dice (UPPER BOUND) | brain marked there |")
    print("|---|---|---|---|---|")
    for name, parts in values.items():
        pooled = np.concatenate(parts)
        dice, marked = best_dice_upper_bound(pooled, truth)
        print(f"| {name} | {average_precision(pooled, truth):.3f} | {auroc(pooled, truth):.3f} | "
              f"{dice:.3f} | {100 * marked:.2f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
