"""The VAE of the constrained methods (Silva-Rodríguez et al., MedIA 2022), in plain torch modules.

Encoder: a ResNet-18-like residual encoder, not pretrained — a 7×7 stride-2 stem (conv, BN, ReLU; ResNet's stem
without its max-pool, as the authors' slice of torchvision's ResNet-18 keeps 1/2 resolution before layer 1), then
`len(widths)` residual layers of `blocks_per_layer` basic blocks (layer 1 at stride 1, the others at stride 2),
then a dense latent: mu and log-variance from the flattened last feature map. Decoder: a dense layer back to
(widths[-1]/2, h, w), then one residual up-block (×2) per encoder stride-2 step plus the stem's, each followed by
a basic block, and a 3×3 output convolution (logits). Total down-sampling = 2^len(widths) (16 for 4 layers).

Attention: the output of residual layer `attention_level` (1 = the authors' `level_cams=-4` of 4 layers),
either its plain channel mean (the authors' shipped code) or Grad-CAM weighted: Σ_c mean_ij(∂Σ mu / ∂A_c) · A_c
(the paper; BMVC code with `avg_grads`). The Grad-CAM weights come from `torch.autograd.grad(...,
create_graph=...)` inside `forward`, so (i) the constraint trains through the weights and (ii) DDP sees the whole
graph from the module's outputs. The attention is bilinearly upsampled to the input size (raw, no sigmoid)."""
from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ATTENTIONS = ("channel_mean", "gradcam")


class VAEOutput(NamedTuple):
    logits: Optional[torch.Tensor]      # (B, C, H, W) reconstruction logits (None when not decoded)
    mu: torch.Tensor                    # (B, latent)
    logvar: torch.Tensor                # (B, latent)
    attention: Optional[torch.Tensor]   # (B, H, W) raw attention at input resolution (None when not asked)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class BasicBlock(nn.Module):
    """ResNet basic block: conv3×3(stride)-BN-ReLU-conv3×3-BN + shortcut (1×1 conv + BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _bn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _bn(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), _bn(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class UpBlock(nn.Module):
    """The authors' up-sampling residual block: conv3×3 → ×2 nearest → BN → ReLU → conv3×3 → BN, plus a
    1×1-conv → ×2 → BN shortcut; then ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn1 = _bn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.bn2 = _bn(c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1)
        self.skip_bn = _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(F.interpolate(self.conv1(x), scale_factor=2.0, mode="nearest")))
        out = self.bn2(self.conv2(out))
        skip = self.skip_bn(F.interpolate(self.skip(x), scale_factor=2.0, mode="nearest"))
        return F.relu(out + skip)


def residual_layer(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c_in, c_out, stride), *[BasicBlock(c_out, c_out) for _ in range(blocks - 1)])


class ConstrainedVAE(nn.Module):
    def __init__(self, in_channels: int, slice_size: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512),
                 blocks_per_layer: int = 2, latent_dim: int = 32, attention_level: int = 1,
                 attention: str = "channel_mean"):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention '{attention}' ({' | '.join(ATTENTIONS)})")
        widths = [int(w) for w in widths]
        factor = 2 ** len(widths)
        if any(int(s) % factor for s in slice_size):
            raise ValueError(f"slice size {list(slice_size)} must be divisible by {factor} (2^{len(widths)} layers)")
        if not 1 <= attention_level <= len(widths):
            raise ValueError(f"attention_level {attention_level} must be in 1..{len(widths)}")
        self.in_channels, self.slice_size = int(in_channels), tuple(int(s) for s in slice_size)
        self.attention_level, self.attention_mode, self.latent_dim = int(attention_level), attention, int(latent_dim)
        self.bottom = tuple(s // factor for s in self.slice_size)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), _bn(widths[0]), nn.ReLU())
        self.layers = nn.ModuleList(
            residual_layer(widths[max(i - 1, 0)], w, blocks_per_layer, 1 if i == 0 else 2)
            for i, w in enumerate(widths))
        flat = widths[-1] * self.bottom[0] * self.bottom[1]
        self.mu = nn.Linear(flat, latent_dim)
        self.logvar = nn.Linear(flat, latent_dim)
        # decoder channels: the authors' 256, 128, 64, 32, 16 for widths 64..512 (half the encoder's, shifted)
        dec = [max(w // 2, 4) for w in reversed(widths)] + [max(widths[0] // 4, 4)]
        self.dec_channels = dec
        self.dense = nn.Linear(latent_dim, dec[0] * self.bottom[0] * self.bottom[1])
        self.up = nn.ModuleList(nn.Sequential(UpBlock(dec[i], dec[i + 1]), BasicBlock(dec[i + 1], dec[i + 1]))
                                for i in range(len(widths)))
        self.out = nn.Conv2d(dec[-1], in_channels, 3, 1, 1)

    # ---- parts --------------------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention-level activations, last feature map); the former made a graph leaf if nothing upstream
        needs a gradient (frozen weights at inference), so Grad-CAM can differentiate w.r.t. it."""
        h = self.stem(x)
        level = None
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if i == self.attention_level:
                if self.attention_mode == "gradcam" and not h.requires_grad:
                    h = h.detach().requires_grad_(True)
                level = h
        return level, h

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        level, h = self._features(x)
        flat = h.flatten(1)
        return self.mu(flat), self.logvar(flat), level

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(z.shape[0], self.dec_channels[0], *self.bottom)
        for block in self.up:
            h = block(h)
        return self.out(h)

    def attention_map(self, level: torch.Tensor, mu: torch.Tensor, size: Sequence[int],
                      create_graph: bool) -> torch.Tensor:
        if self.attention_mode == "channel_mean":
            cam = level.mean(1)
        else:
            grads = torch.autograd.grad(mu.sum(), level, create_graph=create_graph, retain_graph=True)[0]
            cam = (grads.mean((2, 3), keepdim=True) * level).sum(1)
        return F.interpolate(cam[:, None], size=tuple(size), mode="bilinear", align_corners=True)[:, 0]

    # ---- forward --------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None, decode: bool = True,
                attention: bool = True) -> VAEOutput:
        """x: (B, C, H, W) in [0, 1]; noise: (B, latent) N(0, 1) for the reparameterisation (None: z = mu).
        Grad-CAM runs under enable_grad even when called under no_grad (validation, inference); its weights
        keep their graph (create_graph) only when the caller records gradients (training)."""
        record = torch.is_grad_enabled()
        with torch.enable_grad() if (attention and self.attention_mode == "gradcam") else contextlib.nullcontext():
            mu, logvar, level = self.encode(x)
            att = self.attention_map(level, mu, x.shape[-2:], create_graph=record) if attention else None
        if not record:
            mu, logvar = mu.detach(), logvar.detach()
            att = att.detach() if att is not None else None
        logits = None
        if decode:
            z = mu if noise is None else mu + noise.to(mu.dtype) * torch.exp(0.5 * logvar)
            logits = self.decode(z)
        return VAEOutput(logits, mu, logvar, att)
