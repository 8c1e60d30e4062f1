"""Throughput of MMCCD's U-Net (MONAI DiffusionModelUNet) on this machine: the constants of methods/mmccd/plan.py
(PROFILES[...]["inference_gflops"], ["training_gflops"]) come from this script.

    python benchmarks/mmccd_speed.py [--device cpu|cuda] [--threads 2] [--base 16 32] [--shape 96 80]
                                     [--batches 4 8 16 32] [--train_batch 8] [--seconds 20]

For each base width: inference (forward denoiser, torch.inference_mode, fp32 on CPU / bf16 autocast on CUDA) at each
mask batch, and one training step (forward + backward + AdamW) at the training batch; prints seconds per sample
and GFLOP/s with the FLOPs of networks.gflop_per_evaluation, per wall second and per CPU-second of this process.
Each figure is the median of repeated timings over `--seconds`. On a shared machine the wall figures drop with the
load (printed); the CPU-second figure of a 1-thread run (--threads 1) hardly does, and is what plan.py's CPU
constants are derived from (x 2 cores x a parallel efficiency)."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn, seconds: float) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) per call."""
    fn()                                    # warm-up (allocations, oneDNN kernel choice)
    wall, cpu, start = [], [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(wall) < 3:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> int:
    import torch
    from itermask_auto.methods.mmccd import networks
    from itermask_auto.methods.mmccd.plan import levels_for
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base", type=int, nargs="+", default=[16, 32])
    p.add_argument("--shape", type=int, nargs=2, default=[96, 80])
    p.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--train_batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device {device}, {args.threads} threads, shape {args.shape}, load average {os.getloadavg()}")
    for base in args.base:
        keys = networks.network_keys(base, levels_for(args.shape))
        gflop = networks.gflop_per_evaluation(keys, args.shape)
        net = networks.forward_network(keys).to(device).eval()
        print(f"base {base}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, "
              f"{gflop:.3f} GFLOP per evaluation")
        for batch in args.batches:
            x = torch.randn(batch, 2, *args.shape, device=device)
            t = torch.full((batch,), 500, device=device)

            def infer():
                with torch.inference_mode():
                    if amp is not None:
                        with amp:
                            net(x, t)
                    else:
                        net(x, t)
                sync()
            s, c = timed(infer, args.seconds)
            print(f"  inference batch {batch:3d}: {1000 * s / batch:8.1f} ms/evaluation, {gflop * batch / s:7.1f} "
                  f"GFLOP/s wall, {gflop * batch / c:7.1f} GFLOP per CPU-second", flush=True)
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        x = torch.randn(args.train_batch, 2, *args.shape, device=device)
        t = torch.randint(0, 1000, (args.train_batch,), device=device)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = net(x, t).float().pow(2).mean()
            loss.backward()
            opt.step()
            sync()
        s, c = timed(step, args.seconds)
        print(f"  training batch {args.train_batch}: {s:.2f} s/iteration, {3 * gflop * args.train_batch / s:.1f} "
              f"GFLOP/s wall, {3 * gflop * args.train_batch / c:.1f} GFLOP per CPU-second (3 x forward)", flush=True)
    print(f"load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
