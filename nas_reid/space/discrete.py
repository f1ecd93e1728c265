"""The discrete network of a genotype: what retraining, evaluation and export use.

:func:`build_model` needs the genotype and nothing else: the backbone it names (torchvision
ResNet, last stride as recorded; or the searched mobile backbone, built as the real narrower
network of its choices, :class:`~nas_reid.space.mobile.MobileBackbone`), after each cell position a :class:`DiscreteCell` holding only
the chosen ops as plain modules, and the same BNNeck head and ``forward`` dict as the supernet
(``feat``, ``feat_bn``, and ``logits`` in training). Each op is built by the op registry with the
genotype's parameters at the position's ``(C, H, W)``, exactly as the supernet builds that
candidate, so the modules (types, shapes, parameter counts) are those of the supernet's chosen
candidates; :func:`inherit_weights` copies them over.

Only live edges are built (those on a path to the cell's output node, see
:meth:`nas_reid.space.genotype.CellGenotype.live_edges`): a dead edge cannot change the output and
would leave parameters without gradients (which DDP rejects). A cell's ops are named
``e<source>_<target>`` (``cells.layer3.ops.e0_1.mlp.0.weight``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from nas_reid.ops import build_op
from nas_reid.space.backbone import ResNetBackbone
from nas_reid.space.config import canonical_params
from nas_reid.space.genotype import CellGenotype, Genotype, GenotypeError
from nas_reid.space.mobile import MobileBackbone, narrow_state_dict
from nas_reid.space.supernet import BNNeck, check_input, run_stages

if TYPE_CHECKING:
    from nas_reid.space.supernet import Supernet


def edge_key(source: int, target: int) -> str:
    return f"e{source}_{target}"


class DiscreteCell(nn.Module):
    """A cell with one fixed op per live edge; output = the last node."""

    def __init__(self, cell: "CellGenotype", channels: int, height: int, width: int) -> None:
        super().__init__()
        self.position = cell.position
        self.nodes = cell.nodes
        self.shape = (channels, height, width)
        self.edge_list = [(e.source, e.target) for e in cell.live_edges()]
        self.ops = nn.ModuleDict({
            edge_key(e.source, e.target): build_op(e.op, channels, height, width, **e.params)
            for e in cell.live_edges()
        })

    def extra_repr(self) -> str:
        return f"nodes={self.nodes}, edges={self.edge_list}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states: dict[int, torch.Tensor] = {0: x}
        for target in range(1, self.nodes + 1):
            node = None
            for source, t in self.edge_list:
                if t == target:
                    out = self.ops[edge_key(source, t)](states[source])
                    node = out if node is None else node + out
            if node is not None:
                states[target] = node
        return states[self.nodes]


class ReIDNet(nn.Module):
    """Backbone + discrete cells + BNNeck, built from a genotype (see :func:`build_model`)."""

    def __init__(self, genotype: "Genotype", num_classes: int, *,
                 backbone_weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.genotype = genotype
        self.input_size = genotype.input_size
        mobile = genotype.backbone.mobile
        if mobile is not None:
            if backbone_weights is not None:
                raise GenotypeError(
                    f"backbone weights: the searched {genotype.backbone.name} backbone is trained "
                    "from scratch; no weights file can be loaded into it")
            self.backbone = MobileBackbone(mobile, genotype.backbone.last_stride)
        else:
            self.backbone = ResNetBackbone(genotype.backbone.name, genotype.backbone.last_stride,
                                           weights=backbone_weights)
        shapes = genotype.position_shapes()
        self.cells = nn.ModuleDict({
            cell.position: DiscreteCell(cell, *shapes[cell.position]) for cell in genotype.cells
        })
        self.head = BNNeck(self.backbone.out_channels, num_classes)

    def num_parameters(self) -> int:
        """Number of parameter elements (frozen ones included)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.input_size, "model of this genotype")
        fmap = run_stages(self.backbone, self.cells, x, lambda _position, cell, z: cell(z))
        return self.head(fmap)


def build_model(genotype: "Genotype", num_classes: int, *,
                backbone_weights: str | os.PathLike | None = None) -> ReIDNet:
    """The discrete re-ID network of ``genotype`` (randomly initialised, or with ImageNet
    backbone weights from a local torchvision state_dict file)."""
    if not isinstance(genotype, Genotype):
        raise TypeError(f"build_model needs a Genotype, got {type(genotype).__name__} "
                        "(load a file with Genotype.from_json)")
    return ReIDNet(genotype, num_classes, backbone_weights=backbone_weights)


@torch.no_grad()
def inherit_weights(model: ReIDNet, supernet: "Supernet") -> None:
    """Copy the supernet's backbone, head and chosen candidates' weights (and buffers) into
    ``model``. The genotype must come from the supernet's space (same hash); each edge's op is
    matched to the candidate with the same name and parameters (defaults filled in). A searched
    mobile backbone gets the channels and kernel centres its choices select
    (:func:`~nas_reid.space.mobile.narrow_state_dict`); its cells must sit after stages at their
    widest."""
    net = getattr(supernet, "module", supernet)
    space = net.space
    if model.genotype.space.hash != space.canonical_hash():
        raise GenotypeError(
            f"inherit_weights: the genotype's space hash {model.genotype.space.hash} is not the "
            f"supernet's ({space.canonical_hash()})")
    candidates = [(op.name, op.full_params()) for op in space.ops]
    source = net.state_dict()
    own = model.state_dict()
    target = {}
    if model.genotype.backbone.mobile is not None:  # the chosen widths, kernels and blocks
        wide = {k: v for k, v in source.items() if k.startswith("backbone.")}
        target.update(narrow_state_dict(wide, {k: v for k, v in own.items() if k.startswith("backbone.")}))
        widest = space.position_shapes()
        for position, shape in model.genotype.position_shapes().items():
            if shape != widest[position]:
                raise GenotypeError(
                    f"inherit_weights: the cell at {position} is built for {shape[0]} channels, "
                    f"the supernet's for {widest[position][0]}; a narrower cell's ops are other "
                    "modules (an SE of fewer hidden units, ...), so only cells after a stage "
                    "at its widest can inherit weights")
    for key in own:
        if key in target:
            continue
        if not key.startswith("cells."):
            target[key] = source[key]
            continue
        _, position, _, edge, rest = key.split(".", 4)
        s, t = (int(v) for v in edge[1:].split("_"))
        chosen = next(e for e in model.genotype.cell(position).edges if (e.source, e.target) == (s, t))
        wanted = (chosen.op, canonical_params(chosen.op, chosen.params))
        if wanted not in candidates:
            raise GenotypeError(
                f"inherit_weights: {position} edge {s} -> {t} uses {chosen.op} {chosen.params}, "
                "which is not a candidate of the supernet's space")
        k = candidates.index(wanted)
        e = net.cells[position].edge_list.index((s, t))
        target[key] = source[f"cells.{position}.edges.{e}.candidates.{k}.{rest}"]
    model.load_state_dict(target)
