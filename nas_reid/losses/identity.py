"""Identity (classification) loss: cross-entropy with label smoothing, as in BoT (Luo et al.,
"Bag of Tricks and A Strong Baseline for Deep Person Re-identification", CVPR Workshops 2019).

The smoothed target of a sample with label y is ``(1 - epsilon) * onehot(y) + epsilon / K``; the
loss is ``-sum_k target_k * log_softmax(logits)_k``, summed over the K classes and averaged over
the batch, as torchreid's ``CrossEntropyLoss(label_smooth=True)`` and BoT (epsilon = 0.1). It is
applied to the classifier logits computed from the after-BNNeck feature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


class CrossEntropyLabelSmooth(nn.Module):
    """Label-smoothing cross-entropy.

    Args:
        num_classes: K, the number of training identities (the classifier's output width).
        epsilon: smoothing in ``[0, 1)``; 0 gives plain cross-entropy.

    ``forward(logits, targets)``: ``logits`` (B, K) float, ``targets`` (B,) integer labels in
    ``[0, K)``. Returns the scalar mean loss (float32 or float64 whatever the logits' dtype).
    """

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"CrossEntropyLabelSmooth: num_classes must be an integer >= 1, "
                            f"got {num_classes!r}")
        if (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float))
                or not math.isfinite(epsilon) or not 0.0 <= epsilon < 1.0):
            raise UserError(f"CrossEntropyLabelSmooth: epsilon must be a number in [0, 1), "
                            f"got {epsilon!r}")
        self.num_classes = num_classes
        self.epsilon = float(epsilon)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, epsilon={self.epsilon}"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise UserError(f"CrossEntropyLabelSmooth: logits must have shape (B, num_classes="
                            f"{self.num_classes}), got {tuple(logits.shape)}")
        if targets.shape != (logits.shape[0],):
            raise UserError(f"CrossEntropyLabelSmooth: targets must have shape ({logits.shape[0]},), "
                            f"got {tuple(targets.shape)}")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
            raise UserError(f"CrossEntropyLabelSmooth: a label is outside [0, num_classes="
                            f"{self.num_classes}); is num_classes the number of training identities?")
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        log_probs = F.log_softmax(logits, dim=1)
        nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
        uniform = -log_probs.mean(dim=1)  # = -sum_k (1/K) log p_k
        return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()
