"""Training throughput of the planned PlainConvUNet (one optimiser step = forward + backward + Adam).

Prints s/iteration and patches/s per patch size and precision (fp32, bf16 autocast; fp16 too on CUDA), plus the
cost of the data pipeline (crop + batchgeneratorsv2 augmentation + blob mask) per batch, and how many iterations
fit in a time budget. Example:
    python benchmarks/train_speed.py --patch 64 64 64 --patch 80 96 80 --threads 2
"""
from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace

import numpy as np
import torch

import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without `pip install -e .`
from itermask_auto.experiment_planning.plans import ConfigurationPlan, NetworkPlan  # noqa: E402
from itermask_auto.training.network import build_network, count_parameters  # noqa: E402
from itermask_auto.methods.masked_reconstruction.method import reconstruction_loss  # noqa: E402
from itermask_auto.utilities.masking import masked_network_input  # noqa: E402


def network_plan(patch, features, norm) -> ConfigurationPlan:
    strides, size = [], np.array(patch)
    for i in range(len(features)):
        s = [1] * len(patch) if i == 0 else [2 if n >= 8 else 1 for n in size]
        size = size // np.array(s)
        strides.append(s)
    net = NetworkPlan(features_per_stage=list(features), kernel_sizes=[[3] * len(patch)] * len(features),
                      strides=strides, norm=norm)
    return ConfigurationPlan(name="bench", spacing=[2.0] * len(patch), median_shape=list(patch),
                             patch_size=list(patch), batch_size=2, network=net, data_identifier="bench")


def time_steps(config, batch, device, dtype, iterations, warmup, layout="trainer"):
    torch.manual_seed(0)
    net = build_network(config).to(device)
    if layout == "trainer" and device.type == "cpu" and len(config.patch_size) == 3:
        net = net.to(memory_format=torch.channels_last_3d)   # what training/trainer.py does on CPU
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    shape = (batch, 1, *config.patch_size)
    image, hf = torch.randn(shape, device=device), torch.randn(shape, device=device)
    mask = torch.rand((batch, *config.patch_size), device=device) < 0.2
    times = []
    for i in range(warmup + iterations):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(masked_network_input(image, hf, mask))
        loss = reconstruction_loss(out.float(), image, mask)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times)), count_parameters(net)


def time_data(patch, batch, n=3):
    """Crop + augmentation + blob mask on a synthetic 2 mm IXI-sized case (85 x 100 x 80 voxels)."""
    from itermask_auto.experiment_planning.plans import TrainingMaskPlan
    from itermask_auto.training.data import CaseArrays, PatchSampler
    sys_path_tests = os.path.join(os.path.dirname(__file__), "..", "tests")
    import sys
    sys.path.insert(0, sys_path_tests)
    from trainer_fixtures import make_plans
    plans = make_plans(patch=patch)
    plans.training_masks = TrainingMaskPlan(block_sizes_mm=[4.0, 2.0, 8.0], block_probabilities=[0.5, 0.25, 0.25])
    plans.configurations["3d"].batch_size = batch
    shape = (85, 100, 80)
    brain = np.zeros(shape, bool)
    brain[10:75, 10:90, 10:70] = True
    data = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    case = CaseArrays(data, data.copy(), brain, np.flatnonzero(brain))
    store = SimpleNamespace(get=lambda _: case)
    sampler = PatchSampler(store, ["x"], plans, "3d", "blobs", batch, augment=True, seed=0)
    sampler.next_batch()
    start = time.perf_counter()
    for _ in range(n):
        sampler.next_batch()
    return (time.perf_counter() - start) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patch", type=int, nargs="+", action="append", help="patch size (z y x); repeatable")
    p.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--norm", default="instance", choices=["instance", "batch"])
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--device", default="cpu,cuda", help="comma list; cuda is skipped when unavailable")
    p.add_argument("--precision", default="fp32,bf16", help="comma list of fp32,bf16,fp16")
    p.add_argument("--budget_min", type=float, default=90.0, help="time budget for the 'iterations in' column")
    p.add_argument("--no_data", action="store_true", help="skip timing the data pipeline")
    p.add_argument("--layout", default="trainer", choices=("trainer", "contiguous"),
                   help="trainer: channels-last 3-D weights on CPU, as training uses (default); contiguous: without")
    args = p.parse_args()
    patches = args.patch or [[64, 64, 64], [80, 96, 80]]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}, "
          f"features {args.features}, batch {args.batch}, norm {args.norm}")
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    for dev in args.device.split(","):
        if dev == "cuda" and not torch.cuda.is_available():
            continue
        device = torch.device(dev)
        for patch in patches:
            config = network_plan(patch, args.features, args.norm)
            for prec in args.precision.split(","):
                if prec == "fp16" and dev == "cpu":
                    continue
                sec, n_params = time_steps(config, args.batch, device, dtypes[prec], args.iterations, args.warmup,
                                           args.layout)
                print(f"{dev:4s} patch {'x'.join(map(str, patch)):>10s} {prec}: {sec:7.3f} s/iteration, "
                      f"{args.batch / sec:6.2f} patches/s, {int(args.budget_min * 60 / sec):6d} iterations in "
                      f"{args.budget_min:g} min ({n_params / 1e6:.1f} M parameters)", flush=True)
            if not args.no_data and dev == "cpu":
                print(f"     data pipeline (crop + augmentation + blob mask): {time_data(patch, args.batch):.3f} "
                      f"s/batch", flush=True)


if __name__ == "__main__":
    main()
