"""Run independent per-case jobs in worker processes with a progress bar; collect every failure."""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, List, Sequence, Tuple

from tqdm import tqdm

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    """The CPU cores this process may run on (taskset, SLURM's cgroup), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class BatchError(RuntimeError):
    """Some jobs failed; `errors` holds (job index, exception) for each, in job order."""

    def __init__(self, errors: List[Tuple[int, BaseException]]):
        self.errors = errors
        lines = [str(e) for _, e in errors]
        super().__init__(f"{len(errors)} case(s) failed:\n" + "\n".join(lines))


def run_parallel(fn: Callable[..., Any], jobs: Sequence[Tuple], num_processes: int = 1, desc: str = "") -> List[Any]:
    """fn(*job) for each job; results in job order. Raises BatchError after all jobs ran if any failed.

    Worker processes are started with 'spawn': torch's thread pools do not survive fork safely."""
    results: List[Any] = [None] * len(jobs)
    errors: List[Tuple[int, BaseException]] = []
    bar = tqdm(total=len(jobs), desc=desc, unit="case", disable=len(jobs) == 0)
    if num_processes <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            try:
                results[i] = fn(*job)
            except Exception as e:  # noqa: BLE001 - every failure is reported, the others go on
                errors.append((i, e))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=context) as pool:
            futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as e:  # noqa: BLE001
                    errors.append((i, e))
                bar.update()
    bar.close()
    if errors:
        raise BatchError(sorted(errors, key=lambda x: x[0]))
    return results
