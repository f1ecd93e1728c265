"""The supernet: a backbone, a search cell after each configured stage, and a BNNeck head.

Backbone: a fixed torchvision ResNet, or the searchable mobile backbone
(:mod:`nas_reid.space.mobile_supernet`) with its own architecture parameters
``arch_backbone.<choice>``. The cells' architecture parameters are one ``nn.Parameter`` per cell
position, ``arch.<position>``, of shape ``(num_edges, num_ops)`` (rows: the cell's edges in
:func:`~nas_reid.space.cell.cell_edges` order; columns: the space's candidate ops in YAML order).
:meth:`Supernet.arch_parameters` and :meth:`Supernet.weight_parameters` split the parameters by
prefix: disjoint, and together every parameter. The Gumbel temperature is the buffer ``tau``
(:meth:`Supernet.set_temperature`). Head: the BNNeck (as in the official RGA model,
microsoft/Relation-Aware-Global-Attention-Networks ``reid/models/rga_model.py``, and in BoT,
Luo et al., CVPR Workshops 2019); ``forward`` returns ``{"feat", "feat_bn"}`` plus ``"logits"``
in training.
The initialisation, the temperature and the head in detail: docs/internals.md, section
`nas_reid.space.supernet`.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas_reid.space.backbone import POSITIONS, ResNetBackbone
from nas_reid.space.cell import SearchCell
from nas_reid.space.config import WEIGHT_NAMES, SearchSpace, SpaceError
from nas_reid.space.mobile import MobileArch
from nas_reid.space.mobile_supernet import MobileSupernetBackbone

ARCH_PREFIX = "arch."
ARCH_PREFIXES = (ARCH_PREFIX, "arch_backbone.")
"""Names of architecture parameters start with one of these (cells, searchable backbone)."""


class BNNeck(nn.Module):
    """GAP -> ``feat`` -> BatchNorm1d (frozen bias) -> ``feat_bn`` -> Linear (no bias) -> ``logits``."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise SpaceError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.bottleneck = nn.BatchNorm1d(in_features)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_features, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = fmap.mean(dim=(2, 3))
        feat_bn = self.bottleneck(feat)
        out = {"feat": feat, "feat_bn": feat_bn}
        if self.training:
            out["logits"] = self.classifier(feat_bn)
        return out


def check_input(x: torch.Tensor, input_size: tuple[int, int], what: str) -> None:
    """Raise :class:`SpaceError` unless ``x`` is ``(B, 3, H, W)`` at the built-for size."""
    h, w = input_size
    if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w):
        raise SpaceError(
            f"{what} was built for input images of 3x{h}x{w} (channels x height x width), "
            f"got a tensor of shape {tuple(x.shape)}; resize the images to {h}x{w} "
            "(the attention ops depend on the spatial size)")


def run_stages(backbone: nn.Module, cells: nn.ModuleDict, x: torch.Tensor, cell_fn) -> torch.Tensor:
    """Stem, then each stage followed by its cell (``cell_fn(position, cell, x)``) if it has
    one, then the backbone's ``finish`` (the mobile backbone's head conv; ResNets have none)."""
    x = backbone.stem(x)
    for position in POSITIONS:
        x = backbone.stage(position)(x)
        if position in cells:
            x = cell_fn(position, cells[position], x)
    finish = getattr(backbone, "finish", None)
    return finish(x) if finish is not None else x


