"""torchvision transforms v2 pipelines for re-ID training and testing (as in BoT: Luo et al., "Bag
of Tricks and A Strong Baseline for Deep Person Re-identification", CVPR Workshops 2019).

Train: resize to (H, W), horizontal flip (p 0.5), pad 10 px (constant 0) then random crop back
to (H, W), to float, ImageNet normalisation, random erasing (p 0.5, area 0.02-0.4, aspect
0.3-3.3). Erasing runs after normalisation with value 0, i.e. the patch takes the ImageNet mean
colour (fast-reid's semantics; BoT and torchreid instead write the raw mean values into the
normalised tensor). Test: resize, to float, normalisation.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(
    height: int,
    width: int,
    *,
    train: bool,
    flip_p: float = 0.5,
    pad: int = 10,
    erasing_p: float = 0.5,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> v2.Compose:
    """The train or test pipeline for images of size ``height`` x ``width``."""
    if height < 1 or width < 1:
        raise UserError(f"image size must be positive, got {height}x{width}")
    if not (0.0 <= flip_p <= 1.0 and 0.0 <= erasing_p <= 1.0):
        raise UserError(f"probabilities must lie in [0, 1], got flip {flip_p}, erasing {erasing_p}")
    if pad < 0:
        raise UserError(f"pad must be >= 0, got {pad}")
    steps: list = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if train:
        steps.append(v2.RandomHorizontalFlip(flip_p))
        if pad:
            steps += [v2.Pad(pad, fill=0), v2.RandomCrop((height, width))]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if train and erasing_p > 0:
        steps.append(v2.RandomErasing(p=erasing_p, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0))
    return v2.Compose(steps)
