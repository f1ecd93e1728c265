"""The optimizer a config names, for the search's weights and a retrain alike.

:func:`build_optimizer` takes parameters (or parameter groups, each may carry its own ``lr``)
and an :class:`~nas_reid.engine.schema.OptimizerConfig`: SGD with momentum, or Adam with betas,
both with ``weight_decay`` added to the gradients (L2), as torch's SGD and Adam apply it.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


def build_optimizer(params: Iterable[Any], config: Any) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (``config.kind == "sgd"``) or ``torch.optim.Adam``."""
    if config.kind == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas),
                            weight_decay=config.weight_decay)
