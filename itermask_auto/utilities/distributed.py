"""torch.distributed for training and calibration across processes (one per GPU, or several on a CPU).

Launched by torchrun (`torchrun --nproc_per_node N $(which itermask_train) ...`), which sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous; a plain single process needs none of it. Backend: NCCL on GPUs, gloo on CPU.
Only rank 0 writes files; `gather_dict` merges per-rank results on every rank."""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict

import torch

logger = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(minutes=60)   # calibration of a slow rank can take long; a dead peer still fails


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: str) -> tuple[Ranks, str]:
    """Join the process group torchrun describes (if any); returns (ranks, this rank's device string).

    `device` "cuda" becomes "cuda:LOCAL_RANK"; on CPU every rank uses the CPU (gloo)."""
    if not launched_by_torchrun():
        return SINGLE, device
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    use_cuda = device.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA GPU (use -device cpu)")
        device = f"cuda:{ranks.local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(device))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    logger.info("rank %d of %d (%s, backend %s)", ranks.rank, ranks.world_size, device,
                torch.distributed.get_backend())
    return ranks, device


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        torch.distributed.barrier()


def gather_dict(local: Dict[str, Any], ranks: Ranks) -> Dict[str, Any]:
    """The union of every rank's dict, on every rank (keys must not collide across ranks)."""
    if not ranks.distributed:
        return dict(local)
    parts = [None] * ranks.world_size
    torch.distributed.all_gather_object(parts, local)
    merged: Dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


def all_reduce_sum(values: list[float], ranks: Ranks) -> list[float]:
    """Elementwise sum over ranks (float64 on the CPU: works with gloo and NCCL groups alike via object gather)."""
    if not ranks.distributed:
        return list(values)
    parts = [None] * ranks.world_size
    torch.distributed.all_gather_object(parts, [float(v) for v in values])
    return [float(sum(p[i] for p in parts)) for i in range(len(values))]


def shutdown(ranks: Ranks) -> None:
    if ranks.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
