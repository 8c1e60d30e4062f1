"""The maths of the constrained methods' training step, as plain functions (no network needed to test them).

- `to_unit_range`: the engine's z-scored data (background −3) mapped into [0, 1] by a fixed affine map and clamp,
  because the authors' reconstruction loss, BCE-with-logits, needs [0, 1] targets (they scaled images by their max).
- `reconstruction_bce`, `kl_divergence`: the authors' VAE terms, summed over pixels / latent units, per image.
- `extended_log_barrier`: ψ_t(z) = −log(−z)/t for z ≤ −1/t², else t·z − log(1/t²)/t + 1/t (Kervadec et al.'s
  extension of the log-barrier: defined, finite and C¹ for every z, so a violated constraint still has a gradient).
- `size_constraint`: z = (1 − p) − mean σ(attention) over each image's region, penalised by ψ_t (mean over images).
- `attention_entropy`: Shannon entropy of softmax(attention) over each image's region (AMCons MAXIMISES it: the
  training term is −w_H·H).
All in fp32; every image without a region voxel is left out of the attention terms."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def to_unit_range(image: torch.Tensor, intensity_range: Sequence[float]) -> torch.Tensor:
    """(x − lo) / (hi − lo), clamped to [0, 1]: background (lo = the plan's background value) → 0."""
    lo, hi = float(intensity_range[0]), float(intensity_range[1])
    return ((image.float() - lo) / (hi - lo)).clamp(0.0, 1.0)


def reconstruction_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits summed over channels and pixels, per image (B,)."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").flatten(1).sum(1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, σ²) ‖ N(0, 1)) summed over the latent units, per image (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def extended_log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """ψ_t(z) elementwise. The log branch is evaluated on z clamped into its own domain, so the branch that
    `where` discards is finite too and the gradient is never NaN (z ≥ 0, z → 0⁻ and z → −∞ included)."""
    t = float(t)
    z0 = -1.0 / t ** 2
    log_branch = -torch.log(-torch.clamp(z, max=z0)) / t
    linear_branch = t * z - math.log(1.0 / t ** 2) / t + 1.0 / t
    return torch.where(z <= z0, log_branch, linear_branch)


def masked_mean(values: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-image mean of values (B, H, W) over region (B, H, W) bool, images with a non-empty region)."""
    weight = region.float()
    count = weight.flatten(1).sum(1)
    return (values.float() * weight).flatten(1).sum(1) / count.clamp(min=1.0), count > 0


def size_constraint(attention: torch.Tensor, region: torch.Tensor, p: float, t: float) -> torch.Tensor:
    """Mean over images of ψ_t((1 − p) − mean σ(attention) in the region): the constraint mean σ(A) ≥ 1 − p."""
    mean_sigmoid, valid = masked_mean(torch.sigmoid(attention.float()), region)
    penalty = extended_log_barrier((1.0 - p) - mean_sigmoid, t)
    return (penalty * valid).sum() / valid.sum().clamp(min=1)


def attention_entropy(attention: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per-image Shannon entropy (nats) of softmax(attention) over the region's pixels (0 for an empty region).
    log p is computed with a logsumexp over the region only, so every term stays finite (no 0·log 0)."""
    a = attention.float().flatten(1)
    r = region.flatten(1)
    lse = torch.logsumexp(a.masked_fill(~r, float("-inf")), dim=1, keepdim=True)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))       # empty region: any finite value
    log_p = a - lse
    p = torch.exp(log_p) * r
    return -(p * log_p).sum(1)


def entropy_term(attention: torch.Tensor, region: torch.Tensor, weight: float) -> torch.Tensor:
    """The AMCons training term −w_H·mean H (minimising it maximises the entropy)."""
    valid = region.flatten(1).any(1)
    h = attention_entropy(attention, region)
    return -float(weight) * (h * valid).sum() / valid.sum().clamp(min=1)


def erode_region(brain: torch.Tensor, block: Sequence[int]) -> torch.Tensor:
    """In-plane erosion of (B, H, W) bool masks by a block of ones (min-pool; outside the image counts as brain,
    as scipy's binary_erosion with border_value 0 would not: a slice patch is cut from a larger volume)."""
    ky, kx = int(block[0]), int(block[1])
    if ky <= 1 and kx <= 1:
        return brain.bool()
    outside = (~brain.bool()).float()[:, None]
    # max-pool of the outside with 'same' padding: a voxel stays if no outside voxel lies in its block
    pad = (kx // 2, kx - 1 - kx // 2, ky // 2, ky - 1 - ky // 2)
    grown = F.max_pool2d(F.pad(outside, pad, value=0.0), (ky, kx), stride=1)
    return grown[:, 0] < 0.5
