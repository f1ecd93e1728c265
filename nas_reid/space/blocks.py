"""The blocks a network of a search space is made of: one enumeration for the cost lookup table.

FBNet prices a network by a lookup table of per-block costs: the network's cost is the sum of
its blocks' (:mod:`nas_reid.search.latency`). This module names those blocks. Each is a small
frozen dataclass with ``key`` (its canonical text, the lookup table's key), ``input_shape``
(the ``(C, H, W)`` it takes), :meth:`build` (the module alone, exactly as the network builds
it) and :meth:`flops` (its FLOPs for one image, the :func:`nas_reid.ops.op_cost` convention).
The kinds: :class:`StemBlock`, :class:`InvertedResidualBlock`, :class:`HeadBlock`,
:class:`OpBlock` and :class:`ResNetBlock`; the BNNeck is left out. :func:`network_blocks` lists
the blocks of one derived network (a genotype); :func:`space_blocks` every block the space's
networks can hold, laid out along the choices (:class:`SpaceBlocks`; the lookup table is
measured over their union, :meth:`SpaceBlocks.blocks`).
The kinds and the two views in detail: docs/internals.md, section `nas_reid.space.blocks`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Union

from torch import nn

from nas_reid.ops import OpError, build_op, cached_op_cost
from nas_reid.space.backbone import ResNetBackbone, resnet_flops
from nas_reid.space.cell import cell_edges
from nas_reid.space.config import SearchSpace, canonical_params
from nas_reid.space.mobile import (
    InvertedResidual,
    MobileArch,
    _half,
    _stage_resolutions,
    block_flops,
    effective_stride,
    head_conv,
    stem_conv,
)

if TYPE_CHECKING:
    from nas_reid.space.genotype import Genotype


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


@dataclass(frozen=True)
class StemBlock:
    """A mobile backbone's stem: 3x3/2 conv from RGB to ``cout``, BatchNorm, activation."""

    cout: int
    hw: tuple[int, int]
    activation: str

    @property
    def key(self) -> str:
        return f"stem:3->{self.cout}:k3:s2:{_hw(self.hw)}:{self.activation}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.hw)

    def build(self) -> nn.Module:
        return stem_conv(self.cout, self.activation)

    def flops(self) -> int:
        return 2 * _half(self.hw[0]) * _half(self.hw[1]) * 3 * self.cout * 9


@dataclass(frozen=True)
class InvertedResidualBlock:
    """One inverted-residual block (:class:`~nas_reid.space.mobile.InvertedResidual`): hidden
    width ``expansion x cin``; a stage's first block is ``plain``, the later ones ``res``."""

    cin: int
    cout: int
    expansion: int
    kernel: int
    stride: int
    residual: bool
    hw: tuple[int, int]
    activation: str

    @property
    def key(self) -> str:
        return (f"ir:{self.cin}->{self.cout}:e{self.expansion}:k{self.kernel}:s{self.stride}:"
                f"{'res' if self.residual else 'plain'}:{_hw(self.hw)}:{self.activation}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cin, *self.hw)

    def build(self) -> nn.Module:
        return InvertedResidual(self.cin, self.expansion * self.cin, self.cout, self.kernel,
                                self.stride, expand=self.expansion != 1, residual=self.residual,
                                activation=self.activation)

    def flops(self) -> int:
        return block_flops(self.cin, self.cout, self.expansion, self.kernel, self.stride, self.hw)


@dataclass(frozen=True)
class HeadBlock:
    """A mobile backbone's head: 1x1 conv from ``cin`` to ``cout``, BatchNorm, activation."""

    cin: int
    cout: int
    hw: tuple[int, int]
    activation: str

    @property
    def key(self) -> str:
        return f"head:{self.cin}->{self.cout}:{_hw(self.hw)}:{self.activation}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.cin, *self.hw)

    def build(self) -> nn.Module:
        return head_conv(self.cin, self.cout, self.activation)

    def flops(self) -> int:
        return 2 * self.hw[0] * self.hw[1] * self.cin * self.cout


@dataclass(frozen=True)
class OpBlock:
    """One candidate op with all its parameters (sorted ``(key, value)`` pairs, defaults filled
    in) at input size ``(C, H, W)``."""

    name: str
    params: tuple[tuple[str, Any], ...]
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, name: str, params: dict[str, Any], shape: tuple[int, int, int]) -> "OpBlock":
        """The block of op ``name`` with ``params`` (canonicalised: a genotype's and a space's
        spelling of one op give one key)."""
        try:
            full = canonical_params(name, dict(params))
        except OpError:  # an unknown op: keep its parameters as given (building it will fail)
            full = dict(params)
        return cls(name, tuple(sorted(full.items())), tuple(shape))

    @property
    def key(self) -> str:
        params = json.dumps(dict(self.params), sort_keys=True, separators=(",", ":"))
        return f"op:{self.name}:{params}:{'x'.join(map(str, self.shape))}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.shape

    def build(self) -> nn.Module:
        return build_op(self.name, *self.shape, **dict(self.params))

    def flops(self) -> int:
        return cached_op_cost(self.name, *self.shape, self.params)[1]


