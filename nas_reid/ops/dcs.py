"""DCS-Attention: self-attention over positions whose affinities use a selected set of channels.

The op ``dcs`` (Wang, Jojic and Yang, "Learning Informative Attention Weights for Person
Re-Identification", arXiv 2505.08961, 2025; released code:
github.com/Statistical-Deep-Learning/DCS-Attention) maps (B, C, H, W) to the same shape:

- ``variant="mask"`` (the default; the method as the paper describes it): a per-token binary
  channel mask M from logits ``Z = X W^T + b`` (training: a straight-through binary Gumbel sample,
  P(M = 1) = sigmoid(Z) at every temperature ``tau``; eval: ``1[Z > 0]``), attention
  ``A = softmax_j((X*M)_i . (X*M)_j / sqrt(C))`` over key positions (``scale=False``: no sqrt(C)),
  output ``x + BN(A V)``. Each channel starts kept with probability ``mask_init_bias`` (0.9).
- ``variant="window"``: the released code's ``DNonlocal`` block
  (``modeling/backbones/final_version/DNLblock.py``): one contiguous channel window with learnable
  fractional start and length for every token, no softmax, output ``x + BN(dwconv3x3(f))``.

Both are exactly the identity at initialisation (BN gamma and beta 0; ``zero_init=False`` keeps
gamma = 1). ``key_stride`` s > 1 takes keys and values at the positions ``[::s, ::s]`` only.
``tau`` is a buffer, set by :meth:`DCSAttention.set_temperature` or :func:`set_dcs_temperature`;
``keep_ratio`` is the mean mask of the last forward (NaN before the first; :func:`dcs_keep_ratios`).
Design notes and measurements: docs/ops.md, section `nas_reid.ops.dcs`.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from nas_reid.ops.registry import OpError, check_param, register_op

VARIANTS = ("mask", "window")


def binary_gumbel_sigmoid(logits: torch.Tensor, tau: float | torch.Tensor,
                          hard: bool = True) -> torch.Tensor:
    """Sample a relaxed binary mask with P(1) = sigmoid(logits).

    Soft sample ``sigmoid((logits + n) / tau)`` with logistic noise ``n = log u - log(1 - u)``.
    ``hard=True`` returns exactly ``1[logits + n > 0]`` in the forward with the soft sample's
    gradient (straight-through); ``hard=False`` returns the soft sample.
    """
    eps = torch.finfo(logits.dtype).eps
    u = torch.rand_like(logits).clamp_(eps, 1.0 - eps)
    soft = torch.sigmoid((logits + (torch.log(u) - torch.log1p(-u))) / tau)
    if not hard:
        return soft
    # hard + (soft - soft.detach()): the forward value is exactly 0 or 1, the gradient is soft's
    return (soft > 0.5).to(soft.dtype) + (soft - soft.detach())


class DCSBase(nn.Module):
    """What both DCS variants share: the input check and ``keep_ratio``."""

    keep_ratio: torch.Tensor

    def __init__(self, channels: int, key_stride: int) -> None:
        super().__init__()
        self.channels = channels
        self.key_stride = key_stride
        self.keep_ratio = torch.tensor(float("nan"))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise OpError(f"dcs was built for {self.channels} channels, got a tensor of shape "
                          f"{tuple(x.shape)}; expected (B, {self.channels}, H, W)")

    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        s = self.key_stride
        return x if s == 1 else x[:, :, ::s, ::s]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, key_stride={self.key_stride}"


class DCSAttention(DCSBase):
    """DCS-Attention as the paper describes it: a per-token Gumbel channel mask (module docs)."""

    tau: torch.Tensor

    def __init__(self, channels: int, *, tau: float = 1.0, mask_init_bias: float = 0.9,
                 key_stride: int = 1, scale: bool = True, zero_init: bool = True) -> None:
        super().__init__(channels, key_stride)
        self.scale = 1.0 / math.sqrt(channels) if scale else 1.0
        self.fused = True  # use scaled_dot_product_attention on CUDA
        self.mask_fc = nn.Linear(channels, channels)
        nn.init.zeros_(self.mask_fc.weight)
        nn.init.constant_(self.mask_fc.bias, math.log(mask_init_bias / (1.0 - mask_init_bias)))
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        if zero_init:
            nn.init.zeros_(self.bn.weight)
        self.register_buffer("tau", torch.tensor(float(tau)))

    def set_temperature(self, tau: float) -> None:
        """Set the Gumbel temperature (> 0) used by later training-mode forwards."""
        _check_tau(tau)
        self.tau.fill_(float(tau))

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh mask for ``x`` as ``forward`` would use it: (B, N, C), tokens in raster order."""
        self._check_input(x)
        return self._mask(x.flatten(2).transpose(1, 2))

    def _mask(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.mask_fc(tokens)
        if self.training:
            return binary_gumbel_sigmoid(logits, self.tau)
        return (logits > 0).to(logits.dtype)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        m = self._mask(tokens)
        self.keep_ratio = m.detach().mean()
        q = tokens * m
        if self.key_stride == 1:
            k = q
        else:
            s = self.key_stride
            k = (q.reshape(b, h, w, c)[:, ::s, ::s]).reshape(b, -1, c)
        v = self.value(self._keys(x)).flatten(2).transpose(1, 2)  # (B, N_k, C)
        return q, k, v

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights A, (B, N, N_k), rows summing to 1 (samples a mask in training)."""
        self._check_input(x)
        q, k, _ = self._qkv(x)
        return self._weights(q, k)

    def _weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.softmax((q * self.scale) @ k.transpose(1, 2), dim=-1)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                fused: bool) -> torch.Tensor:
        if fused:
            out = F.scaled_dot_product_attention(
                q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=self.scale)
            return out.squeeze(1)
        return self._weights(q, k) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        b, c, h, w = x.shape
        q, k, v = self._qkv(x)
        out = self._attend(q, k, v, fused=self.fused and x.is_cuda)  # (B, N, C)
        return x + self.bn(out.transpose(1, 2).reshape(b, c, h, w))

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, tau={float(self.tau):g}, "
                f"scale={self.scale != 1.0}")


class DCSWindowAttention(DCSBase):
    """The released code's DCS block: a learnable contiguous channel window (module docs)."""

    def __init__(self, channels: int, *, start: float = 0.0, length: float | None = None,
                 key_stride: int = 1, zero_init: bool = True) -> None:
        super().__init__(channels, key_stride)
        self.min_length = max(1.0, 0.25 * channels)
        self.max_length = float(channels - 1)
        self.start = nn.Parameter(torch.tensor(float(start)))
        self.length = nn.Parameter(torch.tensor(0.5 * channels if length is None else length))
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        if zero_init:
            nn.init.zeros_(self.bn.weight)

    @torch.no_grad()
    def set_window(self, start: float, length: float) -> None:
        """Set the window's start and length, in channels (e.g. searched values)."""
        self.start.fill_(float(start))
        self.length.fill_(float(length))

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """The windowed channels theta of ``x``: (B, L0 + 1, H, W)."""
        c = self.channels
        s = torch.remainder(self.start, c)
        s_floor = torch.floor(s).detach()
        s_frac = s - s_floor
        length = self.length.clamp(self.min_length, self.max_length)
        self.keep_ratio = length.detach() / c
        l_floor = torch.floor(length).detach()
        l_frac = length - l_floor
        s0, l0 = int(s_floor) % c, int(l_floor)  # % c: remainder may round up to c
        doubled = torch.cat([x, x], dim=1)
        first = doubled[:, s0:s0 + l0 + 1]
        second = doubled[:, s0 + 1:s0 + l0 + 2]
        theta = first + s_frac * (second - first)  # (1 - a) first + a second
        weight = torch.ones(l0 + 1, dtype=x.dtype, device=x.device)
        weight = torch.cat([weight[:l0], l_frac.reshape(1).to(x.dtype)])
        return theta * weight[:, None, None]

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights theta^T phi / N_k (no softmax), (B, N, N_k)."""
        self._check_input(x)
        theta = self.window(x).flatten(2)  # (B, L0 + 1, N)
        phi = self._keys_of(theta, x)
        return theta.transpose(1, 2) @ phi / phi.shape[-1]

    def _keys_of(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.key_stride == 1:
            return theta
        s = self.key_stride
        b, wl, _ = theta.shape
        return theta.reshape(b, wl, *x.shape[2:])[:, :, ::s, ::s].flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        b, c, h, w = x.shape
        theta = self.window(x).flatten(2)  # (B, W, N)
        phi = self._keys_of(theta, x)  # (B, W, N_k)
        g = self._keys(x).flatten(2)  # (B, C, N_k)
        n, nk, wl = h * w, phi.shape[-1], theta.shape[1]
        if n * nk * (wl + c) <= nk * wl * c + n * wl * c:
            f = g @ (phi.transpose(1, 2) @ theta)  # (B, C, N) via the (N_k, N) product
        else:
            f = (phi @ g.transpose(1, 2)).transpose(1, 2) @ theta  # via the (C, W) product
        f = (f / nk).reshape(b, c, h, w)
        return x + self.bn(self.dwconv(f))


def _check_tau(tau: float) -> None:
    ok = isinstance(tau, (int, float)) and not isinstance(tau, bool) and math.isfinite(tau)
    check_param("dcs", "tau", tau, ok and tau > 0, "a finite number > 0")


@register_op("dcs")
def dcs(
    channels: int, height: int, width: int, *, variant: str = "mask", tau: float = 1.0,
    mask_init_bias: float = 0.9, scale: bool = True, key_stride: int = 1,
    window_start: float = 0.0, window_length: float = 0.5, zero_init: bool = True,
) -> nn.Module:
    """DCS-Attention; ``variant`` "mask" (the paper, default) or "window" (the released code).

    ``tau``: initial Gumbel temperature; ``mask_init_bias``: initial keep probability of every
    mask entry, in (0, 1); ``scale``: divide the affinities by sqrt(C) (mask variant only).
    ``window_start``, ``window_length``: the window's initial start and length as fractions of
    the channel count (window variant only; start in [0, 1), length in [0.25, 1]). ``key_stride``:
    keys and values at every s-th row and column. ``zero_init``: BN gamma = 0 (identity at init).
    """
    check_param("dcs", "variant", variant, variant in VARIANTS, f"one of {VARIANTS}")
    check_param("dcs", "key_stride", key_stride, key_stride >= 1, "an integer >= 1")
    defaults = {"tau": 1.0, "mask_init_bias": 0.9, "scale": True,
                "window_start": 0.0, "window_length": 0.5}
    other = ("window_start", "window_length") if variant == "mask" else (
        "tau", "mask_init_bias", "scale")
    given = {"tau": tau, "mask_init_bias": mask_init_bias, "scale": scale,
             "window_start": window_start, "window_length": window_length}
    for key in other:
        check_param("dcs", key, given[key], given[key] == defaults[key],
                    f"left at its default {defaults[key]!r} with variant {variant!r}")
    if variant == "mask":
        _check_tau(tau)
        check_param("dcs", "mask_init_bias", mask_init_bias, 0.0 < mask_init_bias < 1.0,
                    "a keep probability in (0, 1)")
        return DCSAttention(channels, tau=float(tau), mask_init_bias=float(mask_init_bias),
                            key_stride=key_stride, scale=scale, zero_init=zero_init)
    check_param("dcs", "channels", channels, channels >= 2,
                "an integer >= 2 with variant 'window'")
    check_param("dcs", "window_start", window_start, 0.0 <= window_start < 1.0,
                "a fraction of the channels in [0, 1)")
    check_param("dcs", "window_length", window_length, 0.25 <= window_length <= 1.0,
                "a fraction of the channels in [0.25, 1]")
    return DCSWindowAttention(channels, start=window_start * channels,
                              length=window_length * channels, key_stride=key_stride,
                              zero_init=zero_init)


def dcs_modules(model: nn.Module) -> Iterator[tuple[str, DCSBase]]:
    """(qualified name, module) of every DCS module inside ``model`` (``model`` included)."""
    for name, module in model.named_modules():
        if isinstance(module, DCSBase):
            yield name, module


def set_dcs_temperature(model: nn.Module, tau: float) -> int:
    """Set the Gumbel temperature of every mask-variant DCS module; returns how many were set."""
    _check_tau(tau)
    count = 0
    for _, module in dcs_modules(model):
        if isinstance(module, DCSAttention):
            module.set_temperature(tau)
            count += 1
    return count


def dcs_keep_ratios(model: nn.Module) -> dict[str, float]:
    """Keep ratio of each DCS module's last forward by name: the mask mean (mask variant) or the
    window length over C (window variant); NaN before the first forward."""
    return {name: float(module.keep_ratio) for name, module in dcs_modules(model)}
