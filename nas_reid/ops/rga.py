"""Relation-Aware Global Attention: RGA-S, RGA-C and RGA-SC (Zhang et al., CVPR 2020).

Layer for layer the official ``RGA_Module`` (microsoft/Relation-Aware-Global-Attention-Networks,
``reid/models/models_utils/rga_modules.py``) of Zhang, Lan, Zeng, Jin and Chen,
"Relation-Aware Global Attention for Person Re-identification", CVPR 2020 (arXiv 1904.02998).
Output = sigmoid(score) * x, one weight per position (RGA-S) or per channel (RGA-C), no residual;
RGA-SC applies RGA-S, then RGA-C to its output. Embedding widths: RGA-S uses E = C // c_ratio,
R = HW // s_ratio; RGA-C uses E = HW // s_ratio, R = C // c_ratio (as in the official code), all
clamped to at least 1; at every size where the official module has non-empty layers the
parameters are identical in number and shape. The relation embedding is computed in a factorised
form: the same function (up to float rounding) without forming the (n x n) relation matrix.
``checkpoint=True`` keeps only each branch's gate and recomputes the rest during backward
(BatchNorm running statistics are updated by the forward only).
Design notes and measurements: docs/ops.md, section `nas_reid.ops.rga`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from nas_reid.ops.registry import OpError, check_param, register_op


def _embedding(in_dim: int, out_dim: int) -> nn.Sequential:
    """1x1 conv (no bias) -> BN -> ReLU, as every RGA embedding function."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim), nn.ReLU()
    )


def _conv1x1(conv: nn.Conv2d, z: torch.Tensor) -> torch.Tensor:
    """A bias-free 1x1 conv applied to z of shape (B, in, n): (B, out, n)."""
    return torch.matmul(conv.weight.flatten(1), z)


