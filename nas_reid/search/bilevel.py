"""The bilevel step of differentiable architecture search, apart from any run folder.

First-order DARTS (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR
2019, section 2.3 with xi = 0; the ``Architect`` class of github.com/quark0/darts,
``cnn/architect.py``), as GDAS (Dong & Yang, "Searching for a Robust Neural Architecture in
Four GPU Hours", CVPR 2019) also runs it: one step of the network weights on a batch of the
weight share, then one step of the architecture parameters on a batch of the held-out share.

Contract:
- ``net`` has ``arch_parameters()`` (the architecture logits); ``weight_opt`` holds the weights,
  ``arch_opt`` the architecture parameters. ``model`` is what the weight step runs (``net``
  itself, or its DistributedDataParallel wrapper, which averages the weight gradients).
- ``weight_loss(out, pids, index) -> (total, parts)`` and ``arch_loss(out, pids) -> (task,
  total)`` take the network's output dict; the step methods return the losses as floats.
- The weight step leaves no gradient on the architecture parameters; the architecture step
  freezes the weights (no gradient computed for them) and, with ``world_size > 1``, averages the
  architecture gradients over the ranks by hand (the architecture forward bypasses DDP).
- A non-finite weight loss raises :class:`NonFiniteLoss` before any parameter changes.
- Each step consumes the random streams (Gumbel samples, dropout) exactly as one forward does,
  so a search is reproducible from its seed.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

WeightLoss = Callable[[dict, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
ArchLoss = Callable[[dict, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class NonFiniteLoss(ArithmeticError):
    """The weight loss was NaN or infinite; nothing was updated."""

    def __init__(self, value: float) -> None:
        super().__init__(f"the weight loss became {value}")
        self.value = value


class Bilevel:
    """One weight step and one architecture step of a supernet (see the module's contract)."""

    def __init__(self, net: nn.Module, weight_opt: torch.optim.Optimizer,
                 arch_opt: torch.optim.Optimizer, weight_loss: WeightLoss, arch_loss: ArchLoss, *,
                 device: torch.device, model: nn.Module | None = None, precision: Any = None,
                 world_size: int = 1, grad_clip: float | None = None) -> None:
        self.net, self.model = net, model if model is not None else net
        self.weight_opt, self.arch_opt = weight_opt, arch_opt
        self.weight_loss, self.arch_loss = weight_loss, arch_loss
        self.device, self.precision = device, precision
        self.world_size, self.grad_clip = world_size, grad_clip
        self.arch = [a for group in arch_opt.param_groups for a in group["params"]]
        self.weights = [w for group in weight_opt.param_groups for w in group["params"]]

    def _inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, pids = batch[0].to(self.device, non_blocking=True), batch[1].to(self.device)
        return (self.precision.images(imgs) if self.precision is not None else imgs), pids

    def _forward(self, module: nn.Module, imgs: torch.Tensor) -> dict:
        autocast = (self.precision.autocast(self.device.type) if self.precision is not None
                    else nullcontext())
        with autocast:
            return module(imgs)

    def weight_step(self, batch) -> dict[str, float]:
        """A step of the weights on ``batch`` = (images, pids, camids, index)."""
        imgs, pids = self._inputs(batch)
        out = self._forward(self.model, imgs)
        total, parts = self.weight_loss(out, pids, batch[3])
        if not torch.isfinite(total):
            raise NonFiniteLoss(total.item())
        self.weight_opt.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.weights, self.grad_clip)
        self.weight_opt.step()
        for a in self.arch:  # the weight loss's architecture gradients are not used
            a.grad = None
        return {"total": total.item(), **{k: v.item() for k, v in parts.items()}}

    def arch_step(self, batch) -> dict[str, float]:
        """A step of the architecture parameters on the held-out ``batch``, weights frozen."""
        imgs, pids = self._inputs(batch)
        for w in self.weights:
            w.requires_grad_(False)
        try:
            out = self._forward(self.net, imgs)
            task, total = self.arch_loss(out, pids)
            self.arch_opt.zero_grad(set_to_none=True)
            total.backward()
        finally:
            for w in self.weights:
                w.requires_grad_(True)
        if self.world_size > 1:
            for a in self.arch:
                if a.grad is None:
                    a.grad = torch.zeros_like(a)
                dist.all_reduce(a.grad)
                a.grad /= self.world_size
        self.arch_opt.step()
        return {"triplet": task.item(), "total": total.item()}
