"""Load test of itermask_predict: N phantom volumes in one folder, one predict_folder call (the CLI's code path).

Prints seconds per case and the process's resident memory (RSS, sampled every 50 ms in a thread) after case 10,
25 and N, the peak RSS, and the slope of RSS against finished cases between case 10 and N (MB per case):
memory must not grow with the number of cases. Without --model_dir it writes a small phantom dataset, plans,
preprocesses and trains a tiny model first (1 epoch x 2 iterations: the timing of a pass does not depend on the
weights). Everything goes to --work (default: a temporary folder, removed at the end).

    python benchmarks/predict_load.py [--n 50] [--size 28 32 28] [--spacing 5] [--model_dir FOLD_DIR] [--work DIR]
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without `pip install -e .`

logger = logging.getLogger("predict_load")


def rss_mb() -> float:
    """Current resident set size of this process (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Sampler(threading.Thread):
    """Every `interval` s: (seconds, finished cases = CASE.json files in `out`, RSS MB)."""

    def __init__(self, out: Path, interval: float = 0.05):
        super().__init__(daemon=True)
        self.out, self.interval = out, interval
        self.samples: List[Tuple[float, int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            done = sum(1 for p in self.out.glob("*.json") if p.name != "predictions.json") if self.out.is_dir() else 0
            self.samples.append((time.perf_counter() - start, done, rss_mb()))
            self.stop.wait(self.interval)


def train_tiny_model(work: Path, size, spacing: float) -> Path:
    from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
    from itermask_auto.experiment_planning.api import plan_and_preprocess
    from itermask_auto.training.api import run_training
    for sub in ("raw", "preprocessed", "results"):
        (work / sub).mkdir(parents=True, exist_ok=True)
        os.environ[f"ITERMASK_{sub}"] = str(work / sub)
    write_phantom_dataset(work / "raw", dataset_id=991, name="LoadPhantom", n_train=5, n_test_healthy=0,
                          n_test_lesion=0, size=size, spacing=(spacing,) * 3, with_masks=False)
    plan_and_preprocess(991, ["3d"], num_processes=1, profile="cpu")
    return run_training(991, "3d", 0, epochs=1, iterations=2, num_threads=1)


def write_inputs(folder: Path, n: int, size, spacing: float) -> None:
    from itermask_auto.dataset_conversion.phantom import make_phantom
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ph = make_phantom(5000 + i, size=size, spacing=(spacing,) * 3, skull=False, n_lesions=i % 3,
                          anatomy_scale=min(1.0, 0.9 * min(np.asarray(size) * spacing / 2 / np.array([80, 95, 70]))))
        sitk.WriteImage(ph.image, str(folder / f"load_{i:03d}_0000.nii.gz"), True)


def at_case(samples: List[Tuple[float, int, float]], k: int) -> Optional[float]:
    """RSS at the first sample where k cases were finished."""
    return next((r for _, d, r in samples if d >= k), None)


def _mb(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--size", type=int, nargs=3, default=(28, 32, 28), help="phantom size x y z (voxels)")
    p.add_argument("--spacing", type=float, default=5.0, help="isotropic spacing (mm)")
    p.add_argument("--model_dir", type=Path, default=None, help="trained fold folder (default: train a tiny one)")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="predict_load_"))
    try:
        t0 = time.perf_counter()
        fold = args.model_dir or train_tiny_model(work, args.size, args.spacing)
        t_train = time.perf_counter() - t0
        write_inputs(work / "inputs", args.n, args.size, args.spacing)
        out = work / "predictions"
        from itermask_auto.inference.predict_folder import predict_folder
        sampler = Sampler(out)
        rss_before = rss_mb()
        sampler.start()
        t1 = time.perf_counter()
        summary = predict_folder(work / "inputs", out, model_dir=fold, progress=False)
        wall = time.perf_counter() - t1
        sampler.stop.set()
        sampler.join()
        samples = sampler.samples + [(wall, len(summary["cases"]), rss_mb())]
        n_done = len(summary["cases"])
        pts = np.array([(d, r) for _, d, r in samples if 10 <= d <= n_done], float)
        slope = float(np.polyfit(pts[:, 0], pts[:, 1], 1)[0]) if len(np.unique(pts[:, 0])) > 1 else float("nan")
        per_case = [c["seconds"] for c in summary["cases"].values()]
        lines = [
            f"predict_load: {n_done} of {args.n} cases predicted ({len(summary['failures'])} failed), "
            f"phantoms {tuple(args.size)} at {args.spacing} mm, {args.threads} torch thread(s), model "
            f"{'given' if args.model_dir else f'tiny, trained here in {t_train:.1f} s'} ({fold})",
            f"seconds per case: {wall / max(n_done, 1):.3f} wall (folder total {wall:.1f} s); inference only "
            f"median {np.median(per_case):.3f} s, max {np.max(per_case):.3f} s",
            f"RSS MB: before predict {rss_before:.1f}, after case 10 {_mb(at_case(samples, 10))}, after case 25 "
            f"{_mb(at_case(samples, 25))}, after case {n_done} {samples[-1][2]:.1f}; peak sampled "
            f"{max(r for _, _, r in samples):.1f}, ru_maxrss "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}",
            f"RSS slope between case 10 and {n_done}: {slope * 1024:.1f} kB per case ({len(pts)} samples)",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
