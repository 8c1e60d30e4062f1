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
used). No label is read.

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


def scan_figures(pred_dir: Path) -> List[Dict]:
    """One row per predicted scan: flagged, voxel FPR at its voxel threshold, segmented brain fraction."""
    import nibabel as nib
    rows = []
    for summary in sorted(pred_dir.glob("*.json")):
        record = json.loads(summary.read_text())
        if "volume_score" not in record:   # predictions.json / summary files
            continue
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
    p.add_argument("-o", required=True, type=Path, help="prediction folder (kept; scans already there are reused)")
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
    result = predict_folder(args.i, args.o, args.d, args.c, args.f, args.m, args.device, continue_prediction=True,
                            masks_dir=args.masks, mode=args.mode, progress=True)
    wall = time.perf_counter() - start
    calibration = json.loads((Path(result["model_folder"]) / "calibration.json").read_text())
    rows = scan_figures(args.o)
    figures = {**compare(rows, calibration), "failures": result["failures"], "wall_s": round(wall, 1),
               "masks": str(args.masks) if args.masks else "none (automatic)", "scans": rows}
    (args.json or args.o / "unseen_healthy.json").write_text(json.dumps(figures, indent=2) + "\n")
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
