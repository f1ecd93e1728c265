"""Published channel-attention modules: SE, ECA and CBAM's channel branch.

Each returns ``x * w`` with one weight ``w`` in (0, 1) per (image, channel), as published:

- SE (Hu et al., CVPR 2018): global average pool, FC C -> C/r (with bias), ReLU, FC C/r -> C
  (with bias), sigmoid. r = 16.
- ECA (Wang et al., CVPR 2020): global average pool, 1-D conv of kernel k over the channel
  axis (one in/out channel, zero padding (k-1)/2, no bias), sigmoid. By default k is adaptive:
  k = |log2(C)/gamma + b/gamma| rounded to an odd number, gamma = 2, b = 1, computed as in the
  authors' code: t = int((log2(C) + b) / gamma), k = t if t is odd else t + 1.
- CBAM channel attention (Woo et al., ECCV 2018): one shared MLP (FC C -> C/r with bias, ReLU,
  FC C/r -> C with bias) applied to the average-pooled and to the max-pooled descriptor, the two
  outputs summed, sigmoid. r = 16.

The hidden width C // r is clamped to at least 1, so channel counts below r still build (the
published modules are undefined there; for C >= r nothing changes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nas_reid.ops.registry import check_param, register_op


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size: the odd one of t, t + 1 with t = int((log2 C + b) / gamma)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 == 1 else t + 1


def _mlp(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
    )


class SqueezeExcitation(nn.Module):
    """SE block: x * sigmoid(FC(ReLU(FC(GAP(x)))))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = _mlp(channels, max(1, channels // reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))))
        return x * w[:, :, None, None]


class ECA(nn.Module):
    """ECA block: x * sigmoid(conv1d_k(GAP(x))) with the conv sliding over channels."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean(dim=(2, 3)).unsqueeze(1))  # (B, 1, C)
        return x * torch.sigmoid(y).squeeze(1)[:, :, None, None]


class CBAMChannel(nn.Module):
    """CBAM channel gate: x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), MLP shared."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = _mlp(channels, max(1, channels // reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(logits)[:, :, None, None]


@register_op("se")
def se(channels: int, height: int, width: int, *, reduction: int = 16) -> nn.Module:
    """Squeeze-and-Excitation, reduction 16."""
    check_param("se", "reduction", reduction, reduction >= 1, "an integer >= 1")
    return SqueezeExcitation(channels, reduction)


@register_op("eca")
def eca(
    channels: int, height: int, width: int, *, kernel: int = 0, gamma: int = 2, b: int = 1
) -> nn.Module:
    """ECA; ``kernel=0`` picks the adaptive size from ``gamma`` and ``b``, else an odd size."""
    check_param("eca", "gamma", gamma, gamma >= 1, "an integer >= 1")
    check_param("eca", "b", b, b >= 0, "an integer >= 0")
    check_param("eca", "kernel", kernel, kernel == 0 or (kernel >= 1 and kernel % 2 == 1),
                "0 (adaptive) or an odd integer >= 1")
    return ECA(channels, kernel or eca_kernel_size(channels, gamma, b))


@register_op("cbam_c")
def cbam_c(channels: int, height: int, width: int, *, reduction: int = 16) -> nn.Module:
    """CBAM channel attention (avg- and max-pooled descriptors, shared MLP), reduction 16."""
    check_param("cbam_c", "reduction", reduction, reduction >= 1, "an integer >= 1")
    return CBAMChannel(channels, reduction)
