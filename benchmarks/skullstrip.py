"""Benchmark the offline skull stripper on IXI T1 2 mm scans against their given brain masks.

    python benchmarks/skullstrip.py --data /work/shared/data/ixi_t1_2mm [--n N] [--threads 2] [--csv out.csv]

The reference masks are only read to score the result; the stripper sees the T1 image alone.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without `pip install -e .`
from itermask_auto.imageio.reader import read_image, read_mask  # noqa: E402
from itermask_auto.preprocessing.skull_strip import SkullStripper, looks_skull_stripped  # noqa: E402


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/ixi_t1_2mm"),
                        help="folder with images/*_T1.nii.gz and brainmasks/*_brainmask.nii.gz")
    parser.add_argument("--n", type=int, default=None, help="first N scans only (default: all)")
    parser.add_argument("--skip", type=int, default=0, help="skip the first K scans (to split a run)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threshold", type=float, default=0.5, help="deepbet probability threshold")
    parser.add_argument("--n_dilate", type=int, default=0, help="deepbet mask dilation (voxels, <0 erodes)")
    parser.add_argument("--csv", type=Path, default=None, help="write per-case results here")
    args = parser.parse_args(argv)

    images = sorted((args.data / "images").glob("*_T1.nii.gz"))
    if not images or not (args.data / "brainmasks").is_dir():
        print(f"error: no IXI data at {args.data} (expected images/*_T1.nii.gz and brainmasks/)", file=sys.stderr)
        return 2
    images = (images[: args.n] if args.n else images)[args.skip:]

    t0 = time.perf_counter()
    stripper = SkullStripper(device=args.device, threads=args.threads, threshold=args.threshold,
                             n_dilate=args.n_dilate)
    print(f"model loaded in {time.perf_counter() - t0:.1f} s")
    rows = []
    out = None
    if args.csv:  # written row by row so an interrupted run keeps what it measured
        out = open(args.csv, "w", newline="")
        writer = csv.DictWriter(out, fieldnames=["case", "dice", "seconds", "looks_stripped"])
        writer.writeheader()
    bar = tqdm(images, unit="scan")
    for path in bar:
        case = path.name[: -len("_T1.nii.gz")]
        image = read_image(path)
        reference = read_mask(args.data / "brainmasks" / f"{case}_brainmask.nii.gz", image)
        stripped, _ = looks_skull_stripped(sitk.GetArrayViewFromImage(image), image.GetSpacing()[::-1])
        t = time.perf_counter()
        mask = stripper.brain_mask(image, source_path=path)
        seconds = time.perf_counter() - t
        d = dice(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(reference) > 0)
        rows.append({"case": case, "dice": d, "seconds": seconds, "looks_stripped": stripped})
        if out:
            writer.writerow(rows[-1])
            out.flush()
        bar.set_postfix(dice=f"{d:.3f}", s=f"{seconds:.1f}")

    if out:
        out.close()
    dices = np.array([r["dice"] for r in rows])
    worst = rows[int(dices.argmin())]["case"]
    n_flagged = sum(r["looks_stripped"] for r in rows)
    print(f"looks_skull_stripped said True for {n_flagged}/{len(rows)} raw scans (should be 0)")
    print(f"worst case {worst}")
    print(f"median Dice {np.median(dices):.4f} (min {dices.min():.4f}, n={len(rows)}), "
          f"s/volume {np.median([r['seconds'] for r in rows]):.2f} (median; mean "
          f"{np.mean([r['seconds'] for r in rows]):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
