"""In-brain intensity percentiles after a plan's preprocessing, to compare test scans with the training data.

A model trained on one site sees another site's scans through its own normalisation; when the percentiles of the
normalised brain differ (e.g. a compressed upper tail: another grey/white contrast), the network's errors rise
everywhere, not only in lesions. Prints one row per case, for every folder given.

    python benchmarks/intensity_shift.py --plans PREPROCESSED/DatasetXXX/itermask_plans.json [-c 2d] \
        --cases IMAGES MASKS [--cases IMAGES2 MASKS2 ...] [--limit 4]

IMAGES holds CASE_0000 files (nnU-Net naming; one-channel plans), MASKS the brain masks named CASE.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def normalised_brain_percentiles(image: Path, mask: Path, plans, configuration: str) -> np.ndarray:
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    data, _, brain, _ = preprocess_case([image], plans, configuration, mask)
    return np.percentile(data[0][brain], PERCENTILES)


def main() -> None:
    from itermask_auto.experiment_planning.plans import Plans
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", required=True, type=Path)
    p.add_argument("-c", "--configuration", default="2d")
    p.add_argument("--cases", nargs=2, action="append", required=True, metavar=("IMAGES", "MASKS"), type=Path)
    p.add_argument("--limit", type=int, default=0, help="at most this many cases per folder (0: all)")
    args = p.parse_args()
    plans = Plans.from_dict(json.loads(args.plans.read_text()))
    print("| case | " + " | ".join(f"p{q}" for q in PERCENTILES) + " |")
    print("|---|" + "---|" * len(PERCENTILES))
    for images, masks in args.cases:
        found = sorted(images.glob("*_0000.nii.gz"))
        for image in found[:args.limit or len(found)]:
            case = image.name[:-len("_0000.nii.gz")]
            values = normalised_brain_percentiles(image, masks / f"{case}.nii.gz", plans, args.configuration)
            print(f"| {case} | " + " | ".join(f"{v:.2f}" for v in values) + " |")


if __name__ == "__main__":
    main()
