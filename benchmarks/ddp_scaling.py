"""Training throughput (patches per second) with 1, 2, ... ranks of torch.distributed on the IXI plan.

    python benchmarks/ddp_scaling.py                         # CPU: 1 and 2 ranks (gloo), the IXI 3d plan
    python benchmarks/ddp_scaling.py --device cuda --ranks 1 2 4 8   # GPUs (NCCL); every rank one GPU

The engine's own training step runs (Trainer: patch sampling, augmentation, blob masks, the method's loss, DDP
gradient averaging, optimiser) on IXI-sized phantoms preprocessed with the plan's normalisation, so no data is
needed. The planned batch is the global batch, shared out over the ranks (training/trainer.py), so patches/s for
W ranks against 1 rank is the speed-up of one training run. On a CPU the cores are shared out too (each rank gets
cores / W threads): the ratio can be below 1, and is reported as measured."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without `pip install -e .`
PLAN = REPO / "plans" / "Dataset001_IXI_T1" / "itermask_plans.json"
DATASET = "Dataset901_DDPBench"


def make_dataset(root: Path, plan_path: Path, n_cases: int) -> None:
    """IXI-sized skull-stripped phantoms, normalised and with their hf channel, as preprocessed cases."""
    import numpy as np
    import SimpleITK as sitk

    from itermask_auto.dataset_conversion.phantom import make_phantom
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.preprocessing.normalization import normalize_channel
    from itermask_auto.preprocessing.storage import save_case
    from itermask_auto.utilities.frequency import high_frequency
    plans = Plans.load(plan_path)
    config = plans.configuration("3d")
    folder = root / "preprocessed" / DATASET
    for i in range(n_cases):
        ph = make_phantom(i, size=(96, 112, 96), spacing=tuple(config.spacing[::-1]), skull=False, n_lesions=0)
        image = sitk.GetArrayFromImage(ph.image).astype(np.float32)
        brain = sitk.GetArrayFromImage(ph.brain_mask).astype(bool)
        data = normalize_channel(image, brain, plans.normalization)[0]
        hf = high_frequency(data, config.spacing, plans.hf_radius_cycles_per_mm)
        save_case(folder / config.data_identifier, f"case_{i:03d}", data[None], hf[None], brain.astype(np.uint8),
                  {"case": f"case_{i:03d}"})
    plans.dataset_name = DATASET
    plans.save(folder / "itermask_plans.json")


def worker(args) -> None:
    """One rank (under torchrun): time the engine's training step."""
    import torch

    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.methods.registry import get_method
    from itermask_auto.training.trainer import Trainer
    from itermask_auto.utilities.distributed import init_from_environment
    ranks, device = init_from_environment(args.device)
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, cores // ranks.world_size) if device == "cpu" else 4)
    folder = Path(args.root) / "preprocessed" / DATASET
    plans = Plans.load(folder / "itermask_plans.json")
    data_folder = folder / plans.configuration("3d").data_identifier
    cases = sorted(p.stem for p in data_folder.glob("*.npz"))
    trainer = Trainer(plans, "3d", get_method("itermask3d"), 0, Path(args.root) / "out", DATASET, data_folder,
                      cases, cases[:1], torch.device(device), ranks=ranks)
    loader = iter(trainer.train_sampler)
    for _ in range(args.warmup):
        trainer.train_step(next(loader))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    torch.distributed.barrier() if ranks.distributed else None
    start = time.perf_counter()
    for _ in range(args.iterations):
        trainer.train_step(next(loader))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    torch.distributed.barrier() if ranks.distributed else None
    seconds = time.perf_counter() - start
    if ranks.is_main:
        print("RESULT " + json.dumps({"ranks": ranks.world_size, "global_batch": trainer.global_batch,
                                      "seconds": seconds, "iterations": args.iterations,
                                      "threads_per_rank": torch.get_num_threads()}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--plan", type=Path, default=PLAN)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp), args.plan, args.cases)
        rows = []
        for n in args.ranks:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                   __file__, "--worker", "--root", tmp, "--device", args.device, "--iterations",
                   str(args.iterations), "--warmup", str(args.warmup), "--plan", str(args.plan)]
            env = dict(os.environ, OMP_NUM_THREADS=str(max(1, len(os.sched_getaffinity(0)) // n)),
                       ITERMASK_preprocessed=str(Path(tmp) / "preprocessed"), ITERMASK_results=tmp,
                       ITERMASK_raw=tmp)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if out.returncode != 0 or line is None:
                print(out.stdout[-2000:], out.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(line[7:]))
    base = None
    print(f"plan {args.plan} (3d patch, global batch {rows[0]['global_batch']}), device {args.device}, "
          f"{args.iterations} timed iterations after {args.warmup} warm-up")
    print("| ranks | threads/rank | s/iteration | patches/s | vs 1 rank |")
    print("|---|---|---|---|---|")
    for r in rows:
        rate = r["global_batch"] * r["iterations"] / r["seconds"]
        base = base or rate
        print(f"| {r['ranks']} | {r['threads_per_rank']} | {r['seconds'] / r['iterations']:.2f} | {rate:.2f} | "
              f"{rate / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
