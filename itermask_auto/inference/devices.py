"""Prediction on several devices of one machine: `-device cuda` uses every visible GPU, `-device cuda:0,2` the ones
named; one worker process per device, each predicting its share of the cases. The share is the same rule as
`--num_parts/--part_id` (which spreads a folder over machines), applied once more inside this machine's part:
worker k of G predicts part `part_id + k·num_parts` of `num_parts·G`. The workers write into the same output
folder; predictions.json is merged from the CASE.json files under a lock (export_results.write_folder_summary)."""
from __future__ import annotations

import logging
import queue as queue_module
from typing import Any, Dict, List

from itermask_auto.utilities.parallel import usable_cores

logger = logging.getLogger(__name__)


def parse_devices(device: str, visible_gpus: int | None = None) -> List[str]:
    """'cpu' -> ['cpu']; 'cuda' -> every visible GPU ['cuda:0', ...] (['cuda'] when torch sees at most one);
    'cuda:1' -> ['cuda:1']; 'cuda:0,2' -> ['cuda:0', 'cuda:2']. Unknown or absent GPUs are a ValueError."""
    if visible_gpus is None:
        import torch
        visible_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cpu":
        return ["cpu"]
    if device == "cuda":
        return [f"cuda:{i}" for i in range(visible_gpus)] if visible_gpus > 1 else ["cuda"]
    if device.startswith("cuda:"):
        try:
            ids = [int(x) for x in device[len("cuda:"):].split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"-device {device}: expected cuda:N or cuda:N,M,... with GPU numbers") from None
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"-device {device}: name each GPU once")
        missing = [i for i in ids if i >= visible_gpus]
        if missing:
            raise ValueError(f"-device {device}: torch sees {visible_gpus} GPU(s) (0..{visible_gpus - 1}), "
                             f"not {missing}")
        return [f"cuda:{i}" for i in ids]
    raise ValueError(f"unknown device '{device}' (cpu | cuda | cuda:N | cuda:N,M,...)")


def worker_parts(num_parts: int, part_id: int, n_devices: int) -> List[tuple[int, int]]:
    """(num_parts, part_id) of each device's worker: the cases of machine part `part_id` shared out over the
    devices. sorted(cases)[part_id::num_parts][k::G] == sorted(cases)[part_id + k·num_parts :: num_parts·G]."""
    return [(num_parts * n_devices, part_id + k * num_parts) for k in range(n_devices)]


def predict_on_devices(devices: List[str], log_level: int = logging.INFO, **kwargs: Any) -> Dict[str, Any]:
    """predict_folder once per device, in parallel worker processes; returns the merged run summary (cases,
    failures of every worker). A set-up error in any worker is raised here as a ValueError naming the device;
    Ctrl-C stops every worker and raises PredictionInterrupted with the cases they finished."""
    import multiprocessing

    from itermask_auto.inference.predict_folder import PredictionInterrupted
    num_parts, part_id = kwargs.pop("num_parts", 1), kwargs.pop("part_id", 0)
    progress = kwargs.pop("progress", True)
    context = multiprocessing.get_context("spawn")   # fork after torch threads started can deadlock
    results = context.Queue()
    threads = max(1, usable_cores() // len(devices))
    workers = []
    for k, (device, (n, p)) in enumerate(zip(devices, worker_parts(num_parts, part_id, len(devices)))):
        job = {**kwargs, "device": device, "num_parts": n, "part_id": p, "progress": progress and k == 0}
        workers.append(context.Process(target=_worker, args=(k, job, threads, log_level, results),
                                       name=f"predict-{device}"))
    logger.info("predicting on %d devices (%s), one worker each", len(devices), ", ".join(devices))
    for w in workers:
        w.start()
    replies, interrupted = _collect(workers, results)
    for w in workers:
        w.join()
    errors = [f"{devices[k]}: {r[1]}" for k, r in replies.items() if r[0] == "error"]
    lost = [devices[k] for k in range(len(workers)) if k not in replies]
    if interrupted or any(r[0] == "interrupted" for r in replies.values()):
        finished = sum(r[1] for r in replies.values() if r[0] == "interrupted")
        finished += sum(len(r[1]["cases"]) for r in replies.values() if r[0] == "ok")
        total = sum(r[2] for r in replies.values() if r[0] == "interrupted")
        total += sum(len(r[1]["cases"]) + len(r[1]["failures"]) for r in replies.values() if r[0] == "ok")
        raise PredictionInterrupted(finished, total)
    if errors or lost:
        raise ValueError("; ".join(errors + [f"{d}: the worker died without a reply (out of memory?)" for d in lost]))
    summaries = [replies[k][1] for k in range(len(workers))]
    merged = {**summaries[0], "part": f"{part_id + 1}/{num_parts}", "devices": devices, "cases": {},
              "failures": {}}
    for s in summaries:
        merged["cases"].update(s["cases"])
        merged["failures"].update(s["failures"])
    return merged


def _collect(workers, results) -> tuple[Dict[int, tuple], bool]:
    """One reply per worker; a worker that died without one is noticed (not waited for forever). Ctrl-C here
    reaches the workers too (same process group): keep collecting their 'interrupted' replies."""
    replies: Dict[int, tuple] = {}
    interrupted = False
    while len(replies) < len(workers):
        try:
            k, reply = results.get(timeout=1.0)
            replies[k] = reply
        except queue_module.Empty:
            if all(not w.is_alive() for w in workers):
                try:   # a reply may have been queued just before the worker exited
                    while True:
                        k, reply = results.get(timeout=0.5)
                        replies[k] = reply
                except queue_module.Empty:
                    break
        except KeyboardInterrupt:
            interrupted = True
    return replies, interrupted


def _worker(k: int, job: Dict[str, Any], threads: int, log_level: int, results) -> None:
    """Top-level (picklable): one device's predict_folder; the reply says ok / interrupted / error (one line)."""
    import torch

    from itermask_auto.inference.predict_folder import PredictionInterrupted, predict_folder
    logging.basicConfig(level=log_level, format=f"%(levelname)s [{job['device']}] %(name)s: %(message)s")
    if job["device"] == "cpu":
        torch.set_num_threads(threads)
    try:
        results.put((k, ("ok", predict_folder(**job))))
    except PredictionInterrupted as e:
        results.put((k, ("interrupted", e.finished, e.total)))
    except KeyboardInterrupt:
        results.put((k, ("interrupted", 0, 0)))
    except Exception as e:  # noqa: BLE001 - reported by the parent with the device's name
        results.put((k, ("error", str(e).splitlines()[0] if str(e) else type(e).__name__)))
