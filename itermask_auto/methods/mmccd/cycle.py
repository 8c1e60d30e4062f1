"""MMCCD's test-time procedure on one volume: for every brain slice and every stripe mask of the schedule, a DDIM
run of the forward model A → B (eta 0; the condition = A with the band refilled with fresh noise at every step;
the same initial noise for every mask of a slice), then the backward U-Net B̂ → Â. The anomaly map is the squared
cycle error (A − Â)², averaged per pixel over the masks whose band covered it, zero outside the eroded brain.

(slice, mask) pairs of the whole volume go through the networks `mask_batch` at a time, in lock-step over the DDIM
steps; every network call is counted per sample, so a slice's evaluations are known exactly."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from itermask_auto.methods.mmccd.stripes import Stripe, schedule_stripes, stripe_mask

NOISE_SEED = 20230830     # fixed: the same case gives the same map


@dataclass
class CycleSchedule:
    positions: int                 # stripe positions per orientation
    steps: int                     # DDIM steps per mask
    mask_batch: int                # samples per network call
    widths: Tuple[int, int]        # band width in px (horizontal bands, vertical bands)
    train_timesteps: int = 1000

    @property
    def evaluations_per_slice(self) -> int:
        return 2 * self.positions * (self.steps + 1)


@dataclass
class CycleCounts:
    forward: Dict[int, int] = field(default_factory=dict)    # slice index -> forward evaluations
    backward: Dict[int, int] = field(default_factory=dict)   # slice index -> backward evaluations
    calls: int = 0                                           # network calls (batches)

    def per_slice(self) -> Dict[int, int]:
        return {z: self.forward.get(z, 0) + self.backward.get(z, 0) for z in set(self.forward) | set(self.backward)}


def ddim_scheduler(steps: int, train_timesteps: int = 1000):
    """MONAI's DDIMScheduler (linear betas, x0 prediction, no clipping: the images are z-scores, not [-1, 1]) with
    evenly spaced timesteps that END at the noisiest one (999, 999 − T/S, ...): the first step sees pure noise at
    the noise level it was trained for, also for 1 or 2 steps, and each step goes to the next listed timestep."""
    from monai.networks.schedulers import DDIMScheduler
    scheduler = DDIMScheduler(num_train_timesteps=train_timesteps, schedule="linear_beta", clip_sample=False,
                              prediction_type="sample")
    scheduler.set_timesteps(int(steps))
    ratio = train_timesteps // int(steps)
    scheduler.timesteps = torch.arange(train_timesteps - 1, -1, -ratio)[:int(steps)].long()
    return scheduler


def _slice_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(seed) % 2 ** 63))


def band_noise(slice_index: int, mask_index: int, step: int, shape: Sequence[int]) -> torch.Tensor:
    """The fresh noise of one band at one step, fixed by (slice, mask, step): independent of how masks are batched."""
    return _slice_noise(NOISE_SEED + 1_000_003 * (1 + slice_index) + 7919 * mask_index + step, shape)


@torch.inference_mode()
def cycle_errors(forward_net: torch.nn.Module, backward_net: torch.nn.Module, source: np.ndarray,
                 brains: np.ndarray, schedule: CycleSchedule, device: torch.device, autocast=None,
                 on_batch: Optional[Callable[[int], None]] = None) -> Tuple[np.ndarray, CycleCounts]:
    """source: (N, H, W) slices of A (background-padded, H and W divisible by the U-Net); brains: (N, H, W) bool.

    Returns (cycle-error map, (N, H, W): per pixel the mean of (A − Â)² over the masks whose band covered it, or
    over all masks of its slice where no band did (a slice wider than positions × width), and counts)."""
    n, shape = source.shape[0], source.shape[1:]
    autocast = autocast or contextlib.nullcontext
    jobs: List[Tuple[int, int, Stripe]] = []
    for z in range(n):
        if brains[z].any():
            jobs += [(z, k, s) for k, s in enumerate(schedule_stripes(brains[z], schedule.positions, schedule.widths))]
    error_sum = np.zeros(source.shape, np.float32)
    covered = np.zeros(source.shape, np.float32)
    error_all = np.zeros(source.shape, np.float32)
    counts = CycleCounts()
    scheduler = ddim_scheduler(schedule.steps, schedule.train_timesteps)
    initial = {z: _slice_noise(NOISE_SEED + z, shape) for z in {j[0] for j in jobs}}   # same for every mask
    for b, start in enumerate(range(0, len(jobs), max(1, schedule.mask_batch))):
        chunk = jobs[start:start + max(1, schedule.mask_batch)]
        zs = [z for z, _, _ in chunk]
        a = torch.from_numpy(source[zs][:, None]).to(device)
        masks = torch.from_numpy(np.stack([stripe_mask(s, shape) for _, _, s in chunk])[:, None].astype(np.float32))
        masks = masks.to(device)
        x = torch.stack([initial[z] for z in zs])[:, None].to(device)
        x0 = x
        for step, t in enumerate(scheduler.timesteps.tolist()):
            noise = torch.stack([band_noise(z, k, step, shape) for z, k, _ in chunk])[:, None].to(device)
            condition = a * (1 - masks) + noise * masks
            with autocast():
                out = forward_net(torch.cat([x, condition], 1), torch.full((len(chunk),), t, device=device))
            x, x0 = scheduler.step(out.float(), t, x)
            _count(counts.forward, zs)
            counts.calls += 1
        with autocast():
            a_hat = backward_net(x0).float()
        _count(counts.backward, zs)
        counts.calls += 1
        err = ((a - a_hat) ** 2)[:, 0].cpu().numpy()
        m = masks[:, 0].cpu().numpy()
        for i, z in enumerate(zs):
            error_sum[z] += err[i] * m[i]
            covered[z] += m[i]
            error_all[z] += err[i]
        if on_batch is not None:
            on_batch(b + 1)
    masks_per_slice = np.zeros(n, np.float32)
    for z, count in counts.backward.items():
        masks_per_slice[z] = count
    fallback = error_all / np.maximum(masks_per_slice, 1)[:, None, None]
    error_map = np.where(covered > 0, error_sum / np.maximum(covered, 1), fallback)
    return error_map.astype(np.float32), counts


def _count(counter: Dict[int, int], zs: Sequence[int]) -> None:
    for z in zs:
        counter[z] = counter.get(z, 0) + 1
