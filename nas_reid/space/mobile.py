"""The searchable mobile backbone (FBNetV2 / MobileNetV2 family): its YAML, the chosen network
built from a genotype, its stage shapes and its FLOPs.

A 3x3/2 stem convolution, *stages* of MobileNetV2 inverted-residual blocks, then a 1x1 ``head``
convolution that the BNNeck pools. Each stage belongs to a *layer* group (``stem``, ``layer1``
.. ``layer4``), so the cell positions keep their names. The default table is MobileNetV2's, its
layer groups ending where Statistical-Deep-Learning/DCS-Attention
(``modeling/backbones/mobilenetv2_RGA/mobilenetv2_RGA.py``) places its attention.
``last_stride: 1`` sets every stride in the ``layer4`` group to 1. Per stage one *width*,
depthwise *kernel* and *expansion* is chosen for all its blocks, and per block after the first
whether to *skip* it. :class:`MobileArch` names a chosen backbone (a genotype's
``backbone.choices``); :class:`MobileBackbone` builds exactly that network, block ``j`` of
stage ``s`` under ``stages.<s>.b<j>`` (the supernet's names, see :func:`narrow_state_dict`).
:func:`arch_flops` follows :func:`nas_reid.ops.op_cost`'s convention: 2 per
multiply-accumulate of every convolution and linear layer, element-wise work ignored.
The macro-architecture, its default table and the choices in detail: docs/internals.md,
section `nas_reid.space.mobile`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from nas_reid.engine.schema import StrictModel

LAYERS = ("stem", "layer1", "layer2", "layer3", "layer4")
POSITIONS = LAYERS[1:]
MOBILE_BACKBONES = ("mobilenetv2",)
ACTIVATIONS = {"relu6": nn.ReLU6, "hswish": nn.Hardswish}



def make_divisible(value: float, divisor: int) -> int:
    """MobileNet's rounding: the nearest multiple of ``divisor`` (at least ``divisor``), one
    step up when rounding down would lose more than 10%."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


# ------------------------------------------------------------------------------ the YAML


class ChoicesConfig(StrictModel):
    """The options of a stage; their order is the column order of its architecture parameters."""

    width: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    kernel: list[Literal[3, 5, 7]] = Field(default_factory=lambda: [3], min_length=1)
    expansion: list[int] = Field(default_factory=lambda: [6], min_length=1)
    skip: bool = False
    """Whether each block after a stage's first may be skipped."""

    @field_validator("width")
    @classmethod
    def _width(cls, width: list[float]) -> list[float]:
        return check_widths(width)

    @field_validator("kernel")
    @classmethod
    def _kernel(cls, kernel: list[int]) -> list[int]:
        return _distinct(kernel)

    @field_validator("expansion")
    @classmethod
    def _expansion(cls, expansion: list[int]) -> list[int]:
        return check_expansions(expansion)


def check_widths(width: list[float]) -> list[float]:
    for i, f in enumerate(width):
        if not 0 < f <= 1:
            raise ValueError(f"[{i}]: a width is a fraction of the stage's channels in (0, 1], got {f}")
    return _distinct(width)


def check_expansions(expansion: list[int]) -> list[int]:
    for i, e in enumerate(expansion):
        if not 1 <= e <= 12:
            raise ValueError(f"[{i}]: an expansion must be in 1..12, got {e}")
    if 1 in expansion and len(expansion) > 1:
        raise ValueError(": expansion 1 (no expansion conv) can only be a stage's sole option")
    return _distinct(expansion)


def _distinct(values: list) -> list:
    for i, v in enumerate(values):
        if v in values[:i]:
            raise ValueError(f"[{i}]: {v!r} is listed twice")
    return values


