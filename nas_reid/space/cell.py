"""A search cell: a small DAG of mixed ops placed after one backbone stage.

Node 0 is the cell's input (the stage output, shape ``(B, C, H, W)``); intermediate nodes are
1..n, and node ``t = sum_{s < t} mixed_op(s -> t)(node s)``; the cell's output is node n. Every
pair ``s < t`` is one edge with one :class:`~nas_reid.space.mixed.MixedOp`; edges are numbered
by target, then source: ``(0,1), (0,2), (1,2), (0,3), ...`` (n(n+1)/2 in all), which is also the
row order of the cell's architecture parameters. A one-node cell is "pick one op for this
position". The cell owns no architecture parameter: the supernet passes its
``(num_edges, num_ops)`` matrix to :meth:`SearchCell.forward`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nas_reid.ops import build_op
from nas_reid.space.config import OpSpec
from nas_reid.space.mixed import MixedOp


def cell_edges(nodes: int) -> list[tuple[int, int]]:
    """All ``(source, target)`` edges of an n-node cell, by target then source."""
    return [(s, t) for t in range(1, nodes + 1) for s in range(t)]


class SearchCell(nn.Module):
    """A cell of mixed ops for inputs of shape ``(B, channels, height, width)``."""

    def __init__(self, ops: Sequence[OpSpec], channels: int, height: int, width: int,
                 nodes: int = 1, strategy: str = "softmax") -> None:
        super().__init__()
        self.nodes = nodes
        self.shape = (channels, height, width)
        self.edge_list = cell_edges(nodes)
        names = [op.name for op in ops]
        self.edges = nn.ModuleList(
            MixedOp([build_op(op.name, channels, height, width, **op.params) for op in ops],
                    names, strategy)
            for _ in self.edge_list
        )

    @property
    def num_edges(self) -> int:
        return len(self.edge_list)

    @property
    def num_ops(self) -> int:
        return len(self.edges[0].candidates)

    def extra_repr(self) -> str:
        c, h, w = self.shape
        return f"nodes={self.nodes}, shape=({c}, {h}, {w})"

    def forward(self, x: torch.Tensor, alpha: torch.Tensor,
                tau: float | torch.Tensor = 1.0) -> torch.Tensor:
        if alpha.shape != (self.num_edges, self.num_ops):
            raise ValueError(f"cell alpha must have shape ({self.num_edges}, {self.num_ops}), "
                             f"got {tuple(alpha.shape)}")
        states = [x]
        e = 0
        for _target in range(1, self.nodes + 1):
            node = None
            for source in range(_target):
                out = self.edges[e](states[source], alpha[e], tau)
                node = out if node is None else node + out
                e += 1
            states.append(node)
        return states[-1]
