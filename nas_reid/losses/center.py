"""Center loss (Wen et al., ECCV 2016) in the form BoT uses (Luo et al., "Bag of Tricks and A
Strong Baseline for Deep Person Re-identification", CVPR Workshops 2019).

Definition used here, as in BoT's ``layers/center_loss.py`` (michuanhaohao/reid-strong-baseline):
for each sample the squared Euclidean distance to its identity's centre, clamped to
``[1e-12, 1e12]``, **averaged over the batch**::

    L_C = (1/B) * sum_i clamp(||f_i - c_{y_i}||^2, 1e-12, 1e12)

Apply it to the pre-BN feature (as the triplet loss). The centres are an ``nn.Parameter``
initialised from ``N(0, 1)`` (as BoT), meant for their own optimiser, which the model's must not
include (BoT: weight 0.0005, SGD with lr 0.5 for the centres, their gradient divided by the
weight before that step). Why this form and not Wen et al.'s, and BoT's recipe in code:
docs/training.md, section `nas_reid.losses.center`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError


class CenterLoss(nn.Module):
    """Mean over the batch of each feature's squared distance to its identity's centre.

    Args:
        num_classes: number of training identities.
        feat_dim: dimension of the feature (2048 for a ResNet-50 GAP feature).

    ``forward(features, labels)``: ``features`` (B, feat_dim), ``labels`` (B,) in ``[0, num_classes)``.
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("feat_dim", feat_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"CenterLoss: {name} must be an integer >= 1, got {value!r}")
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}"

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.feat_dim:
            raise UserError(f"CenterLoss: features must have shape (B, feat_dim={self.feat_dim}), "
                            f"got {tuple(features.shape)}")
        if labels.shape != (features.shape[0],):
            raise UserError(f"CenterLoss: labels must have shape ({features.shape[0]},), "
                            f"got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise UserError(f"CenterLoss: a label is outside [0, num_classes={self.num_classes})")
        centers = self.centers[labels.long()]
        if features.dtype != centers.dtype:
            features = features.to(centers.dtype)
        d2 = (features - centers).pow(2).sum(dim=1)
        return d2.clamp(min=1e-12, max=1e12).mean()
