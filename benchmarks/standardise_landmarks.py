"""Label-free intensity standardisation of test scans to a training set's in-brain landmarks (an experiment).

Each test scan's in-brain intensities, z-scored, are mapped piecewise-linearly from their own percentile
landmarks onto the mean landmarks of N training scans (linear beyond the outer ones), then written back on the
scan's own scale; predict the written folder as usual. Only images and brain masks are read, never a label.

    python benchmarks/standardise_landmarks.py --train IMAGES_TR MASKS_TR --test IMAGES_TS MASKS_TS \
        --out FOLDER [--n_train 20]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

LANDMARKS = np.array([1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99])


def read(image: Path, mask: Path):
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(image))).astype(np.float64)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(mask))) > 0
    mean, std = values[brain].mean(), values[brain].std()
    return values, mean, std, (np.percentile(values[brain], LANDMARKS) - mean) / std


def map_piecewise_linear(z: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    mapped = np.interp(z, source, target)
    low, high = z < source[0], z > source[-1]
    mapped[low] = target[0] + (z[low] - source[0]) * (target[1] - target[0]) / (source[1] - source[0])
    mapped[high] = target[-1] + (z[high] - source[-1]) * (target[-1] - target[-2]) / (source[-1] - source[-2])
    return mapped


def cases(images: Path, masks: Path):
    for image in sorted(images.glob("*_0000.nii.gz")):
        yield image, masks / f"{image.name[:-len('_0000.nii.gz')]}.nii.gz"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", nargs=2, required=True, type=Path, metavar=("IMAGES", "MASKS"))
    p.add_argument("--test", nargs=2, required=True, type=Path, metavar=("IMAGES", "MASKS"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n_train", type=int, default=20)
    args = p.parse_args()
    target = np.mean([read(i, m)[3] for i, m in list(cases(*args.train))[:args.n_train]], axis=0)
    args.out.mkdir(parents=True, exist_ok=True)
    for image, mask in cases(*args.test):
        values, mean, std, source = read(image, mask)
        mapped = map_piecewise_linear((values - mean) / std, source, target) * std + mean
        out = sitk.GetImageFromArray(mapped.astype(np.float32))
        out.CopyInformation(sitk.ReadImage(str(image)))
        sitk.WriteImage(out, str(args.out / image.name))
        print(f"{image.name}: landmarks p5/p50/p95/p99 {np.round(source[[2, 7, 12, 14]], 2)} -> "
              f"{np.round(target[[2, 7, 12, 14]], 2)}")


if __name__ == "__main__":
    main()
