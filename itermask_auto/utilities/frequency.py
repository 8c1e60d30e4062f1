"""High-frequency conditioning channel (IterMask2/3D).

FFT of the whole volume; inside a low-frequency ball of radius `radius_cycles_per_mm` the amplitude is set
to 1 and the phase kept; outside, amplitude and phase are kept; inverse FFT, real part. This is not a
zeroing high-pass: the low frequencies keep their phase, which carries the structure's position."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def low_frequency_ball(shape: Sequence[int], spacing: Sequence[float], radius_cycles_per_mm: float) -> np.ndarray:
    """Boolean mask (unshifted FFT layout) of frequencies with |f| <= radius, in cycles/mm."""
    grids = np.meshgrid(*[np.fft.fftfreq(n, d=s) for n, s in zip(shape, spacing)], indexing="ij", sparse=True)
    radius_sq = sum(g.astype(np.float64) ** 2 for g in grids)
    return radius_sq <= radius_cycles_per_mm ** 2


def high_frequency(volume: np.ndarray, spacing: Sequence[float], radius_cycles_per_mm: float) -> np.ndarray:
    """High-frequency channel of one volume (any dimensionality; spacing per axis in mm)."""
    if volume.ndim != len(spacing):
        raise ValueError(f"volume has {volume.ndim} axes but spacing has {len(spacing)}")
    spectrum = np.fft.fftn(volume.astype(np.float64))
    inside = low_frequency_ball(volume.shape, spacing, radius_cycles_per_mm)
    phase = np.angle(spectrum[inside])
    spectrum[inside] = np.exp(1j * phase)
    return np.real(np.fft.ifftn(spectrum)).astype(np.float32)
