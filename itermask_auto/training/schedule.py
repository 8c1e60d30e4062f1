"""The fixed recipe's small decisions: learning rate per epoch, optimiser, numeric precision, CPU threads."""
from __future__ import annotations

import logging
import os
from typing import Iterable, Optional

import torch

from itermask_auto.experiment_planning.plans import TrainingPlan
from itermask_auto.utilities.parallel import usable_cores

logger = logging.getLogger(__name__)


def learning_rate(epoch: int, num_epochs: int, plan: TrainingPlan) -> float:
    """lr for a 0-based epoch. "poly": nnU-Net's (1 − e/E)^0.9; "step": ×0.1 from round(E·lr_step_fraction)."""
    if plan.lr_schedule == "poly":
        return plan.initial_lr * (1 - min(epoch, num_epochs) / max(num_epochs, 1)) ** 0.9
    if plan.lr_schedule == "step":
        return plan.initial_lr * (0.1 if epoch >= round(num_epochs * plan.lr_step_fraction) else 1.0)
    raise ValueError(f"unknown lr_schedule '{plan.lr_schedule}' (poly|step)")


def build_optimizer(params: Iterable[torch.nn.Parameter], plan: TrainingPlan) -> torch.optim.Optimizer:
    name = plan.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=plan.initial_lr, weight_decay=plan.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=plan.initial_lr, weight_decay=plan.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=plan.initial_lr, weight_decay=plan.weight_decay, momentum=0.99,
                               nesterov=True)
    raise ValueError(f"unknown optimizer '{plan.optimizer}' (adam|adamw|sgd)")


CPU_BF16_ENV = "ITERMASK_CPU_BF16"


def cpu_bf16_supported() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX). oneDNN also runs bf16 on plain AVX-512
    and AVX2 by emulation (torch.ops.mkldnn._is_mkldnn_bf16_supported() says True on AVX-512), but that is slower
    than fp32: 2.3x on an AVX-512 Xeon without AVX512-BF16 (conv 3x3 fwd+bwd), ~20x on AVX2.
    ITERMASK_CPU_BF16=0 answers False (fp32 for `auto` on any CPU: the same numbers on every machine, as the test
    suite needs), =1 answers True; unset or empty: the CPU's own flags."""
    override = os.environ.get(CPU_BF16_ENV, "").strip()
    if override:
        if override not in ("0", "1"):
            raise ValueError(f"{CPU_BF16_ENV}={override!r}: use 0 (fp32 for 'auto' on CPUs) or 1 (bf16), or unset it")
        return override == "1"
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, mixed_precision: str) -> Optional[torch.dtype]:
    """dtype for torch.autocast, or None for fp32. "auto": bf16 on CPU if supported; bf16 (else fp16) on CUDA."""
    if mixed_precision == "fp32":
        return None
    if mixed_precision == "bf16":
        return torch.bfloat16
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision != "auto":
        raise ValueError(f"unknown mixed_precision '{mixed_precision}' (auto|fp32|bf16|fp16)")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16_supported():
        return torch.bfloat16
    return None


def resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device '{device}' (cpu|cuda)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU (use -device cpu)")
    return torch.device(device)


def set_torch_threads(device: torch.device, num_workers: int, num_threads: Optional[int] = None) -> int:
    """On CPU the network gets the cores the data workers leave free (at least 1), unless num_threads is given
    (on a machine shared with other jobs, 1 thread avoids OpenMP spin-wait collapse). Returns the count used."""
    cores = usable_cores()
    n = max(1, cores - num_workers) if device.type == "cpu" else max(1, min(cores, 4))
    n = int(num_threads) if num_threads else n
    torch.set_num_threads(n)
    return n
