"""Where a method's false positives lie: distance from the brain's edge and intensity of the tissue under them.

For each case with a `CASE_seg` map in PRED, the segmented voxels outside the expert label and inside the brain
mask are binned by their distance to the edge of the brain mask (0–4 mm, 4–8 mm, deeper) and their image
intensity is compared with the brain's (median, as a fraction of the brain's 90th percentile). A rim effect shows
as most false positives within a few mm of the edge; a shift of the intensity distribution shows as false
positives on tissue of one intensity class. Labels are read only for these printed figures.

    python benchmarks/false_positive_location.py --pred PRED --images IMAGES --masks MASKS [--labels LABELS]

IMAGES holds CASE_0000 files (channel 0 is used), LABELS and MASKS hold CASE files (nnU-Net naming); everything
is resampled (nearest neighbour for masks, linear for the image) onto the prediction's grid.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RIM_BINS_MM = (4.0, 8.0)


def find(folder: Path, stem: str) -> Path:
    """FOLDER/STEM with any ending itermask_predict accepts (its own lookup), or an error naming what is missing."""
    from itermask_auto.inference.input_listing import INPUT_ENDINGS
    from itermask_auto.inference.predict_folder import find_mask
    found = find_mask(folder, stem)
    if found is None:
        raise FileNotFoundError(f"no {stem}{{{','.join(INPUT_ENDINGS)}}} in {folder}")
    return found


def on_grid(path: Path, grid: sitk.Image, interpolator) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(str(path)), grid, sitk.Transform(), interpolator))


def false_positive_location(seg_path: Path, image: Path, label: Optional[Path], brain_mask: Path) -> dict:
    grid = sitk.ReadImage(str(seg_path))
    seg = sitk.GetArrayFromImage(grid) > 0
    lesion = on_grid(label, grid, sitk.sitkNearestNeighbor) > 0 if label else np.zeros_like(seg)
    brain = on_grid(brain_mask, grid, sitk.sitkNearestNeighbor) > 0
    intensity = on_grid(image, grid, sitk.sitkLinear).astype(np.float32)
    depth_mm = ndimage.distance_transform_edt(brain, sampling=grid.GetSpacing()[::-1])
    false_pos = seg & brain & ~lesion
    n_fp = max(int(false_pos.sum()), 1)
    near, mid = RIM_BINS_MM
    p90 = float(np.percentile(intensity[brain], 90))
    return {"voxel_fpr": float(false_pos.sum() / max((brain & ~lesion).sum(), 1)),
            f"fp_within_{near:g}mm": float((false_pos & (depth_mm <= near)).sum() / n_fp),
            f"fp_{near:g}_{mid:g}mm": float((false_pos & (depth_mm > near) & (depth_mm <= mid)).sum() / n_fp),
            f"fp_deeper_{mid:g}mm": float((false_pos & (depth_mm > mid)).sum() / n_fp),
            "fp_intensity_median": float(np.median(intensity[false_pos]) / p90) if false_pos.any() else float("nan"),
            "brain_intensity_median": float(np.median(intensity[brain]) / p90)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--labels", type=Path,
                   help="expert labels; omit for healthy scans (every segmented voxel is a false positive)")
    p.add_argument("--masks", required=True, type=Path)
    args = p.parse_args()
    segs = sorted(args.pred.glob("*_seg.nii.gz"))
    if not segs:
        raise SystemExit(f"no *_seg.nii.gz in {args.pred}")
    near, mid = RIM_BINS_MM
    print(f"| case | voxel FPR | FP within {near:g} mm | {near:g}-{mid:g} mm | deeper | FP intensity median | "
          f"brain intensity median |")
    print("|---|---|---|---|---|---|---|")
    for seg in segs:
        case = seg.name[:-len("_seg.nii.gz")]
        label = find(args.labels, case) if args.labels else None
        r = false_positive_location(seg, find(args.images, f"{case}_0000"), label, find(args.masks, case))
        values = list(r.values())
        print(f"| {case} | {values[0]:.4f} | " + " | ".join(f"{v:.2f}" for v in values[1:]) + " |")


if __name__ == "__main__":
    main()