class Supernet(nn.Module):
    """Backbone + one :class:`SearchCell` per configured position + :class:`BNNeck`.

    ``load_weights=False`` skips the backbone weights file named by the space (for a supernet that
    will receive a checkpoint anyway); a space's ``weights: synthetic`` / ``none`` names no file
    and is never loaded here. ``backbone_weights`` loads that file instead (what the search
    resolved ``synthetic`` to, :func:`nas_reid.train.pretrain.resolve_backbone_weights`).
    """

    def __init__(self, space: SearchSpace, num_classes: int, *, load_weights: bool = True,
                 backbone_weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.space = space
        self.input_size = space.input_size
        bb = space.backbone
        if bb.mobile is not None:
            self.backbone = MobileSupernetBackbone(bb.mobile, bb.last_stride, space.input_size)
        else:
            if backbone_weights is None and load_weights and bb.weights not in WEIGHT_NAMES:
                backbone_weights = bb.weights
            self.backbone = ResNetBackbone(bb.name, bb.last_stride, weights=backbone_weights)
        shapes = space.position_shapes()
        self.cells = nn.ModuleDict({
            position: SearchCell(space.ops, *shapes[position], nodes=space.cells.nodes,
                                 strategy=space.sampling.strategy)
            for position in space.cells.positions
        })
        init = (torch.zeros if space.sampling.strategy == "uniform"  # untrained: stays uniform
                else lambda *shape: 1e-3 * torch.randn(*shape))
        self.arch = nn.ParameterDict({
            position: nn.Parameter(init(cell.num_edges, cell.num_ops))
            for position, cell in self.cells.items()
        })
        choices = getattr(self.backbone, "choices", [])
        self.arch_backbone = nn.ParameterDict()  # in network order (a dict would be sorted)
        for c in choices:
            self.arch_backbone[c.key] = nn.Parameter(1e-3 * torch.randn(len(c.options)))
        self.head = BNNeck(self.backbone.out_channels, num_classes)
        self.register_buffer("tau", torch.tensor(float(space.sampling.tau.start)))

    # -- parameters

    def named_arch_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n.startswith(ARCH_PREFIXES)]

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(ARCH_PREFIXES)]

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters: ``arch.<position>``, one per cell, in network order,
        then a searchable backbone's ``arch_backbone.<choice>``."""
        return [p for _, p in self.named_arch_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (frozen ones included; filter on ``requires_grad`` if needed)."""
        return [p for _, p in self.named_weight_parameters()]

    @torch.no_grad()
    def arch_probabilities(self) -> dict[str, torch.Tensor]:
        """``{position: softmax(alpha)}``, each ``(num_edges, num_ops)``, detached, on the CPU."""
        return {p: F.softmax(a.detach().float(), dim=-1).cpu() for p, a in self.arch.items()}

    @torch.no_grad()
    def backbone_probabilities(self) -> dict[str, torch.Tensor]:
        """``{choice key: softmax(alpha)}`` of a searchable backbone (``{}`` for a fixed one)."""
        return {k: F.softmax(a.detach().float(), dim=-1).cpu() for k, a in self.arch_backbone.items()}

    def derive_backbone(self) -> "MobileArch | None":
        """The backbone the architecture parameters point to (None for a fixed backbone)."""
        if not isinstance(self.backbone, MobileSupernetBackbone):
            return None
        return self.backbone.derive_arch(self.backbone_probabilities())

    # -- temperature

    @property
    def temperature(self) -> float:
        return float(self.tau)

    def set_temperature(self, tau: float) -> None:
        """Set the Gumbel temperature (used by the ``gumbel`` strategy in training)."""
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise SpaceError(f"temperature must be a finite number > 0, got {tau!r}")
        self.tau.fill_(float(tau))

    # -- forward

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, self.input_size, f"supernet of search space {self.space.name!r}")
        if isinstance(self.backbone, MobileSupernetBackbone):
            return self.head(self._forward_mobile(x))
        fmap = run_stages(self.backbone, self.cells, x,
                          lambda position, cell, z: cell(z, self.arch[position], self.tau))
        return self.head(fmap)

    # -- one sub-network at a time (the ``uniform`` strategy's scoring)

    @contextmanager
    def fixed(self, choices: Mapping[str, Sequence[int]]) -> Iterator[None]:
        """Within the block every edge runs one candidate: ``choices[position][e]`` is the
        candidate index of edge ``e`` of that position's cell (positions left out keep their
        strategy's rule). Restored on exit, also after an exception."""
        edges = [(mixed, k) for position, ks in choices.items()
                 for mixed, k in zip(self.cells[position].edges, ks, strict=True)]
        try:
            for mixed, k in edges:
                mixed.fixed = int(k)
            yield
        finally:
            for mixed, _ in edges:
                mixed.fixed = None

    def first_cell_input(self, x: torch.Tensor) -> torch.Tensor:
        """The stem and the stages up to the first cell position: the part of a fixed
        backbone that no architecture choice changes (features to compute once and reuse)."""
        check_input(x, self.input_size, f"supernet of search space {self.space.name!r}")
        first = self._first_position()
        x = self.backbone.stem(x)
        for position in POSITIONS[:POSITIONS.index(first) + 1]:
            x = self.backbone.stage(position)(x)
        return x

    def segment(self, position: str, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The cell at ``position``, then the stages up to the next cell position (that stage
        included: it comes before its cell); after the last cell, the remaining stages and the
        head (its output dict). :meth:`first_cell_input` then one segment per position, in
        order, is :meth:`forward`."""
        x = self.cells[position](x, self.arch[position], self.tau)
        for stage in self._segment_stages(position):
            x = self.backbone.stage(stage)(x)
        return self.head(x) if position == list(self.cells)[-1] else x

    def segment_modules(self, position: str) -> list[nn.Module]:
        """The modules :meth:`segment` runs for ``position`` (its cell's every candidate)."""
        last = position == list(self.cells)[-1]
        return ([self.cells[position]] + [self.backbone.stage(s) for s in self._segment_stages(position)]
                + ([self.head] if last else []))

    def _segment_stages(self, position: str) -> list[str]:
        after = POSITIONS[POSITIONS.index(position) + 1:]
        stages = []
        for stage in after:
            stages.append(stage)
            if stage in self.cells:
                break
        return stages

    def _first_position(self) -> str:
        if isinstance(self.backbone, MobileSupernetBackbone):
            raise SpaceError("a searchable backbone has no fixed part before its first cell")
        return next(p for p in POSITIONS if p in self.cells)

    def _forward_mobile(self, x: torch.Tensor) -> torch.Tensor:
        """One draw of the backbone's choices for the whole batch; after a cell the stage's
        width mask is applied again (the cells are built for the widest stage output)."""
        bb = self.backbone
        draws = bb.draw(self.arch_backbone, self.tau, self.space.sampling.strategy)
        x, _ = bb.run_layer("stem", x, draws)
        for position in POSITIONS:
            x, mask = bb.run_layer(position, x, draws)
            if position in self.cells:
                x = self.cells[position](x, self.arch[position], self.tau)
                if mask is not None:
                    x = x * mask.to(x.dtype).view(1, -1, 1, 1)
        return bb.finish(x)
