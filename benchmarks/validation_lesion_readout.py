"""How a masked-reconstruction fold's map ranks synthetic lesions made on its OWN healthy validation scans, read out
three ways from one inference. No test set and no real lesion label is read: the lesions are generated blobs.

For fold 0 of a trained itermask3d (or itermask2 / oneshot) fold, writes a synthetic dataset on the fold's
validation cases (`make_synthetic_dataset`, the real-data benchmark's large-lesion rule: 1-2 blobs of radius
10-25 mm, its intensity rule, --seed), predicts each case once with the fold's calibrated plan and prints the
pooled voxel AUPRC / AUROC inside the given brain masks for:
  last_masked     the shipped map: each voxel's error in the last pass in which it was still masked
  first_pass      the first pass alone (whole brain masked: oneshot's map on the same network and region)
  first_in_final  the first pass's error inside the final mask, the last-masked error elsewhere
                  (the shrink only lowers voxels it proved normal; final mask == {map > tau} still holds)
The validation scans calibrated the fold's thresholds, so the draw is not held out in every respect; AUPRC does
not depend on a threshold.

    python benchmarks/validation_lesion_readout.py FOLD_DIR RAW_DATASET [--seed 7] [--work_dir DIR] [--threads 2]
RAW_DATASET: the raw training dataset (imagesTr, masksTr if any) the fold's cases come from.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

READOUTS = ("last_masked", "first_pass", "first_in_final")


def readouts(result) -> Dict[str, np.ndarray]:
    """The three maps of one InferenceResult (preprocessed grid)."""
    first = result.first_error if result.first_error is not None else result.anomaly_map
    return {"last_masked": result.anomaly_map, "first_pass": first,
            "first_in_final": np.where(result.final_mask, first, result.anomaly_map)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fold_dir", type=Path)
    p.add_argument("raw_dataset", type=Path)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/validation_lesion_readout"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import SimpleITK as sitk
    import torch
    from benchmarks.real_data import LARGE_BLOB_RADIUS_MM, LARGE_N_LESIONS
    from itermask_auto.evaluation.metrics import auroc, average_precision
    from itermask_auto.evaluation.synthetic import make_synthetic_dataset
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.export import to_original_geometry
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    torch.set_num_threads(args.threads)

    val = json.loads((args.fold_dir / "splits.json").read_text())["val"]
    synthetic = args.work_dir / f"seed{args.seed}"
    found = sorted(synthetic.glob("Dataset*")) if synthetic.is_dir() else []
    dataset = found[0] if found else make_synthetic_dataset(
        args.raw_dataset, 990, "ValidationLargeLesions", ["lesion"], seed=args.seed, raw_root=synthetic, split="Tr",
        cases=val, lesion_masks="none", n_lesions=LARGE_N_LESIONS, blob_radius=LARGE_BLOB_RADIUS_MM)
    predictor = Predictor.from_model_folder(args.fold_dir)
    pooled: Dict[str, List[np.ndarray]] = {name: [] for name in READOUTS}
    truth: List[np.ndarray] = []
    start = time.time()
    for label_path in sorted((dataset / "labelsTs").glob("*.nii.gz")):
        case = label_path.name[:-len(".nii.gz")]
        brain_path = dataset / "masksTs" / label_path.name
        brain_path = brain_path if brain_path.is_file() else None   # no given mask: the pipeline's own brain
        data, hf, brain, props = preprocess_case([dataset / "imagesTs" / f"{case}_0000.nii.gz"], predictor.plans,
                                                 predictor.configuration, brain_path)
        prediction = predictor.predict_arrays(data, hf, brain)
        evaluated = sitk.GetArrayFromImage(sitk.ReadImage(str(brain_path)) if brain_path else
                                           to_original_geometry(brain.astype(np.uint8), props, order=0)) > 0
        for name, volume in readouts(prediction.result).items():
            image = to_original_geometry(volume.astype(np.float32), props, order=1)
            pooled[name].append(sitk.GetArrayFromImage(image)[evaluated])
        truth.append(sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))[evaluated] > 0)
        print(f"{case}: {prediction.result.passes} passes, final mask {prediction.result.final_mask.mean():.4f} "
              f"of the grid ({time.time() - start:.0f} s)", flush=True)
    labels = np.concatenate(truth)
    print(f"\n{len(truth)} validation scans with synthetic lesions (seed {args.seed}), lesion voxels "
          f"{labels.mean():.4%} of the evaluated brain; fold {args.fold_dir}")
    print("| readout | pooled AUPRC | pooled AUROC |\n|---|---|---|")
    for name in READOUTS:
        values = np.concatenate(pooled[name])
        print(f"| {name} | {average_precision(values, labels):.4f} | {auroc(values, labels):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
