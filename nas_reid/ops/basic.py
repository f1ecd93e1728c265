"""Basic shape-preserving ops: skip, none, and the conv blocks of a mobile backbone.

All convolutions here are bias-free (each is followed by BatchNorm), stride 1, with
``padding = kernel // 2`` so the spatial size is kept.
"""

from __future__ import annotations

import torch
from torch import nn

from nas_reid.ops.registry import check_param, register_op


def _check_kernel(op: str, kernel: int) -> None:
    check_param(op, "kernel", kernel, kernel >= 1 and kernel % 2 == 1, "an odd integer >= 1")


class Zero(nn.Module):
    """The "none" op: zeros of the input's shape, dtype and device (no gradient path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class ConvBNReLU(nn.Sequential):
    """kxk conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


class SepConv(nn.Sequential):
    """Depthwise-separable conv (MobileNetV1 style): dw kxk, BN, ReLU, 1x1, BN, ReLU."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


class MBConv(nn.Module):
    """MobileNetV2 inverted residual, stride 1, same channels: x + project(dw(expand(x))).

    expand: 1x1 conv C -> t*C, BN, ReLU6; dw: depthwise kxk, BN, ReLU6; project: 1x1 conv
    t*C -> C, BN (linear bottleneck, no activation).
    """

    def __init__(self, channels: int, kernel: int, expansion: int) -> None:
        super().__init__()
        hidden = channels * expansion
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_op("identity")
def identity(channels: int, height: int, width: int) -> nn.Module:
    """Skip connection: returns the input unchanged."""
    return nn.Identity()


@register_op("zero")
def zero(channels: int, height: int, width: int) -> nn.Module:
    """The "none" op: returns zeros of the input's shape."""
    return Zero()


@register_op("conv_bn_relu")
def conv_bn_relu(channels: int, height: int, width: int, *, kernel: int = 3) -> nn.Module:
    """kxk conv -> BN -> ReLU, channels unchanged."""
    _check_kernel("conv_bn_relu", kernel)
    return ConvBNReLU(channels, kernel)


@register_op("sep_conv")
def sep_conv(channels: int, height: int, width: int, *, kernel: int = 3) -> nn.Module:
    """Depthwise-separable conv block (kernel 3 or 5 in the search spaces)."""
    _check_kernel("sep_conv", kernel)
    return SepConv(channels, kernel)


@register_op("mbconv")
def mbconv(
    channels: int, height: int, width: int, *, kernel: int = 3, expansion: int = 6
) -> nn.Module:
    """Inverted residual block (expansion 3 or 6, kernel 3 or 5 in the search spaces)."""
    _check_kernel("mbconv", kernel)
    check_param("mbconv", "expansion", expansion, expansion >= 1, "an integer >= 1")
    return MBConv(channels, kernel, expansion)
