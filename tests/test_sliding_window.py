"""Gaussian-weighted sliding window: identity network reproduces the input; skipping; small volumes; 2d."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from itermask_auto.inference.sliding_window import (gaussian_importance_map, reconstruct_volume, window_starts)


class FirstChannels(torch.nn.Module):
    """Returns its first C input channels (the masked image): an identity-like reconstructor."""

    def __init__(self, c: int = 1):
        super().__init__()
        self.c = c
        self.calls = 0

    def forward(self, x):
        self.calls += x.shape[0]
        return x[:, :self.c] * 1.0


def _volume(shape, c=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((c,) + shape).astype(np.float32), rng.standard_normal((c,) + shape).astype(np.float32)


@pytest.mark.parametrize("c", [1, 2])
def test_identity_reconstruction(c):
    image, hf = _volume((23, 30, 17), c)
    net = FirstChannels(c)
    recon, n = reconstruct_volume(net, image, hf, np.zeros(image.shape[1:], bool), (8, 16, 8), step=0.5,
                                  batch_size=3, needed=np.ones(image.shape[1:], bool), amp="fp32")
    assert recon.dtype == np.float32 and recon.shape == image.shape
    np.testing.assert_allclose(recon, image, atol=1e-5)
    starts = window_starts((23, 30, 17), (8, 16, 8), 0.5)
    assert n == net.calls == np.prod([len(s) for s in starts])
    assert [s[-1] + p for s, p in zip(starts, (8, 16, 8))] == [23, 30, 17]  # last window ends at the border


def test_masked_voxels_get_noise_and_are_deterministic():
    image, hf = _volume((16, 16, 16))
    mask = np.zeros(image.shape[1:], bool)
    mask[4:10, 4:10, 4:10] = True
    net = FirstChannels()
    r1, _ = reconstruct_volume(net, image, hf, mask, (8, 8, 8), generator=torch.Generator().manual_seed(3))
    r2, _ = reconstruct_volume(net, image, hf, mask, (8, 8, 8), generator=torch.Generator().manual_seed(3))
    assert np.array_equal(r1, r2)
    assert not np.allclose(r1[:, mask], image[:, mask])            # identity of the noise-filled input
    np.testing.assert_allclose(r1[:, ~mask], image[:, ~mask], atol=1e-5)


def test_window_skipping():
    image, hf = _volume((40, 40, 40))
    needed = np.zeros(image.shape[1:], bool)
    needed[2:6, 2:6, 2:6] = True                                  # one corner only
    scale = torch.nn.Module()
    scale.forward = lambda x: x[:, :1] * 0 + 7.0                   # constant output: easy to see coverage
    full = int(np.prod([len(s) for s in window_starts((40, 40, 40), (16, 16, 16), 0.5)]))
    recon, n = reconstruct_volume(scale, image, hf, needed, (16, 16, 16), step=0.5)
    assert 0 < n < full
    assert np.allclose(recon[:, needed], 7.0)
    assert np.array_equal(recon[:, 30:, 30:, 30:], image[:, 30:, 30:, 30:])   # not covered: input kept
    _, n0 = reconstruct_volume(scale, image, hf, np.zeros_like(needed), (16, 16, 16))
    assert n0 == 0


def test_smaller_than_patch_and_2d():
    image, hf = _volume((5, 9, 30))
    recon, n = reconstruct_volume(FirstChannels(), image, hf, np.zeros(image.shape[1:], bool), (8, 16, 16),
                                  needed=np.ones(image.shape[1:], bool))
    assert recon.shape == image.shape and n == 3
    np.testing.assert_allclose(recon, image, atol=1e-5)
    img2, hf2 = _volume((37, 21))
    r2, _ = reconstruct_volume(FirstChannels(), img2, hf2, np.zeros((37, 21), bool), (16, 16), batch_size=4,
                               needed=np.ones((37, 21), bool))
    np.testing.assert_allclose(r2, img2, atol=1e-5)


def test_gaussian_and_amp():
    g = gaussian_importance_map((9, 9, 9))
    assert g.max() == 1 and g.min() > 0 and g[4, 4, 4] == 1 and g[0, 0, 0] < g[2, 2, 2]
    image, hf = _volume((12, 12, 12))
    recon, _ = reconstruct_volume(FirstChannels(), image, hf, np.zeros((12,) * 3, bool), (8, 8, 8), amp="bf16",
                                  needed=np.ones((12,) * 3, bool))
    np.testing.assert_allclose(recon, image, atol=0.05)               # bf16 autocast runs on CPU
    with pytest.raises(ValueError):
        reconstruct_volume(FirstChannels(), image, hf, np.zeros((12, 12), bool), (8, 8, 8))