@dataclass(frozen=True)
class ResNetBlock:
    """A fixed torchvision ResNet backbone (stem and layer1..layer4) as one block."""

    name: str
    last_stride: int
    hw: tuple[int, int]

    @property
    def key(self) -> str:
        return f"resnet:{self.name}:ls{self.last_stride}:{_hw(self.hw)}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, *self.hw)

    def build(self) -> nn.Module:
        return ResNetBackbone(self.name, self.last_stride)

    def flops(self) -> int:
        return resnet_flops(self.name, self.last_stride, self.hw)


Block = Union[StemBlock, InvertedResidualBlock, HeadBlock, OpBlock, ResNetBlock]


# ------------------------------------------------------------------------------ one network


def mobile_blocks(arch: MobileArch, input_hw: tuple[int, int], last_stride: int = 1) -> list[Block]:
    """The blocks of a chosen mobile backbone in network order: stem, every kept block, head."""
    act = arch.activation
    out: list[Block] = [StemBlock(arch.stem, tuple(input_hw), act)]
    cin = arch.stem
    for stage, (hw_in, hw_out) in zip(arch.stages, _stage_resolutions(arch, input_hw, last_stride)):
        out.append(InvertedResidualBlock(cin, stage.width, stage.expansion, stage.kernel,
                                         effective_stride(stage, last_stride), False, hw_in, act))
        out += [InvertedResidualBlock(stage.width, stage.width, stage.expansion, stage.kernel, 1,
                                      True, hw_out, act)] * (stage.depth - 1)
        cin, hw = stage.width, hw_out
    if arch.head:
        out.append(HeadBlock(cin, arch.head, hw, act))
    return out


def network_blocks(genotype: "Genotype") -> list[Block]:
    """Every block of the genotype's network that runs, in network order: the backbone's (a
    ResNet is one block) and each cell's live edges at the cell's size."""
    b = genotype.backbone
    mobile = b.mobile
    out = (mobile_blocks(mobile, genotype.input_size, b.last_stride) if mobile is not None
           else [ResNetBlock(b.name, b.last_stride, genotype.input_size)])
    shapes = genotype.position_shapes()
    for cell in genotype.cells:
        out += [OpBlock.of(e.op, e.params, shapes[cell.position]) for e in cell.live_edges()]
    return out


# ------------------------------------------------------------------------------ a whole space


@dataclass(frozen=True)
class StageBlocks:
    """Every block one mobile stage can hold, indexed by its choices' options (option order)."""

    name: str
    keys: dict[str, str]
    """``{"width": "s2_width", "kernel": ..., "expansion": ...}``: the architecture choice of
    each dimension (absent from the probabilities when it has a single option)."""
    first: tuple
    """``first[i][j][k][e]``: the first block for the previous stage's width ``i`` (the stem's
    for the first stage: one option), width ``j``, kernel ``k``, expansion ``e``."""
    rest: tuple
    """``rest[j][k][e]``: each later block (``()`` for a one-block stage)."""
    skips: tuple[str | None, ...]
    """Per later block: its skip choice, or None when it cannot be skipped."""