class StageConfig(StrictModel):
    """One stage: ``blocks`` inverted-residual blocks of at most ``channels`` output channels;
    the first has stride ``stride``. ``width``/``kernel``/``expansion``/``skip`` override the
    global choices for this stage."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    layer: Literal["stem", "layer1", "layer2", "layer3", "layer4"]
    channels: int = Field(ge=1, le=4096)
    blocks: int = Field(ge=1, le=32)
    stride: Literal[1, 2] = 1
    width: list[float] | None = None
    kernel: list[Literal[3, 5, 7]] | None = None
    expansion: list[int] | None = None
    skip: bool | None = None


def check_stage_order(stages: list) -> None:
    """Unique stage names, layers in network order, and a stage in each of layer1..layer4."""
    names = [s.name for s in stages]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"stages[{i}].name: {name!r} is used twice")
    layers = [LAYERS.index(s.layer) for s in stages]
    for i in range(1, len(layers)):
        if layers[i] < layers[i - 1]:
            raise ValueError(f"stages[{i}].layer: {stages[i].layer!r} comes after "
                             f"{stages[i - 1].layer!r}; stages must be in network order")
    missing = [p for p in POSITIONS if p not in {s.layer for s in stages}]
    if missing:
        raise ValueError(f"stages: no stage in {', '.join(missing)}; each of layer1..layer4 "
                         "needs at least one stage (the cell positions are their ends)")


def _mobilenetv2_stages() -> list[StageConfig]:
    fixed = {"width": [1.0], "kernel": [3], "expansion": [1], "skip": False}
    rows = [("s1", "stem", 16, 1, 1), ("s2", "layer1", 24, 2, 2), ("s3", "layer2", 32, 3, 2),
            ("s4", "layer3", 64, 4, 2), ("s5", "layer3", 96, 3, 1), ("s6", "layer4", 160, 3, 2),
            ("s7", "layer4", 320, 1, 1)]
    return [StageConfig(name=n, layer=layer, channels=c, blocks=b, stride=s,
                        **(fixed if n == "s1" else {}))
            for n, layer, c, b, s in rows]


class MobileConfig(StrictModel):
    """``backbone.mobile`` of a search space (see the module doc)."""

    stem: int = Field(default=32, ge=1, le=4096)
    head: int = Field(default=1280, ge=0, le=8192)
    """Channels of the final 1x1 conv (0: none, the last stage's output is pooled)."""
    activation: Literal["relu6", "hswish"] = "relu6"
    divisor: int = Field(default=8, ge=1, le=64)
    stages: list[StageConfig] = Field(default_factory=_mobilenetv2_stages, min_length=1)
    choices: ChoicesConfig = Field(default_factory=ChoicesConfig)

    @model_validator(mode="after")
    def _check(self) -> "MobileConfig":
        check_stage_order(self.stages)
        checks = {"width": check_widths, "kernel": _distinct, "expansion": check_expansions}
        for i, stage in enumerate(self.stages):
            for key, check in checks.items():
                values = getattr(stage, key)
                if values is None:
                    continue
                if not values:
                    raise ValueError(f"stages[{i}].{key}: needs at least one option")
                try:
                    check(values)
                except ValueError as exc:
                    raise ValueError(f"stages[{i}].{key}{exc}") from None
            widths = [make_divisible(stage.channels * f, self.divisor) for f in self.options(stage)["width"]]
            for j, w in enumerate(widths):
                if w in widths[:j]:
                    raise ValueError(
                        f"stages[{i}]: widths {self.options(stage)['width']} of {stage.channels} "
                        f"channels round to {widths} (divisor {self.divisor}); two options give "
                        f"{w} channels")
        return self

    def options(self, stage: StageConfig) -> dict[str, Any]:
        """The stage's options: its overrides, else the global choices."""
        return {key: getattr(self.choices, key) if getattr(stage, key) is None else getattr(stage, key)
                for key in ("width", "kernel", "expansion", "skip")}

    def widths(self, stage: StageConfig) -> list[int]:
        """The stage's width options in channels, in option order."""
        return [make_divisible(stage.channels * f, self.divisor) for f in self.options(stage)["width"]]

    def widest(self, last_stride: int) -> "MobileArch":
        """The largest network of the space: widest, largest kernel and expansion, no skip."""
        stages = []
        for stage in self.stages:
            opts = self.options(stage)
            stages.append(StageArch(name=stage.name, layer=stage.layer, stride=stage.stride,
                                    width=max(self.widths(stage)), kernel=max(opts["kernel"]),
                                    expansion=max(opts["expansion"]), blocks=[True] * stage.blocks))
        return MobileArch(stem=self.stem, head=self.head, activation=self.activation, stages=stages)


# ------------------------------------------------------------------------------ a chosen network


class StageArch(StrictModel):
    """One stage of a chosen network. ``blocks[j]``: whether block j is kept (block 0 always)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    layer: Literal["stem", "layer1", "layer2", "layer3", "layer4"]
    stride: Literal[1, 2]
    width: int = Field(ge=1, le=4096)
    kernel: Literal[3, 5, 7]
    expansion: int = Field(ge=1, le=12)
    blocks: list[bool] = Field(min_length=1, max_length=32)

    @field_validator("blocks")
    @classmethod
    def _first_kept(cls, blocks: list[bool]) -> list[bool]:
        if not blocks[0]:
            raise ValueError("[0]: the first block of a stage cannot be skipped (it changes the "
                             "width and resolution)")
        return blocks

    @property
    def depth(self) -> int:
        return sum(self.blocks)


class MobileArch(StrictModel):
    """A chosen mobile backbone: everything :class:`MobileBackbone` needs."""

    stem: int = Field(ge=1, le=4096)
    head: int = Field(ge=0, le=8192)
    activation: Literal["relu6", "hswish"]
    stages: list[StageArch] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "MobileArch":
        check_stage_order(self.stages)
        return self

    @property
    def out_channels(self) -> int:
        return self.head or self.stages[-1].width

    def summary(self) -> str:
        """``s2 24 k3 e6 x2 | s3 ...`` (width, kernel, expansion, kept blocks of each stage)."""
        return " | ".join(f"{s.name} {s.width} k{s.kernel} e{s.expansion} x{s.depth}/{len(s.blocks)}"
                          for s in self.stages)


def effective_stride(stage: StageArch | StageConfig, last_stride: int) -> int:
    """The stride of the stage's first block: ``last_stride: 1`` makes layer4's strides 1."""
    return 1 if stage.layer == "layer4" and last_stride == 1 else stage.stride


def _half(length: int) -> int:
    return -(-length // 2)


def _stage_resolutions(arch: MobileArch, input_hw: tuple[int, int],
                       last_stride: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``[(input (H, W), output (H, W))]`` of every stage."""
    h, w = _half(input_hw[0]), _half(input_hw[1])
    out = []
    for stage in arch.stages:
        s = effective_stride(stage, last_stride)
        h2, w2 = (_half(h), _half(w)) if s == 2 else (h, w)
        out.append(((h, w), (h2, w2)))
        h, w = h2, w2
    return out


def mobile_stage_shapes(arch: MobileArch, input_hw: tuple[int, int],
                        last_stride: int = 1) -> dict[str, tuple[int, int, int]]:
    """``{"layer1": (C, H, W), ..., "layer4": (C, H, W)}``: the output of each layer group's
    last stage (where a cell goes)."""
    shapes = {}
    for stage, (_, (h, w)) in zip(arch.stages, _stage_resolutions(arch, input_hw, last_stride)):
        if stage.layer != "stem":
            shapes[stage.layer] = (stage.width, h, w)
    return shapes


def block_flops(cin: int, cout: int, expansion: int, kernel: int, stride: int,
                hw: tuple[int, int]) -> int:
    """FLOPs (2 per multiply-accumulate) of one inverted-residual block at input size ``hw``."""
    h, w = hw
    ho, wo = (_half(h), _half(w)) if stride == 2 else (h, w)
    hidden = expansion * cin
    expand = h * w * cin * hidden if expansion != 1 else 0
    return 2 * (expand + ho * wo * hidden * kernel * kernel + ho * wo * hidden * cout)


def arch_flops(arch: MobileArch, input_hw: tuple[int, int], last_stride: int = 1) -> int:
    """FLOPs of the whole backbone (stem, kept blocks, head conv) for a batch-1 input."""
    h, w = _half(input_hw[0]), _half(input_hw[1])
    total = 2 * h * w * 3 * arch.stem * 9
    cin = arch.stem
    for stage, ((hi, wi), (ho, wo)) in zip(arch.stages, _stage_resolutions(arch, input_hw, last_stride)):
        total += block_flops(cin, stage.width, stage.expansion, stage.kernel,
                             effective_stride(stage, last_stride), (hi, wi))
        total += (stage.depth - 1) * block_flops(stage.width, stage.width, stage.expansion,
                                                 stage.kernel, 1, (ho, wo))
        cin, h, w = stage.width, ho, wo
    if arch.head:
        total += 2 * h * w * cin * arch.head
    return total


# ------------------------------------------------------------------------------ modules


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


def stem_conv(channels: int, activation: str) -> nn.Sequential:
    """The stem: a 3x3/2 conv from the RGB image to ``channels``, BatchNorm, activation."""
    return nn.Sequential(*conv_bn(3, channels, 3, 2), ACTIVATIONS[activation]())


def head_conv(cin: int, channels: int, activation: str) -> nn.Sequential:
    """The head: a 1x1 conv to ``channels``, BatchNorm, activation."""
    return nn.Sequential(*conv_bn(cin, channels, 1), ACTIVATIONS[activation]())


class InvertedResidual(nn.Module):
    """MobileNetV2's block: [1x1 expand -> BN -> act] -> kxk depthwise -> BN -> act -> 1x1
    project -> BN [+ input]. ``forward`` takes optional channel masks and a kernel mask, which
    is how the supernet runs a narrower block inside the widest one (see
    :mod:`nas_reid.space.mobile_supernet`); without them it is a plain block."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, *,
                 expand: bool, residual: bool, activation: str) -> None:
        super().__init__()
        if residual and (cin != cout or stride != 1):
            raise ValueError("a residual block needs cin == cout and stride 1")
        self.expand = conv_bn(cin, hidden, 1) if expand else None
        self.dw = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, cout, 1)
        self.act = ACTIVATIONS[activation]()
        self.residual = residual
        self.stride, self.kernel = stride, kernel

    def forward(self, x: torch.Tensor, hidden_mask: torch.Tensor | None = None,
                out_mask: torch.Tensor | None = None,
                kernel_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        if self.expand is not None:
            h = _masked(self.act(self.expand(h)), hidden_mask)
        conv, bn = self.dw
        if kernel_mask is None:
            h = conv(h)
        else:
            h = F.conv2d(h, conv.weight * kernel_mask.to(conv.weight.dtype), None, conv.stride,
                         conv.padding, conv.dilation, conv.groups)
        h = _masked(self.act(bn(h)), hidden_mask)
        out = _masked(self.project(h), out_mask)
        return x + out if self.residual else out


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask.to(x.dtype).view(1, -1, 1, 1)


class MobileBackbone(nn.Module):
    """The network of a :class:`MobileArch`: ``stem(x)`` (stem conv and the ``stem`` layer's
    stages), ``stage(position)`` (the stages of that layer group) and :meth:`finish` (the head
    conv), the interface the supernet and the discrete model share with the ResNet backbone."""

    def __init__(self, arch: MobileArch, last_stride: int = 1) -> None:
        super().__init__()
        self.arch, self.last_stride = arch, last_stride
        act = arch.activation
        self.stem_conv = stem_conv(arch.stem, act)
        self.stages = nn.ModuleDict()
        cin = arch.stem
        for stage in arch.stages:
            blocks = nn.ModuleDict()
            for j, kept in enumerate(stage.blocks):
                if not kept:
                    continue
                first = j == 0
                block_in = cin if first else stage.width
                blocks[f"b{j}"] = InvertedResidual(
                    block_in, stage.expansion * block_in, stage.width, stage.kernel,
                    effective_stride(stage, last_stride) if first else 1,
                    expand=stage.expansion != 1, residual=not first, activation=act)
            self.stages[stage.name] = blocks
            cin = stage.width
        self.head = head_conv(cin, arch.head, act) if arch.head else nn.Identity()
        self.out_channels = arch.out_channels
        self._groups = {layer: [s.name for s in arch.stages if s.layer == layer] for layer in LAYERS}

    def _run(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        for name in self._groups[layer]:
            for block in self.stages[name].values():
                x = block(x)
        return x

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("stem", self.stem_conv(x))

    def stage(self, position: str):
        return lambda x: self._run(position, x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for position in POSITIONS:
            x = self._run(position, x)
        return self.finish(x)

    def extra_repr(self) -> str:
        return f"{self.arch.summary()}, last_stride={self.last_stride}"


@torch.no_grad()
def narrow_state_dict(wide: dict[str, torch.Tensor], narrow: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``wide`` cut to the shapes of ``narrow`` (same keys): the first channels
    of every dimension, and the centre of a larger depthwise kernel. This is exactly what the
    supernet's masks select, so a narrow network with these weights computes what the masked
    supernet computes."""
    out = {}
    for key, target in narrow.items():
        if key not in wide:
            raise KeyError(f"narrow_state_dict: {key} is not in the wide state_dict")
        source = wide[key]
        if source.dim() != target.dim():
            raise ValueError(f"narrow_state_dict: {key} has {source.dim()} dims, wants {target.dim()}")
        index = []
        for d, (big, small) in enumerate(zip(source.shape, target.shape)):
            if small > big:
                raise ValueError(f"narrow_state_dict: {key} dim {d} is {big}, cannot give {small}")
            start = (big - small) // 2 if d >= 2 else 0  # spatial dims: the centre of the kernel
            index.append(slice(start, start + small))
        out[key] = source[tuple(index)].clone()
    return out
