"""Do a fold's calibrated thresholds hold on healthy scans it never saw, predicted the way a new user would?

Predicts every scan of IMAGES (healthy, never used for planning, training or calibration) with a trained and
calibrated fold, by default WITHOUT brain masks (itermask_predict skull-strips them itself), and prints, against
what calibration.json states for a new healthy scan:
- detection FPR: the share of scans flagged anomalous (volume score > the detection threshold), against the
  calibrated `detection_fpr_bound` (a bound on the probability, so a share of a few scans can exceed it by chance);
- voxel FPR at the voxel threshold (the map above the healthy α threshold), per scan: mean against α, and the
  share of scans above the conformal `voxel_fpr_bound` against 1 − `bound_confidence`;
- the method's own segmentation (CASE_seg, e.g. IterMask3D's final mask): its mean brain fraction against α.
The brain region of a scan is the non-zero part of its anomaly map (prediction writes zero outside the brain it
used): the region calibration scored for the itermask family and `ae` at the plan's spacing (IXI at 2 mm); a map
resampled to another grid gains a one-voxel fringe, and methods whose maps are zero inside the brain (`mmccd`,
`constrained`) are under-counted (a note says so). Every scan is predicted again on each run. No label is read.

    python benchmarks/unseen_healthy.py -i IMAGES -o OUT -d DATASET -c CONFIGURATION [-f 0] [-m itermask3d]
                                        [-masks MASKS] [--mode itermask2] [--json OUT/unseen_healthy.json]
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

# methods whose exported map is exactly zero on parts of the region calibration scores (own erosion, min-max scaling)
MAPS_WITH_ZEROS_INSIDE = ("mmccd", "constrained", "constrained_entropy")


def scan_figures(pred_dir: Path, cases: List[str]) -> List[Dict]:
    """One row per scan of `cases` (this run's): flagged, voxel FPR at its voxel threshold, segmented brain share."""
    import nibabel as nib
    rows = []
    for case in sorted(cases):
        record = json.loads((pred_dir / f"{case}.json").read_text())
        anomaly = np.asanyarray(nib.load(pred_dir / record["files"]["anomaly"]).dataobj).astype(np.float32)
        seg = np.asanyarray(nib.load(pred_dir / record["files"]["seg"]).dataobj) > 0
        brain = anomaly != 0
        n = max(int(brain.sum()), 1)
        rows.append({"case": record["case"], "flagged": bool(record["anomalous"]),
                     "volume_score": record["volume_score"], "brain_mask_source": record.get("brain_mask_source"),
                     "voxel_fpr": float(np.sum(anomaly[brain] > record["voxel_threshold"]) / n),
                     "segmented_fraction": float(np.sum(seg & brain) / n), "seconds": record.get("seconds")})
    return rows


def compare(rows: List[Dict], calibration: Dict) -> Dict:
    flagged = np.mean([r["flagged"] for r in rows])
    voxel = np.asarray([r["voxel_fpr"] for r in rows])
    bound = calibration.get("voxel_fpr_bound")
    return {"n": len(rows), "alpha": calibration["alpha"],
            "detection_fpr": float(flagged), "detection_fpr_bound": calibration["detection_fpr_bound"],
            "voxel_fpr_mean": float(voxel.mean()), "voxel_fpr_max": float(voxel.max()),
            "voxel_fpr_bound": bound, "bound_confidence": calibration.get("bound_confidence"),
            "share_above_voxel_bound": float(np.mean(voxel > bound)) if bound is not None else None,
            "segmented_fraction_mean": float(np.mean([r["segmented_fraction"] for r in rows])),
            "calibration_brain_masks": calibration.get("brain_masks"),
            "healthy_validation_voxel_fpr_mean": calibration.get("voxel_fpr_per_case_mean"),
            "healthy_validation_final_mask_fraction": calibration.get("healthy_final_mask_fraction")}


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-i", required=True, type=Path, help="folder of healthy scans (CASE_0000.nii.gz ...)")
    p.add_argument("-o", required=True, type=Path, help="prediction folder (its scans are predicted again)")
    p.add_argument("-d", required=True, help="dataset id or name of the trained fold")
    p.add_argument("-c", required=True, help="configuration (3d / 2d)")
    p.add_argument("-f", default="0", help="fold")
    p.add_argument("-m", default="itermask3d", help="method")
    p.add_argument("-masks", type=Path, default=None, help="brain masks (default: none, as a new user predicts)")
    p.add_argument("--mode", default=None, help="itermask3d's inference mode (default: the plan's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="write the figures here (default: OUT/unseen_healthy.json)")
    args = p.parse_args(argv)
    from itermask_auto.inference.predict_folder import predict_folder
    start = time.perf_counter()
    # every scan predicted again (no --continue): a folder written with other masks, another fold or another mode
    # would otherwise be reused, and only this run's cases are counted
    result = predict_folder(args.i, args.o, args.d, args.c, args.f, args.m, args.device, masks_dir=args.masks,
                            mode=args.mode, progress=True)
    wall = time.perf_counter() - start
    calibration = json.loads((Path(result["model_folder"]) / "calibration.json").read_text())
    out_json = args.json or args.o / "unseen_healthy.json"
    if not result["cases"]:
        out_json.write_text(json.dumps({"n": 0, "failures": result["failures"]}, indent=2) + "\n")
        raise SystemExit(f"{args.i}: no scan was predicted ({len(result['failures'])} failures, see {out_json})")
    if args.m in MAPS_WITH_ZEROS_INSIDE:
        print(f"note: {args.m}'s maps are zero in parts of the scored brain, so the non-zero region under-counts it "
              f"and the voxel FPR below is too high")
    rows = scan_figures(args.o, list(result["cases"]))
    figures = {**compare(rows, calibration), "failures": result["failures"], "wall_s": round(wall, 1),
               "masks": str(args.masks) if args.masks else "none (automatic)",
               "prediction_mode": args.mode, "calibration_inference_mode": calibration.get("inference_mode"),
               "scans": rows}
    out_json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.mode and calibration.get("inference_mode") not in (None, args.mode):
        print(f"warning: predicted in mode {args.mode}, calibrated in mode {calibration['inference_mode']}: the "
              f"thresholds and bounds describe the other mode")
    print(f"{figures['n']} unseen healthy scans, brain masks: {figures['masks']}; calibration on "
          f"{figures['calibration_brain_masks']} masks")
    print(f"detection FPR {figures['detection_fpr']:.3f} (calibrated bound {figures['detection_fpr_bound']:.3f})")
    above = figures["share_above_voxel_bound"]
    print(f"voxel FPR at the voxel threshold: mean {figures['voxel_fpr_mean']:.4f} (alpha {figures['alpha']:g}), "
          f"max {figures['voxel_fpr_max']:.4f}; bound {figures['voxel_fpr_bound']} at "
          f"{figures['bound_confidence']} confidence, exceeded by {'—' if above is None else f'{above:.3f}'} "
          f"of the scans")
    print(f"segmented (CASE_seg) brain fraction: mean {figures['segmented_fraction_mean']:.4f}; "
          f"{len(figures['failures'])} failures; {wall:.0f} s")
    return figures


if __name__ == "__main__":
    main()
