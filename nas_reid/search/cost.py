"""The cost-aware search loss: the FLOPs of the network the architecture parameters describe.

Cost. :meth:`CostModel.expected` is the FLOPs (in MFLOPs, the :func:`nas_reid.ops.op_cost`
convention: 2 per multiply-accumulate) of the derived network in expectation under the
architecture probabilities ``softmax(alpha)``: the searchable backbone's
(:meth:`~nas_reid.space.mobile_supernet.MobileSupernetBackbone.expected_flops`; a fixed ResNet
is a constant, counted once by ``FlopCounterMode`` on the ``meta`` device) plus every cell
edge's ``sum_{j,k} P(width_j) P(op_k) FLOPs(op_k at width_j)`` (the op table is built once, by
building each candidate at each width its position can have). Every edge of a cell counts,
also those the derivation may drop (nodes keep ``edges_per_node`` incoming edges): a proxy,
exact for one-node cells. It is differentiable in the architecture parameters, and a smooth
expectation rather than a sampled cost (FBNet weights the costs by the Gumbel sample; the
expectation has the same mean and no sampling noise). :meth:`CostModel.achieved` is the exact
FLOPs of a derived genotype's network (live edges only).

Loss, applied to the architecture step only (the cost does not depend on the weights):

- ``multiplicative`` (FBNet, papers.md 2.4): ``task * alpha * log(cost / unit) ** beta``, cost
  in MFLOPs (``unit`` 1 by default; FBNet's cost is a latency in ms). It needs
  ``log(cost / unit) > 1`` for every network of the space, which is checked when the search
  starts (a CPU-sized space takes a smaller ``unit``);
- ``additive``: ``task + weight * max(0, cost / target - 1)``, a hinge above the target.

Each epoch the search logs the form, the target, the expected cost and the achieved cost of the
epoch's genotype.
"""

from __future__ import annotations

import math

import torch

from nas_reid.errors import UserError
from nas_reid.genotype import Genotype
from nas_reid.genotype_report import network_cost
from nas_reid.ops import cached_op_cost
from nas_reid.space.backbone import resnet_flops
from nas_reid.space.config import CostConfig
from nas_reid.space.mobile_supernet import MobileSupernetBackbone
from nas_reid.space.supernet import Supernet

MEGA = 1e6


def _op_flops(name: str, params: dict, shape: tuple[int, int, int]) -> int:
    return cached_op_cost(name, *shape, tuple(sorted(params.items())))[1]


class CostModel:
    """FLOPs of a supernet's derived network: expected under its probabilities, or exact for a
    genotype. Built once per search (building the op table costs one forward per op and width)."""

    def __init__(self, net: Supernet, config: CostConfig) -> None:
        self.config = config
        space = net.space
        self.mobile = net.backbone if isinstance(net.backbone, MobileSupernetBackbone) else None
        bb = space.backbone
        self.fixed_backbone = 0 if self.mobile is not None else resnet_flops(
            bb.name, bb.last_stride, space.input_size)
        options = space.position_shape_options()
        self.width_key = {}
        if self.mobile is not None:
            last = {s.layer: s.name for s in bb.mobile.stages}
            self.width_key = {p: f"{last[p]}_width" for p in space.cells.positions}
        self.tables = {  # position -> (widths, ops) FLOPs
            p: torch.tensor([[float(_op_flops(op.name, op.full_params(), shape)) for op in space.ops]
                             for shape in options[p]], dtype=torch.float64)
            for p in space.cells.positions}

    def expected(self, net: Supernet) -> torch.Tensor:
        """MFLOPs in expectation under softmax(alpha), differentiable in the architecture."""
        net = getattr(net, "module", net)
        probs_b = {k: torch.softmax(a, dim=-1) for k, a in net.arch_backbone.items()}
        ref = next(iter(net.arch.values()))
        total = torch.zeros((), dtype=torch.float64, device=ref.device) + self.fixed_backbone
        if self.mobile is not None:
            total = total + self.mobile.expected_flops(
                {k: p.double() for k, p in probs_b.items()})
        for position, table in self.tables.items():
            p_ops = torch.softmax(net.arch[position], dim=-1).double()  # (edges, ops)
            key = self.width_key.get(position)
            p_w = probs_b[key].double() if key in probs_b else torch.ones(
                1, dtype=torch.float64, device=ref.device)
            total = total + (p_w @ table.to(ref.device) @ p_ops.sum(0))
        return total / MEGA

    @staticmethod
    def achieved(genotype: Genotype) -> float:
        """MFLOPs of the genotype's network (backbone and live cell edges;
        :func:`nas_reid.genotype_report.network_cost`)."""
        return network_cost(genotype)[1] / MEGA

    def minimum(self, net: Supernet) -> float:
        """MFLOPs of the cheapest network of the space (every choice at its cheapest; a lower
        bound when a cell's cheapest op is not at the cheapest width)."""
        net = getattr(net, "module", net)
        total = float(self.fixed_backbone)
        if self.mobile is not None:
            cheapest = {}
            for choice in self.mobile.choices:
                values = [1.0 if o == "skip" else 0.0 for o in choice.options] \
                    if choice.kind == "skip" else [-float(o) for o in choice.options]
                best = max(range(len(values)), key=values.__getitem__)
                cheapest[choice.key] = torch.nn.functional.one_hot(
                    torch.tensor(best), len(values)).double()
            total += float(self.mobile.expected_flops(cheapest))
        for position, table in self.tables.items():  # each edge at its cheapest op and width
            total += net.arch[position].shape[0] * float(table.min())
        return total / MEGA

    def check(self, net: Supernet) -> None:
        """Raise :class:`UserError` when the multiplicative form cannot work for this space."""
        if self.config.form != "multiplicative":
            return
        low, unit = self.minimum(net), self.config.unit
        if math.log(low / unit) <= 1:
            raise UserError(
                f"schedule.cost: the multiplicative form uses log(MFLOPs / unit) ** beta, but the "
                f"cheapest network of this space costs {low:.3f} MFLOPs (log({low:.3f} / {unit:g}) "
                f"= {math.log(low / unit):.2f} <= 1); lower schedule.cost.unit below "
                f"{low / math.e:.3g}, or use form: additive with a target")

    def loss(self, task: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        """The architecture loss with the cost term (``task`` unchanged for ``form: none``)."""
        c = self.config
        cost = cost.to(task.dtype)
        if c.form == "multiplicative":
            return task * c.alpha * torch.log(cost / c.unit) ** c.beta
        if c.form == "additive":
            return task + c.weight * torch.relu(cost / c.target - 1)
        return task