def _batch_norm(bn: nn.BatchNorm2d, z: torch.Tensor, update_stats: bool) -> torch.Tensor:
    """``bn`` applied to (B, channels, n); in training, running statistics move only if asked."""
    mean, var = bn.running_mean, bn.running_var
    if not bn.training and mean is not None:
        return F.batch_norm(z, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
    momentum = bn.momentum
    if mean is not None and update_stats:
        bn.num_batches_tracked.add_(1)
        if momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    elif mean is not None:  # checkpoint recomputation: update throwaway copies instead
        mean, var = mean.clone(), var.clone()
    return F.batch_norm(z, mean, var, bn.weight, bn.bias, True, momentum or 0.0, bn.eps)


class _RelationGate(nn.Module):
    """One RGA branch: nodes' features (B, F, n) -> attention logits (B, 1, n).

    Submodules mirror the official ones: ``theta``/``phi`` (theta_/phi_), ``unary`` (gx_),
    ``relation`` (gg_) and ``score`` (W_).
    """

    op_name = "rga"

    def __init__(self, channels: int, height: int, width: int, feat_dim: int, num_nodes: int,
                 emb_dim: int, rel_dim: int, d_ratio: int, checkpoint: bool) -> None:
        super().__init__()
        self.input_shape = (channels, height, width)
        self.num_nodes = num_nodes
        self.checkpoint = checkpoint
        self.theta = _embedding(feat_dim, emb_dim)
        self.phi = _embedding(feat_dim, emb_dim)
        self.unary = _embedding(feat_dim, emb_dim)
        self.relation = _embedding(2 * num_nodes, rel_dim)
        hidden = max(1, (1 + rel_dim) // d_ratio)
        self.score = nn.Sequential(
            nn.Conv2d(1 + rel_dim, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 1, bias=False),
            nn.BatchNorm2d(1),
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise OpError(
                f"{self.op_name} was built for inputs of (C, H, W) = {self.input_shape}, "
                f"got a tensor of shape {tuple(x.shape)}; RGA needs the build-time size"
            )

    def _embed(self, block: nn.Sequential, z: torch.Tensor, update: bool) -> torch.Tensor:
        return F.relu(_batch_norm(block[1], _conv1x1(block[0], z), update))

    def _logits(self, z: torch.Tensor, update: bool) -> torch.Tensor:
        n = self.num_nodes
        theta = self._embed(self.theta, z, update)  # (B, E, n)
        phi = self._embed(self.phi, z, update)
        w = self.relation[0].weight.flatten(1)  # (R, 2n) = [W_out | W_in]
        w_out, w_in = w[:, :n], w[:, n:]
        # sum_j W_out[:, j] G[i, j] + sum_j W_in[:, j] G[j, i], with G = theta^T phi unformed
        rel = (torch.matmul(torch.matmul(phi, w_out.t()).transpose(1, 2), theta)
               + torch.matmul(torch.matmul(theta, w_in.t()).transpose(1, 2), phi))
        rel = F.relu(_batch_norm(self.relation[1], rel, update))  # (B, R, n)
        unary = self._embed(self.unary, z, update).mean(dim=1, keepdim=True)  # (B, 1, n)
        w1 = self.score[0].weight.flatten(1)  # (hidden, 1 + R); input order [unary; relation]
        hidden = torch.matmul(w1[:, :1], unary) + torch.matmul(w1[:, 1:], rel)
        hidden = F.relu(_batch_norm(self.score[1], hidden, update))
        return _batch_norm(self.score[4], _conv1x1(self.score[3], hidden), update)

    def gate_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Attention logits (B, 1, n) for node features z of shape (B, F, n)."""
        if not (self.checkpoint and torch.is_grad_enabled()):
            return self._logits(z, True)
        calls: list[int] = []

        def run(inp: torch.Tensor) -> torch.Tensor:
            calls.append(1)  # the recomputation during backward must not touch BN statistics
            return self._logits(inp, len(calls) == 1)

        return _checkpoint(run, z, use_reentrant=False)


class RGASpatial(_RelationGate):
    """RGA-S: one weight in (0, 1) per spatial position, shared by all channels."""

    op_name = "rga_s"

    def __init__(self, channels: int, height: int, width: int, c_ratio: int = 8,
                 s_ratio: int = 8, d_ratio: int = 8, checkpoint: bool = False) -> None:
        n = height * width
        super().__init__(channels, height, width, feat_dim=channels, num_nodes=n,
                         emb_dim=max(1, channels // c_ratio), rel_dim=max(1, n // s_ratio),
                         d_ratio=d_ratio, checkpoint=checkpoint)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights, shape (B, 1, H, W)."""
        self._check_input(x)
        b, _, h, w = x.shape
        return torch.sigmoid(self.gate_logits(x.flatten(2))).view(b, 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RGAChannel(_RelationGate):
    """RGA-C: one weight in (0, 1) per channel, shared by all positions."""

    op_name = "rga_c"

    def __init__(self, channels: int, height: int, width: int, c_ratio: int = 8,
                 s_ratio: int = 8, d_ratio: int = 8, checkpoint: bool = False) -> None:
        n = height * width
        super().__init__(channels, height, width, feat_dim=n, num_nodes=channels,
                         emb_dim=max(1, n // s_ratio), rel_dim=max(1, channels // c_ratio),
                         d_ratio=d_ratio, checkpoint=checkpoint)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The weights, shape (B, C, 1, 1)."""
        self._check_input(x)
        b, c = x.shape[:2]
        # nodes are channels: (B, H*W, C), a view of x
        return torch.sigmoid(self.gate_logits(x.flatten(2).transpose(1, 2))).view(b, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RGASpatialChannel(nn.Module):
    """RGA-SC: RGA-S, then RGA-C on its output (the official sequential order)."""

    def __init__(self, channels: int, height: int, width: int, c_ratio: int = 8,
                 s_ratio: int = 8, d_ratio: int = 8, checkpoint: bool = False) -> None:
        super().__init__()
        args = (channels, height, width, c_ratio, s_ratio, d_ratio, checkpoint)
        self.spatial = RGASpatial(*args)
        self.channel = RGAChannel(*args)
        self.spatial.op_name = self.channel.op_name = "rga_sc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(self.spatial(x))


def _check_ratios(op: str, c_ratio: int, s_ratio: int, d_ratio: int) -> None:
    for name, value in (("c_ratio", c_ratio), ("s_ratio", s_ratio), ("d_ratio", d_ratio)):
        check_param(op, name, value, value >= 1, "an integer >= 1")


@register_op("rga_s")
def rga_s(channels: int, height: int, width: int, *, c_ratio: int = 8, s_ratio: int = 8,
          d_ratio: int = 8, checkpoint: bool = False) -> nn.Module:
    """Spatial RGA for a fixed (channels, height, width)."""
    _check_ratios("rga_s", c_ratio, s_ratio, d_ratio)
    return RGASpatial(channels, height, width, c_ratio, s_ratio, d_ratio, checkpoint)


@register_op("rga_c")
def rga_c(channels: int, height: int, width: int, *, c_ratio: int = 8, s_ratio: int = 8,
          d_ratio: int = 8, checkpoint: bool = False) -> nn.Module:
    """Channel RGA for a fixed (channels, height, width)."""
    _check_ratios("rga_c", c_ratio, s_ratio, d_ratio)
    return RGAChannel(channels, height, width, c_ratio, s_ratio, d_ratio, checkpoint)


@register_op("rga_sc")
def rga_sc(channels: int, height: int, width: int, *, c_ratio: int = 8, s_ratio: int = 8,
           d_ratio: int = 8, checkpoint: bool = False) -> nn.Module:
    """RGA-S followed by RGA-C, for a fixed (channels, height, width)."""
    _check_ratios("rga_sc", c_ratio, s_ratio, d_ratio)
    return RGASpatialChannel(channels, height, width, c_ratio, s_ratio, d_ratio, checkpoint)
