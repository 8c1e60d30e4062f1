"""Seconds per training step of the two sadm stages on a preprocessed dataset (sizes the CPU profile, plan.py).

    ITERMASK_preprocessed=... python benchmarks/sadm_step_time.py -d 1 [--threads 1] [--steps 6] [--plan '{json}']

Builds the engine's Trainer for each stage (the planned batch, slices, networks, data sampling and synthetic
anomalies), runs a warm-up step (the per-process noise banks), then `--steps` steps, and prints the median wall
time and process CPU time per step, and a validation pass. On a shared machine the wall clock is not usable: with
`--threads 1` the CPU time per step is the single-core cost (the plan takes the 2-thread wall time as 0.7x it).
`--plan` overrides planned sadm keys (e.g. other network widths) for the measurement only."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", dest="dataset", required=True, help="preprocessed dataset with the 2d configuration")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--plan", default="{}", help="JSON overrides of the planned sadm keys")
    args = p.parse_args(argv)
    import torch
    from itermask_auto.experiment_planning.plans import PLANS_FILE, Plans
    from itermask_auto.methods.registry import get_method
    from itermask_auto.paths import preprocessed_root
    from itermask_auto.preprocessing.storage import list_preprocessed_cases
    from itermask_auto.training.data import make_loader
    from itermask_auto.training.trainer import Trainer
    from itermask_auto.utilities.dataset import find_dataset
    torch.set_num_threads(args.threads)
    ds = find_dataset(preprocessed_root(), args.dataset)
    plans = Plans.load(ds / PLANS_FILE)
    plans.method_plans["sadm"] = {**(plans.method_plans.get("sadm") or {}), **json.loads(args.plan)}
    method = get_method("sadm")
    data = ds / plans.configuration("2d").data_identifier
    cases = list_preprocessed_cases(data)
    split = max(1, len(cases) // 5)
    frozen = {}
    print(f"{ds.name}, {len(cases)} cases, slices {method.method_plan(plans)['slice_size']}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for stage in method.stages(plans, "2d"):
            trainer = Trainer(plans, "2d", method, 0, Path(tmp) / stage.name, ds.name, data, cases[split:],
                              cases[:split], torch.device("cpu"), stage=stage,
                              frozen={k: frozen[k] for k in stage.uses})
            loader = make_loader(trainer.train_sampler)
            trainer.train_step(next(loader))
            wall, cpu = [], []
            for _ in range(args.steps):
                w, c = time.perf_counter(), time.process_time()
                trainer.train_step(next(loader))
                wall.append(time.perf_counter() - w)
                cpu.append(time.process_time() - c)
            w, c = time.perf_counter(), time.process_time()
            trainer.validate()
            print(f"{stage.name}: batch {trainer.batch_size}, per step wall {np.median(wall):.3f} s, CPU "
                  f"{np.median(cpu):.3f} s; validation of {trainer.tp.validation_iterations} batches wall "
                  f"{time.perf_counter() - w:.2f} s, CPU {time.process_time() - c:.2f} s")
            frozen[stage.name] = trainer.network.eval().requires_grad_(False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
