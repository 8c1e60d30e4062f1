"""Prediction speed: planned IterMask3D schedule vs the reference schedule (99 sweep passes, then shrink).

Per volume and device: seconds, network passes and sliding windows of both schedules with the same network in
the same run, their ratio, and how much τ changes between the planned and the reference sweep.
Scans: a 2 mm IXI T1 (with its brain mask), an MSLUB T1 on the plan's grid, and the same MSLUB scan on its native
1 mm grid (configuration spacing overridden to 1 mm, same network and patch: what the reference pays).
Without --model_dir, a randomly initialised network of the planned size is used: timings are valid, τ values
are not meaningful (the script says so). When the reference run would exceed --reference_budget_s it is not
run; its time is extrapolated from the measured seconds per window (marked "est.").

    python benchmarks/predict_speed.py [--model_dir FOLD_DIR] [--device cpu cuda] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without `pip install -e .`
from itermask_auto.experiment_planning.plans import Plans  # noqa: E402
from itermask_auto.inference.predictor import Predictor  # noqa: E402
from itermask_auto.methods.itermask3d.procedure import itermask3d, sweep_schedule  # noqa: E402
from itermask_auto.methods.masked_reconstruction.procedures import REFERENCE_SWEEP  # noqa: E402
from itermask_auto.methods.masked_reconstruction.reconstruct import NetworkReconstructor  # noqa: E402
from itermask_auto.preprocessing.preprocessor import preprocess_case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ITERMASK_SHARED_DATA", REPO.parent / "shared" / "data"))


def scans(shared: Path):
    ixi = sorted((shared / "ixi_t1_2mm" / "images").glob("*.nii.gz"))[0]
    mask = shared / "ixi_t1_2mm" / "brainmasks" / ixi.name.replace("_T1.nii.gz", "_brainmask.nii.gz")
    mslub = sorted((shared / "mslub_mni").glob("patient*/*T1W*.nii.gz")) or \
        sorted(p for p in (shared / "mslub_mni").glob("patient*/*.nii.gz") if "T1" in p.name and "POST" not in p.name)
    out = [("IXI T1 2 mm", [ixi], mask if mask.is_file() else None, None)]
    if mslub:
        out += [("MSLUB T1 (plan grid)", [mslub[0]], None, None), ("MSLUB T1 1 mm", [mslub[0]], None, 1.0)]
    return out


def load(args, device: str) -> tuple[Predictor, str]:
    if args.model_dir:
        return Predictor.from_model_folder(args.model_dir, device), f"trained model {args.model_dir}"
    from itermask_auto.training.network import build_network
    plans = Plans.load(args.plans)
    torch.manual_seed(0)
    net = build_network(plans.configuration(args.configuration)).to(device).eval()
    note = f"RANDOMLY INITIALISED network of the planned size ({args.plans}): timings only, tau not meaningful"
    return Predictor(net, plans, args.configuration, "itermask3d", None, device), note


def run(pred: Predictor, data, hf, brain, i_values, budget_s: float, est_s_per_window: float | None):
    plan = pred.spec.effective_plan(pred)  # the calibrated γ of a trained model, if it has one
    rec = NetworkReconstructor(pred.network, data, hf, pred.config.patch_size, plan.tile_step_size,
                               pred.batch_size, pred.device, pred.amp)
    if est_s_per_window is not None:
        full = NetworkReconstructor(pred.network, data, hf, pred.config.patch_size, plan.tile_step_size, 1,
                                    pred.device, pred.amp)
        from itermask_auto.inference.sliding_window import window_starts
        shape = [max(s, p) for s, p in zip(data.shape[1:], pred.config.patch_size)]
        per_pass = int(np.prod([len(s) for s in window_starts(shape, full.patch_size, plan.tile_step_size)]))
        est = est_s_per_window * per_pass * (len(i_values) + plan.max_shrink_passes - 1)
        if est > budget_s:
            return None, {"seconds": est, "passes": len(i_values) + plan.max_shrink_passes - 1,
                          "windows": per_pass * (len(i_values) + plan.max_shrink_passes - 1), "estimated": True}
    start = time.perf_counter()
    res = itermask3d(rec, data, brain, plan, i_values=i_values)
    if pred.device.type == "cuda":
        torch.cuda.synchronize()
    return res, {"seconds": time.perf_counter() - start, "passes": rec.passes, "windows": rec.windows,
                 "estimated": False}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", default=None)
    p.add_argument("--plans", default=str(REPO / "plans" / "Dataset001_IXI_T1" / "itermask_plans.json"))
    p.add_argument("--configuration", default="3d")
    p.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reference_budget_s", type=float, default=900.0)
    p.add_argument("--only", default=None, help="substring of the scan names to run")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not SHARED.is_dir():
        print(f"shared data not found at {SHARED} (set ITERMASK_SHARED_DATA)")
        return 1
    for device in args.device:
        pred, note = load(args, device)
        print(f"\n== device {device} ({torch.get_num_threads()} threads), amp {pred.amp}; {note}")
        inf = pred.plans.inference
        print(f"planned sweep i = {sweep_schedule(inf.sweep_steps, inf.sweep_max_percent).astype(int).tolist()}, "
              f"reference i = 1..99; patch {pred.config.patch_size}, step {inf.tile_step_size}")
        for name, paths, mask, spacing in scans(SHARED):
            if args.only and args.only not in name:
                continue
            plans = pred.plans
            if spacing is not None:  # same network, native 1 mm grid
                plans = copy.deepcopy(plans)
                plans.configurations[pred.configuration].spacing = [spacing] * 3
            t0 = time.perf_counter()
            data, hf, brain, _ = preprocess_case(paths, plans, pred.configuration, mask)
            t_pre = time.perf_counter() - t0
            planned, sp = run(pred, data, hf, brain, sweep_schedule(plans.inference.sweep_steps,
                                                                    plans.inference.sweep_max_percent),
                              float("inf"), None)
            ref, sr = run(pred, data, hf, brain, REFERENCE_SWEEP, args.reference_budget_s,
                          sp["seconds"] / max(sp["windows"], 1))
            est = " est." if sr["estimated"] else ""
            print(f"{name}: grid {tuple(data.shape[1:])}, preprocessing {t_pre:.1f} s")
            print(f"  planned  : {sp['seconds']:8.1f} s, {sp['passes']:3d} passes, {sp['windows']:5d} windows, "
                  f"tau {planned.tau:.4g} ({planned.fit['method']})")
            tau_ref = f"tau {ref.tau:.4g} ({ref.fit['method']})" if ref else "tau n/a (not run)"
            print(f"  reference: {sr['seconds']:8.1f} s{est}, {sr['passes']:3d} passes, "
                  f"{sr['windows']:5d} windows{est}, {tau_ref}")
            line = f"  ratio reference/planned: time {sr['seconds'] / sp['seconds']:.1f}x{est}, " \
                   f"passes {sr['passes'] / sp['passes']:.1f}x"
            if ref:
                change = 100 * (planned.tau - ref.tau) / max(ref.tau, 1e-12)
                a, b = planned.final_mask, ref.final_mask
                dice = 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)
                line += f"; tau change planned vs reference {change:+.1f} %; final-mask Dice {dice:.3f}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
