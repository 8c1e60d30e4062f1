"""Simplex noise for SADM, from the `opensimplex` package: the diffusion noise of stage 1 and the DRAEM-style masks
of stage 2's synthetic anomalies.

opensimplex is pure Python here (~20 µs per point), far too slow to call per sample, so each process computes a
seeded BANK of fields once (`field_bank`, cached) and every sample draws from it with its own seed:
- diffusion noise (`simplex_noise`): AnoDDPM's multi-octave field Σ_o p^o · S(x / (w / 2^o)) (6 octaves,
  persistence 0.8, start wavelength w px; not rescaled to unit variance, as the authors) — a random crop of a bank
  field (twice the slice edge), turned by a random multiple of 90°, mirrored and sign-flipped at random: exact
  simplex values, no interpolation;
- mask fields (`mask_field`): DRAEM's Perlin masks are single-scale noise with 2^a cells across the image per axis,
  rotated; here one single-octave bank (wavelength 4 px) is sampled by `grid_sample` (bicubic) at the zoom that
  gives the drawn number of cells per axis, rotated by a random angle.
Every draw comes from a numpy Generator the caller seeds from `batch["seed"]`."""
from __future__ import annotations

import functools
import logging
import math
from typing import Sequence, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

MASK_BANK_WAVELENGTH_PX = 4.0    # samples per simplex wavelength in the mask bank (bicubic zoom keeps it smooth)
MASK_BANK_SIDE = 128


@functools.lru_cache(maxsize=4)
def field_bank(n_fields: int, side: int, wavelengths: Tuple[float, ...], persistence: float,
               seed: int) -> np.ndarray:
    """(n_fields, side, side) float32: Σ_k persistence^k · simplex(x / wavelengths[k]), field i from seed + i."""
    import opensimplex
    coords = np.arange(side, dtype=np.float64)
    bank = np.zeros((n_fields, side, side), np.float32)
    for i in range(n_fields):
        generator = opensimplex.OpenSimplex(seed=int(seed) + i)
        for k, wavelength in enumerate(wavelengths):
            octave = generator.noise2array(coords / wavelength, coords / wavelength).astype(np.float32)
            bank[i] += np.float32(persistence ** k) * octave
    logger.info("simplex bank: %d fields of %d^2 px, wavelengths %s px", n_fields, side,
                [round(w, 2) for w in wavelengths])
    return bank


def octave_wavelengths(start_wavelength: float, octaves: int) -> Tuple[float, ...]:
    """AnoDDPM's octaves: the wavelength halves from `start_wavelength` px, `octaves` times."""
    return tuple(float(start_wavelength) / 2 ** k for k in range(int(octaves)))


def noise_bank(plan: dict) -> np.ndarray:
    """The diffusion-noise bank: fields twice the planned slice edge, so crops of any turn fit (a larger
    inference slice is mirror-tiled, `crop_field`)."""
    side = 2 * int(max(plan["slice_size"]))
    return field_bank(int(plan["noise_bank_fields"]), side,
                      octave_wavelengths(plan["noise_start_wavelength_px"], plan["noise_octaves"]),
                      float(plan["noise_persistence"]), int(plan["noise_seed"]))


def crop_field(bank: np.ndarray, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of a random bank field, turned by k·90°, mirrored and sign-flipped at random."""
    field = np.rot90(bank[int(rng.integers(len(bank)))], int(rng.integers(4)))
    if rng.random() < 0.5:
        field = field[:, ::-1]
    h, w = (int(s) for s in shape)
    if h > field.shape[0] or w > field.shape[1]:   # a slice larger than the bank was made for: mirror-tile
        field = np.pad(field, ((0, max(0, h - field.shape[0])), (0, max(0, w - field.shape[1]))), mode="reflect")
    y, x = int(rng.integers(field.shape[0] - h + 1)), int(rng.integers(field.shape[1] - w + 1))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return np.ascontiguousarray(field[y:y + h, x:x + w] * sign, dtype=np.float32)


def simplex_noise(rngs: Sequence[np.random.Generator], shape: Sequence[int], plan: dict) -> torch.Tensor:
    """(B, *shape) diffusion noise, shape = (C, H, W); sample b drawn with rngs[b] (one field per channel)."""
    bank = noise_bank(plan)
    return torch.from_numpy(np.stack([np.stack([crop_field(bank, shape[1:], rng) for _ in range(shape[0])])
                                      for rng in rngs]))


def diffusion_noise(rngs: Sequence[np.random.Generator], shape: Sequence[int], plan: dict) -> torch.Tensor:
    """(B, *shape) noise of the planned kind: "simplex" (AnoDDPM) or "gaussian" (N(0, 1))."""
    if plan["noise"] == "simplex":
        return simplex_noise(rngs, shape, plan)
    if plan["noise"] == "gaussian":
        return torch.from_numpy(np.stack([rng.standard_normal(tuple(shape)) for rng in rngs]).astype(np.float32))
    raise ValueError(f"unknown sadm noise '{plan['noise']}' (simplex | gaussian)")


def mask_bank(plan: dict) -> np.ndarray:
    return field_bank(int(plan["noise_bank_fields"]), MASK_BANK_SIDE, (MASK_BANK_WAVELENGTH_PX,), 1.0,
                      int(plan["noise_seed"]) + 7919)


def mask_field(shape: Sequence[int], cells_yx: Tuple[float, float], angle_deg: float,
               rng: np.random.Generator, bank: np.ndarray) -> np.ndarray:
    """(H, W) single-scale simplex field with `cells_yx` wavelengths across the slice per axis, rotated by
    angle_deg about the slice centre (values in about [-1, 1]; threshold it for a DRAEM mask)."""
    h, w = (int(s) for s in shape)
    field = torch.from_numpy(bank[int(rng.integers(len(bank)))])[None, None]
    side = bank.shape[-1]
    # bank pixels per output pixel along each axis: cells across the slice x wavelength / slice edge
    step_y, step_x = cells_yx[0] * MASK_BANK_WAVELENGTH_PX / h, cells_yx[1] * MASK_BANK_WAVELENGTH_PX / w
    half = 0.5 * math.hypot(h * step_y, w * step_x) + 2          # the rotated window's reach in bank pixels
    centre = rng.uniform(half, side - 1 - half, size=2) if side - 1 > 2 * half else np.full(2, (side - 1) / 2)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) - (h - 1) / 2,
                            torch.arange(w, dtype=torch.float64) - (w - 1) / 2, indexing="ij")
    a = math.radians(angle_deg)
    by = centre[0] + step_y * (math.cos(a) * ys - math.sin(a) * xs)
    bx = centre[1] + step_x * (math.sin(a) * ys + math.cos(a) * xs)
    grid = torch.stack([bx, by], dim=-1)[None] / (side - 1) * 2 - 1     # grid_sample wants (x, y) in [-1, 1]
    out = torch.nn.functional.grid_sample(field, grid.float(), mode="bicubic", padding_mode="reflection",
                                          align_corners=True)
    return out[0, 0].numpy()
