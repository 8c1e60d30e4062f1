"""Does one healthy-calibrated voxel threshold hold on a new healthy scan? (issue 14: which sadm map to plan)

For a trained, calibrated fold (any method) and every map its inference offers (`InferenceResult.maps`; else its
anomaly map), leave-one-out over the fold's healthy validation cases: the voxel threshold at α from the OTHER
validation scans' pooled map values (calibration's own rule: `leave_one_out_fpr`), then the left-out scan's voxel
false-positive rate at it — what a new healthy scan from the training site meets. Extra healthy scans (e.g. from
another site: `--extra IXI002=IMAGE:MASK`) are scored at the threshold of all validation scans. Prints per map the
median, 90th percentile and max of FPR / α over the left-out scans, the share outside [0.5 α, 1.5 α], the mean
|log(FPR / α)| (`threshold_transfer_error`: what sadm's `anomaly_map auto` minimises), and each extra scan's
FPR / α. No label is read. About 3 s per IXI scan for sadm on 2 cores.

    python benchmarks/healthy_threshold_transfer.py FOLD_DIR [--extra NAME=IMAGE[:MASK] ...] [--alpha A]
                                                    [--json OUT.json]
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


def maps_of(predictor, data, hf, brain) -> Dict[str, np.ndarray]:
    """{map name: values in the scoring region} of one scan, each through the engine's postprocessing as
    calibration would score it (the anomaly map under "anomaly_map" when the method offers no named maps)."""
    result, _ = predictor.infer(data, hf, brain)
    region = predictor.scoring_region(brain)
    if not result.maps:
        return {"anomaly_map": result.anomaly_map[region].astype(np.float32)}
    return {name: predictor.postprocess(dataclasses.replace(result, anomaly_map=np.asarray(values, np.float32)),
                                        region).anomaly_map[region] for name, values in result.maps.items()}


def transfer_summary(fpr: np.ndarray, alpha: float) -> Dict[str, float]:
    from itermask_auto.calibration.thresholds import threshold_transfer_error
    ratio = fpr / alpha
    return {"median": float(np.median(ratio)), "p90": float(np.quantile(ratio, 0.9)), "max": float(ratio.max()),
            "outside_band": float(np.mean((ratio < 0.5) | (ratio > 1.5))),
            "mean_abs_log": threshold_transfer_error(fpr, alpha)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fold", type=Path)
    p.add_argument("--extra", nargs="*", default=[], help="NAME=IMAGE[:MASK] healthy scans outside the fold")
    p.add_argument("--alpha", type=float, default=None, help="healthy voxel FPR (default: the fold's calibrated α)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from itermask_auto.calibration.thresholds import leave_one_out_fpr, voxel_threshold
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    from itermask_auto.preprocessing.storage import load_case
    predictor = Predictor.from_model_folder(args.fold)
    cal = predictor.calibration or {}
    if "data_folder" not in cal:
        raise SystemExit(f"{args.fold}: no calibration.json with its validation cases; calibrate the fold first")
    alpha = float(args.alpha if args.alpha is not None else cal["alpha"])
    cases = [c for c in cal["cases"] if "@" not in c]   # the masks the fold was preprocessed with
    per_map: Dict[str, List[np.ndarray]] = {}
    for case in cases:
        data, hf, brain, _ = load_case(Path(cal["data_folder"]), case)
        for name, values in maps_of(predictor, data, hf, brain).items():
            per_map.setdefault(name, []).append(values)
        print(f"  scored {case}", flush=True)
    report: Dict[str, Dict] = {}
    for name, values in per_map.items():
        fpr = leave_one_out_fpr(values, alpha)
        report[name] = {"leave_one_out": transfer_summary(fpr, alpha), "per_case_fpr": dict(zip(cases, fpr.tolist())),
                        "threshold": voxel_threshold(np.concatenate(values), alpha), "extra": {}}
    for item in args.extra:
        label, paths = item.split("=", 1)
        image, _, mask = paths.partition(":")
        data, hf, brain, _ = preprocess_case([Path(image)], predictor.plans, predictor.configuration,
                                             Path(mask) if mask else None)
        for name, values in maps_of(predictor, data, hf, brain).items():
            if name in report:
                report[name]["extra"][label] = float((values > report[name]["threshold"]).mean())
    print(f"\n{len(cases)} healthy validation scans, alpha {alpha:g}; FPR / alpha of a left-out scan at the others' "
          "threshold:")
    print("| map | median | 90th percentile | max | outside [0.5, 1.5] | mean abs log | " +
          " | ".join(f"{label} FPR / alpha" for label in (e.split("=", 1)[0] for e in args.extra)) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(args.extra))
    for name, r in report.items():
        s = r["leave_one_out"]
        extra = " | ".join(f"{v / alpha:.2f}" for v in r["extra"].values())
        print(f"| {name} | {s['median']:.2f} | {s['p90']:.2f} | {s['max']:.2f} | {100 * s['outside_band']:.0f} % | "
              f"{s['mean_abs_log']:.3f} | {extra} |")
    if args.json:
        args.json.write_text(json.dumps({"alpha": alpha, "maps": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
