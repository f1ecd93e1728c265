"""Batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss", 2017).

As in torchreid's ``hard_mine_triplet_loss`` (KaiyangZhou/deep-person-reid,
``torchreid/losses/hard_mine_triplet_loss.py``) and BoT (Luo et al., "Bag of Tricks and A Strong
Baseline for Deep Person Re-identification", CVPR Workshops 2019; michuanhaohao/reid-strong-baseline
``layers/triplet_loss.py``): pairwise Euclidean distances
``sqrt(clamp(||f_i - f_j||^2, min=1e-12))``; for every anchor the hardest positive is the farthest
sample of the same identity and the hardest negative the closest sample of another identity.

* Hard margin: ``mean_i max(0, d_ap(i) - d_an(i) + margin)`` (margin 0.3 by default).
* Soft margin: ``mean_i log(1 + exp(d_ap(i) - d_an(i)))`` computed with ``softplus`` (stable for
  large differences of either sign); the margin is not used.

Apply it to the **pre-BN** (before the BNNeck) global feature, as BoT and the RGA code do; the
classifier sees the after-BN feature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

_PK_HINT = ("batch-hard triplet mining needs every batch to hold several images of each "
            "identity and at least two identities: use a PK sampler with P >= 2 and K >= 2")


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(B, B) Euclidean distances ``sqrt(clamp(||x_i - x_j||^2, min=1e-12))``."""
    sq = (x * x).sum(dim=1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.T)
    return d2.clamp_min(1e-12).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss on the pre-BN feature.

    Args:
        margin: hinge margin (>= 0) of the hard-margin loss; ignored when ``soft_margin``.
        soft_margin: use ``softplus(d_ap - d_an)`` instead of the hinge.

    ``forward(features, labels, return_fraction=False, per_anchor=False)``: ``features`` (B, D),
    ``labels`` (B,); ``per_anchor=True`` returns the loss of every used anchor instead of the mean.
    An anchor's own distance is not a positive. Anchors with no other image of their identity or
    no image of another identity are left out of the mean; a batch where no anchor has both
    raises :class:`UserError` (the sampler is not a PK sampler with K >= 2). With
    ``return_fraction=True`` also returns the (detached) fraction of the used anchors whose
    hardest triplet is already ordered, ``d_an > d_ap``, for logging.
    """

    def __init__(self, margin: float = 0.3, soft_margin: bool = False) -> None:
        super().__init__()
        if (isinstance(margin, bool) or not isinstance(margin, (int, float))
                or not math.isfinite(margin) or margin < 0):
            raise UserError(f"TripletLoss: margin must be a finite number >= 0, got {margin!r}")
        if not isinstance(soft_margin, bool):
            raise UserError(f"TripletLoss: soft_margin must be True or False, got {soft_margin!r}")
        self.margin = float(margin)
        self.soft_margin = soft_margin

    def extra_repr(self) -> str:
        return "soft_margin=True" if self.soft_margin else f"margin={self.margin}"

    def forward(self, features: torch.Tensor, labels: torch.Tensor, return_fraction: bool = False,
                per_anchor: bool = False):
        if features.dim() != 2:
            raise UserError(f"TripletLoss: features must have shape (B, D), got {tuple(features.shape)}")
        if labels.shape != (features.shape[0],):
            raise UserError(f"TripletLoss: labels must have shape ({features.shape[0]},), "
                            f"got {tuple(labels.shape)}")
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        dist = pairwise_euclidean(features)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos = same & ~eye
        neg = ~same
        valid = pos.any(dim=1) & neg.any(dim=1)
        if not bool(valid.any()):
            raise UserError(f"TripletLoss: no anchor in this batch of {len(labels)} has both a positive "
                            f"and a negative; {_PK_HINT}")
        # distances are >= 1e-6, so -1 / +inf fill values never win the max / min
        d_ap = dist.masked_fill(~pos, -1.0).max(dim=1).values[valid]
        d_an = dist.masked_fill(~neg, math.inf).min(dim=1).values[valid]
        if self.soft_margin:
            loss = F.softplus(d_ap - d_an)
        else:
            loss = (d_ap - d_an + self.margin).clamp_min(0.0)
        if not per_anchor:
            loss = loss.mean()
        if return_fraction:
            return loss, (d_an > d_ap).float().mean().detach()
        return loss
