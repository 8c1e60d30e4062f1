"""IterMask3D's own final mask after a short CPU training on phantoms (issue 4's acceptance, with figures).

Writes healthy phantoms, plans and preprocesses them (cpu profile), trains fold 0 for --epochs × --iterations,
calibrates on the fold's healthy validation phantoms (γ, voxel threshold), then predicts new phantoms - two
healthy, two with easy lesions (contrast +1.0 × white matter), one with a fainter lesion (+0.5) - and prints per
case: τ, passes, the final mask as a fraction of the brain, and its Dice (and the voxel-threshold Dice) against
the label. Labels are read only for these printed scores.

    python benchmarks/phantom_final_mask.py --work_dir /tmp/pfm [--spacing 4] [--epochs 12] [--iterations 30]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GRIDS = {3.0: (48, 56, 44), 4.0: (36, 42, 33)}   # x, y, z: a whole phantom head
ANATOMY_SCALE = 0.813                             # what write_phantom_dataset fits to both grids
TEST_CASES = (("healthy_a", 501, 0, 1.0), ("healthy_b", 502, 0, 1.0), ("lesion_a", 701, 2, 1.0),
              ("lesion_b", 702, 1, 1.0), ("lesion_faint", 703, 2, 0.5))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dir", type=Path, required=True)
    p.add_argument("--spacing", type=float, default=4.0, choices=sorted(GRIDS))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--iterations", type=int, default=30)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work_dir.resolve()
    for name in ("raw", "preprocessed", "results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        os.environ[f"ITERMASK_{name}"] = str(work / name)
    import SimpleITK as sitk

    from itermask_auto.dataset_conversion.phantom import make_phantom, write_phantom_dataset
    from itermask_auto.experiment_planning.api import plan_and_preprocess
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.export import to_original_geometry
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    from itermask_auto.training.api import run_training

    size, spacing = GRIDS[args.spacing], (args.spacing,) * 3
    start = time.perf_counter()
    write_phantom_dataset(work / "raw", 980, "EasyPhantom", n_train=10, n_test_healthy=0, n_test_lesion=0,
                          size=size, spacing=spacing, anatomy_scale=ANATOMY_SCALE)
    plan_and_preprocess(980, configurations=("3d",), num_processes=1, profile="cpu")
    fold = Path(run_training(980, "3d", fold=0, device="cpu", epochs=args.epochs, iterations=args.iterations))
    cal = json.loads((fold / "calibration.json").read_text())
    print(f"trained + calibrated in {time.perf_counter() - start:.0f} s; gamma {cal['gamma']:.4g} "
          f"(reference {cal['gamma_reference']}), voxel threshold {cal['voxel_threshold']:.3f}, healthy validation "
          f"final mask median {100 * cal['final_mask_fraction_summary']['q0.5']:.2f} % of the brain")
    predictor = Predictor.from_model_folder(fold)
    print("| case | lesion voxels | tau | passes | final mask % of brain | Dice final mask | Dice voxel threshold |")
    print("|---|---|---|---|---|---|---|")
    for case, seed, n_lesions, contrast in TEST_CASES:
        ph = make_phantom(seed, size=size, spacing=spacing, skull=False, n_lesions=n_lesions,
                          lesion_radius_mm=(8.0, 12.0), lesion_contrast=contrast, anatomy_scale=ANATOMY_SCALE)
        image, mask = work / f"{case}_0000.nii.gz", work / f"{case}_mask.nii.gz"
        sitk.WriteImage(ph.image, str(image))
        sitk.WriteImage(ph.brain_mask, str(mask))
        data, hf, brain, props = preprocess_case([image], predictor.plans, "3d", mask)
        result, stats = predictor.infer(data, hf, brain)
        label = sitk.GetArrayFromImage(ph.label) > 0
        back = lambda m: sitk.GetArrayFromImage(to_original_geometry(m.astype(np.uint8), props, order=0)) > 0  # noqa
        final = back(result.final_mask)
        thresholded = back((result.anomaly_map > cal["voxel_threshold"]) & brain)
        scores = (f"{dice(final, label):.3f} | {dice(thresholded, label):.3f}" if label.any() else "- | -")
        print(f"| {case} | {int(label.sum())} | {result.tau:.3f} | {stats['network_passes']} | "
              f"{100 * result.final_mask.sum() / brain.sum():.2f} | {scores} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
