"""IterMask3D's synthetic artefacts on healthy scans: slab, bias field, k-space spike (herringbone), ghosting.

Each function takes one channel (zyx float array) plus the brain mask, voxel spacing (zyx mm) and a seeded
generator, and returns (corrupted float32 array, voxel label (zyx bool), parameters). Labels:
- slab: the brain voxels inside the band (where the intensity change is at least half of its full size);
- bias field, spike, ghosting: global artefacts with no honest voxel extent: the voxel label is empty and the
  case is anomalous at volume level only (synthetic manifest `anomalous: true`), for detection metrics.
Spike and ghosting are made in k-space (numpy FFT of the whole volume) and returned as magnitude images, as a
scanner would; they assume a non-negative magnitude image (raw MRI intensities)."""
from __future__ import annotations

import logging
from typing import Dict, Tuple

import numpy as np

logger = logging.getLogger(__name__)

Result = Tuple[np.ndarray, np.ndarray, Dict]
ARTIFACT_KINDS = ("slab", "bias", "spike", "ghosting")


def _brain_extent(brain: np.ndarray, axis: int) -> Tuple[int, int]:
    idx = np.nonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))[0]
    return (int(idx[0]), int(idx[-1])) if idx.size else (0, brain.shape[axis] - 1)


def slab(image: np.ndarray, brain: np.ndarray, spacing_zyx, rng: np.random.Generator,
         thickness_mm: Tuple[float, float] = (8.0, 20.0), factor_range: Tuple[float, float] = (0.25, 0.45)) -> Result:
    """A band perpendicular to a random array axis, intensity x factor (1 -/+ U(factor_range)), soft edges (1 voxel),
    centred in the middle half of the brain's extent along that axis."""
    axis = int(rng.integers(3))
    lo, hi = _brain_extent(brain, axis)
    span = hi - lo
    centre = float(rng.uniform(lo + 0.25 * span, lo + 0.75 * span))
    thickness = float(rng.uniform(*thickness_mm))
    factor = float(1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(*factor_range))
    pos_mm = (np.arange(image.shape[axis]) - centre) * float(spacing_zyx[axis])
    profile = 0.5 * (np.tanh((thickness / 2 - np.abs(pos_mm)) / float(spacing_zyx[axis])) + 1)   # 1 inside
    shape = [1, 1, 1]
    shape[axis] = -1
    profile = profile.reshape(shape).astype(np.float32)
    out = image.astype(np.float32) * (1.0 + (factor - 1.0) * profile)
    label = brain & np.broadcast_to(profile >= 0.5, brain.shape)
    return out, label, {"axis_zyx": axis, "centre_index": round(centre, 2), "thickness_mm": round(thickness, 2),
                        "factor": round(factor, 3)}


def bias_field(image: np.ndarray, brain: np.ndarray, spacing_zyx, rng: np.random.Generator,
               amplitude_range: Tuple[float, float] = (0.25, 0.4),
               wavelength_mm: Tuple[float, float] = (120.0, 250.0), n_waves: int = 3) -> Result:
    """Multiplicative smooth field exp(a * f), f = sum of random cosines in mm scaled to max |f| = 1 over the brain."""
    coords = [np.arange(n, dtype=np.float32) * float(s) for n, s in zip(image.shape, spacing_zyx)]
    grids = np.meshgrid(*coords, indexing="ij", sparse=True)
    f = np.zeros(image.shape, np.float32)
    waves = []
    for _ in range(n_waves):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        k = d * 2 * np.pi / rng.uniform(*wavelength_mm)
        phase = rng.uniform(0, 2 * np.pi)
        f += np.cos(sum(np.float32(ki) * g for ki, g in zip(k, grids)) + np.float32(phase))
        waves.append({"k_rad_per_mm_zyx": [round(float(v), 5) for v in k], "phase": round(float(phase), 3)})
    f /= max(float(np.abs(f[brain]).max()) if brain.any() else 1.0, 1e-6)
    a = float(rng.uniform(*amplitude_range))
    out = image.astype(np.float32) * np.exp(a * f)
    return out.astype(np.float32), np.zeros(brain.shape, bool), {"amplitude": round(a, 3), "waves": waves}


def kspace_spike(image: np.ndarray, brain: np.ndarray, spacing_zyx, rng: np.random.Generator,
                 strength_range: Tuple[float, float] = (0.15, 0.3), k_fraction: Tuple[float, float] = (0.1, 0.4)
                 ) -> Result:
    """One bad k-space sample: a spike at a random frequency (in-plane of two random axes, |k| a fraction of
    Nyquist) whose plane wave has amplitude `strength` x the mean brain intensity: herringbone stripes."""
    x = image.astype(np.float64)
    spectrum = np.fft.fftn(x)
    axes = rng.choice(3, size=2, replace=False)
    k = [0, 0, 0]
    for a in axes:
        k[int(a)] = int(round(rng.choice([-1, 1]) * rng.uniform(*k_fraction) * image.shape[int(a)] / 2))
    strength = float(rng.uniform(*strength_range))
    phase = float(rng.uniform(0, 2 * np.pi))
    level = float(x[brain].mean()) if brain.any() else float(x.mean())
    spectrum[tuple(k)] += strength * level * x.size * np.exp(1j * phase)   # ifftn divides by x.size
    out = np.abs(np.fft.ifftn(spectrum)).astype(np.float32)
    return out, np.zeros(brain.shape, bool), {"k_index_zyx": k, "strength": round(strength, 3),
                                              "phase": round(phase, 3)}


def ghosting(image: np.ndarray, brain: np.ndarray, spacing_zyx, rng: np.random.Generator,
             phase_range: Tuple[float, float] = (0.5, 1.0), periods: Tuple[int, ...] = (2, 3, 4)) -> Result:
    """Phase-encode ghosts: every `period`-th k-space line along a random axis gets a phase error phi, which
    adds copies of the head shifted by multiples of N/period along that axis, each of relative amplitude
    2 sin(phi/2) / period (0.12-0.48 with the defaults)."""
    x = image.astype(np.float64)
    axis = int(rng.integers(3))
    period = int(rng.choice(periods))
    phi = float(rng.uniform(*phase_range))
    spectrum = np.fft.fftn(x)
    lines = (np.arange(image.shape[axis]) % period == 0)
    shape = [1, 1, 1]
    shape[axis] = -1
    spectrum *= np.where(lines, np.exp(1j * phi), 1.0).reshape(shape)
    out = np.abs(np.fft.ifftn(spectrum)).astype(np.float32)
    return out, np.zeros(brain.shape, bool), {"axis_zyx": axis, "period": period, "phase_error": round(phi, 3)}


ARTIFACTS = {"slab": slab, "bias": bias_field, "spike": kspace_spike, "ghosting": ghosting}
