"""Which unit keeps one calibrated τ right for every healthy scan? (issue 17: `inference.tau_scale`)

For each healthy validation case of a trained itermask3d fold (the masks it was preprocessed with) and any extra
healthy scans given, finds the scan's own α-τ (the τ whose shrink, from the whole brain, leaves α of that scan's
brain masked; geometric bisection in [0.1, 3] over --steps shrinks) and the statistics of its first-pass
(whole-brain-masked) error. Prints, for each candidate unit (absolute, median, mean, 90/95/99th percentile, the
median of the high-pass squared error `hf_median` = the plan's `hf_median_error`), the
spread (std of log) of own-τ / unit over the validation cases, and for each extra scan its own-τ / unit against
the validation median (1 = one τ in that unit fits it). No label is read. About a minute per IXI scan on 2 cores.

    python benchmarks/tau_unit_spread.py FOLD_DIR [--extra NAME=IMAGE[:MASK] ...] [--steps 7] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

UNITS = ("absolute", "median", "mean", "q90", "q95", "q99", "hf_median")


def own_tau(predictor, data, hf, region, alpha: float, steps: int) -> tuple[float, np.ndarray, float]:
    """(the scan's α-τ, its first-pass errors in the region, its `hf_median_error` unit)."""
    from itermask_auto.methods.itermask3d.procedure import error_scale
    from itermask_auto.methods.masked_reconstruction.procedures import shrink, squared_error
    plan = predictor.plans.inference
    first = predictor.spec.reconstructor(predictor, data, hf, plan)(region)
    lo, hi = 0.1, 3.0
    for _ in range(steps):
        mid = float(np.sqrt(lo * hi))
        sh = shrink(predictor.spec.reconstructor(predictor, data, hf, plan), data, region, mid,
                    plan.convergence_tolerance, plan.max_shrink_passes, first_recon=first)
        lo, hi = (mid, hi) if sh.mask.sum() > alpha * region.sum() else (lo, mid)
    return (float(np.sqrt(lo * hi)), squared_error(data, first, region)[region],
            error_scale(data, first, region, "hf_median_error", plan))


def unit_of(row: dict, unit: str) -> float:
    return 1.0 if unit == "absolute" else row[unit]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fold", type=Path)
    p.add_argument("--extra", nargs="*", default=[], help="NAME=IMAGE[:MASK] healthy scans outside the fold")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    from itermask_auto.preprocessing.storage import load_case
    predictor = Predictor.from_model_folder(args.fold)
    cal = predictor.calibration or {}
    if "data_folder" not in cal:
        raise SystemExit(f"{args.fold}: no calibration.json with its validation cases; calibrate the fold first")
    alpha, data_folder = float(cal["alpha"]), Path(cal["data_folder"])
    cases = [c for c in cal["cases"] if "@" not in c]   # the masks the fold was preprocessed with

    def scans():
        for case in cases:
            data, hf, brain, _ = load_case(data_folder, case)
            yield case, data, hf, brain
        for item in args.extra:
            name, paths = item.split("=", 1)
            image, _, mask = paths.partition(":")
            data, hf, brain, _ = preprocess_case([Path(image)], predictor.plans, predictor.configuration,
                                                 Path(mask) if mask else None)
            yield name, data, hf, brain

    rows = {}
    for name, data, hf, brain in scans():
        start = time.perf_counter()
        tau, errors, hf_median = own_tau(predictor, data, hf, predictor.scoring_region(brain), alpha, args.steps)
        rows[name] = {"own_tau": tau, "median": float(np.median(errors)), "mean": float(errors.mean()),
                      "hf_median": hf_median,
                      **{f"q{q}": float(np.quantile(errors, q / 100)) for q in (90, 95, 99)}}
        print(name, {k: round(v, 4) for k, v in rows[name].items()}, f"{time.perf_counter() - start:.0f} s",
              flush=True)
    extras = [n for n in rows if n not in cases]
    for unit in UNITS:
        ratios = np.array([rows[c]["own_tau"] / unit_of(rows[c], unit) for c in cases])
        spread = np.std(np.log(ratios))
        line = f"{unit:9s} spread (std of log own-tau/unit), {len(cases)} validation cases: {spread:.3f}"
        for name in extras:
            fit = rows[name]["own_tau"] / unit_of(rows[name], unit) / np.median(ratios)
            line += f"; {name}: own tau / validation median {fit:.2f}"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
