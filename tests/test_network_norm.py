"""The 3-D network's instance norm (training/network.py): group norm with a channel per group in fp32 on CPU, which
keeps the channels-last layout, and instance norm otherwise; the same numbers either way."""
from __future__ import annotations

import torch
from torch import nn

from itermask_auto.training.network import InstanceNorm3d, build_network
from trainer_fixtures import make_plans


def _pair():
    torch.manual_seed(0)
    reference, ours = nn.InstanceNorm3d(6, eps=1e-5, affine=True), InstanceNorm3d(6, eps=1e-5, affine=True)
    with torch.no_grad():
        reference.weight.normal_()
        reference.bias.normal_()
    ours.load_state_dict(reference.state_dict())   # the same parameter names: old checkpoints load
    return reference, ours


def test_fp32_cpu_norm_equals_instance_norm_and_keeps_channels_last():
    reference, ours = _pair()
    x = (torch.randn(2, 6, 5, 7, 4) * 3 + 1).to(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    y_ref, y = reference(x), ours(x)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    probe = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad((y_ref * probe).sum(), [x, reference.weight, reference.bias])
    grads = torch.autograd.grad((y * probe).sum(), [x, ours.weight, ours.bias])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)
    # per sample: a sample normalised alone gives the same as within its batch (no statistics across samples)
    torch.testing.assert_close(ours(x[1:2]), y[1:2], rtol=1e-5, atol=1e-5)


def test_bf16_autocast_keeps_instance_norm():
    reference, ours = _pair()
    conv = nn.Conv3d(6, 6, 3, padding=1)
    x = torch.randn(2, 6, 5, 7, 4).to(memory_format=torch.channels_last_3d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        assert h.dtype == torch.bfloat16
        y, y_ref = ours(h), reference(h)
    assert torch.equal(y, y_ref)   # the same kernel: bit for bit


def test_unbatched_input_and_running_statistics_keep_instance_norm():
    reference, ours = _pair()
    x = torch.randn(6, 5, 7, 4)   # (C, D, H, W): group norm would read D as the channels
    torch.testing.assert_close(ours(x), reference(x))
    tracked = InstanceNorm3d(6, affine=True, track_running_stats=True)
    tracked.load_state_dict(nn.InstanceNorm3d(6, affine=True, track_running_stats=True).state_dict())
    y = tracked(torch.randn(2, 6, 5, 7, 4))
    # instance norm's own path: it updates the running statistics (group norm has none)
    assert y.shape == (2, 6, 5, 7, 4) and not torch.equal(tracked.running_mean, torch.zeros(6))


def test_the_3d_network_uses_it():
    plans = make_plans()
    network = build_network(plans.configuration("3d"))
    norms = [m for m in network.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(isinstance(m, InstanceNorm3d) for m in norms)