@dataclass(frozen=True)
class CellBlocks:
    """Every op a cell position's edges can hold, at every width the position can have."""

    position: str
    width_key: str | None
    """The width choice of the stage before the cell (None: a fixed backbone; absent from the
    probabilities when the stage has a single width)."""
    edges: int
    ops: tuple
    """``ops[j][o]``: candidate ``o`` at width option ``j``."""


@dataclass(frozen=True)
class SpaceBlocks:
    """Every block the networks of a space can hold (see the module doc). A fixed backbone is
    ``resnet``; a searchable one is ``stem``, ``stages`` and ``head`` (one per last width,
    ``()`` without a head conv)."""

    resnet: ResNetBlock | None
    stem: StemBlock | None
    stages: tuple[StageBlocks, ...]
    head: tuple[HeadBlock, ...]
    cells: tuple[CellBlocks, ...]

    def blocks(self) -> list[Block]:
        """Every distinct block (by key), in network order."""
        seen: dict[str, Block] = {}
        for block in self._all():
            seen.setdefault(block.key, block)
        return list(seen.values())

    def keys(self) -> list[str]:
        return [b.key for b in self.blocks()]

    def _all(self) -> Iterator[Block]:
        if self.resnet is not None:
            yield self.resnet
        if self.stem is not None:
            yield self.stem
        for stage in self.stages:
            yield from _flatten(stage.first)
            yield from _flatten(stage.rest)
        yield from self.head
        for cell in self.cells:
            yield from _flatten(cell.ops)


def _flatten(grid) -> Iterator[Block]:
    if isinstance(grid, tuple):
        for item in grid:
            yield from _flatten(item)
    else:
        yield grid


def space_blocks(space: SearchSpace) -> SpaceBlocks:
    """Every block the networks of ``space`` can hold, along its choices."""
    bb = space.backbone
    options = space.position_shape_options()
    cells = []
    for position in space.cells.positions:
        width_key = None
        if bb.mobile is not None:
            width_key = f"{[s for s in bb.mobile.stages if s.layer == position][-1].name}_width"
        cells.append(CellBlocks(
            position, width_key, len(cell_edges(space.cells.nodes)),
            tuple(tuple(OpBlock.of(op.name, op.full_params(), shape) for op in space.ops)
                  for shape in options[position])))
    if bb.mobile is None:
        return SpaceBlocks(ResNetBlock(bb.name, bb.last_stride, space.input_size), None, (), (),
                           tuple(cells))
    config, ls, act = bb.mobile, bb.last_stride, bb.mobile.activation
    resolutions = _stage_resolutions(config.widest(ls), space.input_size, ls)
    stages = []
    prev = [config.stem]
    for stage, (hw_in, hw_out) in zip(config.stages, resolutions):
        opts = config.options(stage)
        widths, kernels, expansions = config.widths(stage), opts["kernel"], opts["expansion"]
        stride = effective_stride(stage, ls)
        first = tuple(tuple(tuple(tuple(
            InvertedResidualBlock(cin, w, e, k, stride, False, hw_in, act)
            for e in expansions) for k in kernels) for w in widths) for cin in prev)
        rest = tuple(tuple(tuple(
            InvertedResidualBlock(w, w, e, k, 1, True, hw_out, act)
            for e in expansions) for k in kernels) for w in widths) if stage.blocks > 1 else ()
        skips = tuple(f"{stage.name}_b{j}_skip" if opts["skip"] else None
                      for j in range(1, stage.blocks))
        stages.append(StageBlocks(stage.name, {kind: f"{stage.name}_{kind}" for kind in
                                               ("width", "kernel", "expansion")},
                                  first, rest, skips))
        prev = widths
    head = tuple(HeadBlock(w, config.head, resolutions[-1][1], act)  # at every last width
                 for w in prev) if config.head else ()
    return SpaceBlocks(None, StemBlock(config.stem, space.input_size, act), tuple(stages), head,
                       tuple(cells))
