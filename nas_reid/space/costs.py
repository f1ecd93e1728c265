"""What a genotype costs, for one image at its input size: the figures ``nas-reid genotype show``
prints, the search's cost term and the benchmarks' tables use.

Parameters and forward FLOPs (FLOPs as
:func:`nas_reid.ops.registry.op_cost` counts them: 2 per multiply-accumulate of every
convolution and matrix product, element-wise work ignored):

- :func:`cell_costs`: every cell, from ``op_cost`` at the cell's ``(C, H, W)``
  (:meth:`~nas_reid.space.genotype.Genotype.position_shapes`). Only live edges count: the discrete
  network builds no dead edge;
- :func:`backbone_cost`: the backbone, built on the ``meta`` device (no memory, no compute)
  to count its parameters. A searched mobile backbone's FLOPs are
  :func:`~nas_reid.space.mobile.arch_flops`; a ResNet's
  :func:`~nas_reid.space.backbone.resnet_flops` (a test checks both against the built model);
- :func:`network_cost`: the whole network of
  :func:`~nas_reid.space.discrete.build_model` in eval mode: backbone, cells and the BNNeck's
  BatchNorm. The classifier is left out (its size is the number of training identities, which
  the genotype does not fix, and it does not run in eval mode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from nas_reid.ops.registry import cached_op_cost
from nas_reid.space.genotype import Genotype


@dataclass(frozen=True)
class EdgeCost:
    source: int
    target: int
    op: str
    params: dict[str, Any]
    live: bool
    parameters: int
    """0 for a dead edge (not built)."""
    flops: int


@dataclass(frozen=True)
class CellCost:
    """Parameters and forward FLOPs (one image) of a cell's live edges at its ``shape``."""

    position: str
    shape: tuple[int, int, int]
    nodes: int
    edges: list[EdgeCost]

    @property
    def parameters(self) -> int:
        return sum(e.parameters for e in self.edges)

    @property
    def flops(self) -> int:
        return sum(e.flops for e in self.edges)


def full_params(op: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of ``op`` with its defaults filled in (as given if the op rejects them)."""
    from nas_reid.space.config import canonical_params

    try:
        return canonical_params(op, dict(params))
    except Exception:
        return dict(params)


def cell_costs(genotype: Genotype) -> list[CellCost]:
    """The :class:`CellCost` of every cell, in network order (dead edges cost 0)."""
    shapes = genotype.position_shapes()
    out = []
    for cell in genotype.cells:
        c, h, w = shapes[cell.position]
        live = {(e.source, e.target) for e in cell.live_edges()}
        edges = []
        for e in cell.edges:
            is_live = (e.source, e.target) in live
            p, f = (cached_op_cost(e.op, c, h, w, tuple(sorted(e.params.items()))) if is_live
                    else (0, 0))
            edges.append(EdgeCost(e.source, e.target, e.op, dict(e.params), is_live, p, f))
        out.append(CellCost(cell.position, (c, h, w), cell.nodes, edges))
    return out


def total_cost(costs: Iterable[CellCost]) -> tuple[int, int]:
    """``(parameters, flops)`` summed over cells."""
    costs = list(costs)
    return sum(c.parameters for c in costs), sum(c.flops for c in costs)


@lru_cache(maxsize=64)
def _backbone_build(name: str, last_stride: int, input_size: tuple[int, int],
                    choices: str) -> tuple[int, int, int]:
    """``(parameters, FLOPs, output channels)`` of a backbone; ``choices`` is the genotype's
    ``backbone.choices`` as JSON text (``{}`` for a ResNet)."""
    import torch

    from nas_reid.space.backbone import ResNetBackbone, resnet_flops
    from nas_reid.space.mobile import MobileArch, MobileBackbone, arch_flops

    arch = MobileArch.model_validate(json.loads(choices)) if choices != "{}" else None
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
        net = (MobileBackbone(arch, last_stride) if arch is not None
               else ResNetBackbone(name, last_stride)).eval()
    params = sum(p.numel() for p in net.parameters())
    if arch is not None:
        flops = arch_flops(arch, input_size, last_stride)
    else:
        flops = resnet_flops(name, last_stride, input_size)
    return int(params), int(flops), int(net.out_channels)


def _backbone_key(genotype: Genotype) -> tuple[str, int, tuple[int, int], str]:
    b = genotype.backbone
    return b.name, b.last_stride, genotype.input_size, json.dumps(b.choices, sort_keys=True)


def backbone_cost(genotype: Genotype) -> tuple[int, int]:
    """``(parameters, FLOPs)`` of the genotype's backbone for one image at its input size (a
    searched mobile backbone as chosen, with its head conv; a ResNet without pooling and fc)."""
    params, flops, _ = _backbone_build(*_backbone_key(genotype))
    return params, flops


def bnneck_parameters(genotype: Genotype) -> int:
    """Parameters of the BNNeck without its classifier: the BatchNorm's weight and (frozen)
    bias over the backbone's output channels."""
    return 2 * _backbone_build(*_backbone_key(genotype))[2]


def network_cost(genotype: Genotype) -> tuple[int, int]:
    """``(parameters, FLOPs)`` of the genotype's whole network for one image in eval mode:
    backbone, live cell edges and the BNNeck's BatchNorm. The classifier is not counted (its
    ``features x identities`` weights depend on the training set, and it does not run in eval
    mode); the pooling and BatchNorm of the BNNeck cost no FLOPs by the op_cost convention."""
    bp, bf = backbone_cost(genotype)
    cp, cf = total_cost(cell_costs(genotype))
    return bp + cp + bnneck_parameters(genotype), bf + cf
