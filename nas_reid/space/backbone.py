"""ResNet backbones (torchvision ResNet-18 / ResNet-50, and ``resnet_tiny``) cut into a stem and
four stages.

The modules are torchvision's own (built with ``weights=None``: nothing is ever downloaded), kept
under torchvision's names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``) so that a plain torchvision
state_dict loads as is; ``avgpool`` and ``fc`` are dropped (the re-ID head replaces them).
``resnet_tiny`` (:func:`resnet_tiny`) is for tests and smoke runs: ResNet-18's stem and stages,
one torchvision ``BasicBlock`` per stage at a quarter of the widths; it has no published weights.

``last_stride=1`` (the re-ID convention: the official RGA model's default,
microsoft/Relation-Aware-Global-Attention-Networks ``reid/models/rga_model.py``, and BoT's
``LAST_STRIDE``, michuanhaohao/reid-strong-baseline) sets the stride of layer4's first block
to 1, in its strided conv and its downsample shortcut, so layer4 keeps layer3's spatial size.

Stage shapes follow from the conv arithmetic and need no forward pass: the 7x7/2 stem conv, the
3x3/2 max-pool and each strided stage (3x3/2 conv, padding 1, and 1x1/2 shortcut) all map a
length L to ceil(L / 2). So at 256x128 with last stride 1, ResNet-50 gives layer1 (256, 64, 32),
layer2 (512, 32, 16), layer3 (1024, 16, 8), layer4 (2048, 16, 8).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torchvision
from torch import nn

from nas_reid.errors import UserError

POSITIONS = ("layer1", "layer2", "layer3", "layer4")
"""Cell positions: after each residual stage, in network order."""

BACKBONES = {
    # name: output channels of layer1..layer4
    "resnet18": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet_tiny": (16, 32, 64, 128),
}

_SHOWN = 5  # how many offending keys an error message names


class BackboneError(UserError):
    """A bad backbone name, stride or weights file."""


def _half(length: int) -> int:
    return -(-length // 2)


def stage_shapes(name: str, input_hw: tuple[int, int], last_stride: int = 1) -> dict[str, tuple[int, int, int]]:
    """``{"layer1": (C, H, W), ..., "layer4": (C, H, W)}`` for an input of size ``input_hw``."""
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    if last_stride not in (1, 2):
        raise BackboneError(f"backbone last_stride must be 1 or 2, got {last_stride!r}")
    h, w = input_hw
    h, w = _half(_half(h)), _half(_half(w))  # stem conv /2, max-pool /2
    shapes = {}
    for index, (position, channels) in enumerate(zip(POSITIONS, BACKBONES[name])):
        if index in (1, 2) or (index == 3 and last_stride == 2):
            h, w = _half(h), _half(w)
        shapes[position] = (channels, h, w)
    return shapes


def resnet_tiny() -> nn.Module:
    """A randomly initialised ``resnet_tiny``, for tests and smoke runs (no published weights).

    ResNet-18's stem and stages with one block per stage, a quarter as wide: the 7x7/2 stem conv
    to 16 channels, BatchNorm, ReLU, the 3x3/2 max-pool, then ``layer1`` .. ``layer4``, each an
    ``nn.Sequential`` of one torchvision ``BasicBlock`` (16, 32, 64, 128 channels; layer2 ..
    layer4 strided, with a 1x1 conv + BatchNorm ``downsample`` shortcut). Its module names and
    strides are a torchvision ResNet-18's, so :func:`stage_shapes` holds for it (channels from
    :data:`BACKBONES`), ``last_stride`` is set the same way and its state_dicts (e.g. pretrained
    on the synthetic set) load with :func:`load_backbone_weights`. It is initialised as
    torchvision initialises a ResNet (Kaiming-normal convs, BatchNorm weight 1 and bias 0) and
    has no ``avgpool`` / ``fc``.
    """
    from torchvision.models.resnet import BasicBlock, conv1x1

    widths = BACKBONES["resnet_tiny"]
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    inplanes = widths[0]
    for position, planes in zip(POSITIONS, widths):
        stride = 1 if position == "layer1" else 2
        downsample = None if stride == 1 and inplanes == planes else nn.Sequential(
            conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
        setattr(net, position, nn.Sequential(BasicBlock(inplanes, planes, stride, downsample)))
        inplanes = planes
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


_BUILDERS = {"resnet18": lambda: torchvision.models.resnet18(weights=None),
             "resnet50": lambda: torchvision.models.resnet50(weights=None),
             "resnet_tiny": resnet_tiny}
"""``name`` -> a randomly initialised network with torchvision ResNet's module names (nothing is
downloaded)."""


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without ``avgpool``/``fc``: ``stem(x)`` then ``layer1`` .. ``layer4``.

    ``forward`` runs all of it; the supernet and the discrete model call :meth:`stem` and the
    stages one at a time to put cells between them.
    """

    def __init__(self, name: str = "resnet50", last_stride: int = 1,
                 weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        stage_shapes(name, (32, 32), last_stride)  # validates name and stride
        self.name = name
        self.last_stride = last_stride
        net = _BUILDERS[name]()
        if last_stride == 1:
            block = net.layer4[0]
            strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
            strided.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
            block.stride = 1
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = BACKBONES[name][-1]
        if weights is not None:
            load_backbone_weights(self, weights)

    def stage_shapes(self, input_hw: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
        """Output ``(C, H, W)`` of each stage for an input of size ``input_hw``."""
        return stage_shapes(self.name, input_hw, self.last_stride)

    def stage(self, position: str) -> nn.Module:
        """The residual stage ``layer1`` .. ``layer4``."""
        if position not in POSITIONS:
            raise BackboneError(f"unknown stage {position!r}; stages: {', '.join(POSITIONS)}")
        return getattr(self, position)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for position in POSITIONS:
            x = self.stage(position)(x)
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}, last_stride={self.last_stride}"


def resnet_flops(name: str, last_stride: int, input_hw: tuple[int, int]) -> int:
    """FLOPs (the :func:`nas_reid.ops.op_cost` convention) of a ResNet backbone for one image,
    counted by ``FlopCounterMode`` on the ``meta`` device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = ResNetBackbone(name, last_stride).eval()
        x = torch.zeros(1, 3, *input_hw)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def _names(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def load_backbone_weights(backbone: ResNetBackbone, path: str | os.PathLike) -> None:
    """Load a plain torchvision ResNet state_dict from a local file into ``backbone``.

    ``fc.*`` keys are ignored; missing ``num_batches_tracked`` buffers are tolerated (old
    torchvision checkpoints such as ``resnet50-19c8e357.pth`` have none). Anything else that
    does not match (a missing or unexpected key, a wrong shape) raises :class:`BackboneError`
    naming the file and the first few offending keys. The file is read with
    ``weights_only=True``: no code in it is run.
    """
    path = Path(path).expanduser()
    where = f"backbone weights {str(path)!r}"
    if not path.is_file():
        raise BackboneError(f"{where}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / unsafe-type errors all mean "not a weights file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"{where}: cannot be read as a torch state_dict ({first})") from None
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BackboneError(
            f"{where}: expected a state_dict (a mapping of parameter names to tensors), "
            f"got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch (file vs {backbone.name}): {_names(wrong)}")
    if problems:
        raise BackboneError(
            f"{where} does not match a torchvision {backbone.name}: " + "; ".join(problems))
    backbone.load_state_dict(state, strict=False)
