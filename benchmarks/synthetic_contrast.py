"""Local contrast of the synthetic lesions (itermask_synthetic's rule) on healthy T1 scans, with the white-matter
placement and with placement anywhere in the brain.

    python benchmarks/synthetic_contrast.py --dataset $ITERMASK_raw/Dataset001_IXI_T1 \
        --masks ../shared/data/mslub_mni/lesion_masks_all_patients [--n 8]

Contrast of one lesion component = (mean of its 2-voxel shell - mean of the lesion) / mean of the shell, on the
written image; the shell excludes other lesions and non-brain. Prints median, quartiles and the share below 0.1.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without `pip install -e .`
from itermask_auto.evaluation import synthetic_lesions  # noqa: E402

TEST_PATIENTS = ("patient07", "patient19", "patient26")   # real_data.py's MSLUB test cases: never used as shapes


def lesion_contrasts(image: np.ndarray, label: np.ndarray, brain: np.ndarray) -> list[float]:
    lab, n = ndimage.label(label, structure=np.ones((3, 3, 3)))
    out = []
    for k in range(1, n + 1):
        lesion = lab == k
        shell = ndimage.binary_dilation(lesion, iterations=2) & ~label & brain
        if shell.any():
            out.append(float((image[shell].mean() - image[lesion].mean()) / image[shell].mean()))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True, help="raw dataset with imagesTr/ and masksTr/ (T1)")
    p.add_argument("--masks", type=Path, required=True, help="folder of lesion masks (shapes)")
    p.add_argument("--n", type=int, default=8, help="scans: every 5th of the sorted training images")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    masks = sorted(m for m in args.masks.glob("*.nii.gz") if not m.name.startswith(TEST_PATIENTS))
    components = synthetic_lesions.load_lesion_components(masks)
    scans = sorted((args.dataset / "imagesTr").glob("*_0000.nii.gz"))[::5][:args.n]
    for placement in ("anywhere in the brain", "white matter"):
        contrasts = []
        for i, path in enumerate(scans):
            ref = sitk.ReadImage(str(path))
            x = sitk.GetArrayFromImage(ref).astype(np.float32)
            mask = args.dataset / "masksTr" / path.name.replace("_0000.nii.gz", ".nii.gz")
            brain = sitk.GetArrayFromImage(sitk.ReadImage(str(mask))) > 0
            out, label, _ = synthetic_lesions.insert_lesions([x], ["T1"], brain, ref, np.random.default_rng(i),
                                                             components, white_matter=placement == "white matter")
            contrasts += lesion_contrasts(out[0], label, brain)
        c = np.array(contrasts)
        print(f"{placement}: {len(scans)} scans, {c.size} lesions, contrast median {np.median(c):.3f} "
              f"(quartiles {np.percentile(c, 25):.3f}-{np.percentile(c, 75):.3f}), below 0.1: {np.mean(c < 0.1):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
