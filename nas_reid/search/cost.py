"""The cost-aware search loss: the FLOPs or the latency of the network the architecture
parameters describe (``schedule.cost.metric``).

:meth:`CostModel.expected` is the cost of the derived network in expectation under the
architecture probabilities ``softmax(alpha)``, differentiable in them; :meth:`CostModel.achieved`
is the exact cost of a derived genotype's network (live edges only). ``metric: flops`` (the
default): MFLOPs, the :func:`nas_reid.ops.op_cost` convention (2 per multiply-accumulate).
``metric: latency``: milliseconds from FBNet's latency lookup table
(:mod:`nas_reid.search.latency`); ``unit`` and ``target`` are then milliseconds too.
Loss, applied to the architecture step only:

- ``multiplicative`` (FBNet: Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via
  Differentiable Neural Architecture Search", CVPR 2019; also the search loss of
  Statistical-Deep-Learning/DCS-Attention, ``imageNetDA/search.py``):
  ``task * alpha * log(cost / unit) ** beta``; ``log(cost / unit) > 1`` for every network of
  the space is checked when the search starts;
- ``additive``: ``task + weight * max(0, cost / target - 1)``, a hinge above the target.

The expectations written out, and what each epoch logs: docs/search.md, section
`nas_reid.search.cost`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype
from nas_reid.space.costs import network_cost
from nas_reid.search.latency import LatencyTable
from nas_reid.space.blocks import Block, SpaceBlocks, network_blocks, space_blocks
from nas_reid.space.config import SearchSpace
from nas_reid.space.strategy import CostConfig
from nas_reid.space.mobile_supernet import MobileSupernetBackbone
from nas_reid.space.supernet import Supernet

MEGA = 1e6


class CostModel:
    """The cost of a supernet's derived network: expected under its probabilities, or exact
    for a genotype, in MFLOPs or in ms (``config.metric``; ``table``: the latency lookup table
    ``metric: latency`` needs). Built once per search (the FLOPs op table costs one forward per
    op and width; a latency table is checked to hold every block of the space)."""

    def __init__(self, net: Supernet, config: CostConfig, table: LatencyTable | None = None) -> None:
        self.config = config
        self.metric, self.unit = config.metric, config.unit_name
        space = net.space
        self.mobile = net.backbone if isinstance(net.backbone, MobileSupernetBackbone) else None
        blocks = space_blocks(space)
        self.table = None
        if self.metric == "latency":
            if table is None:
                raise ValueError("CostModel: metric latency needs a LatencyTable "
                                 "(nas_reid.search.latency.measure_table or LatencyTable.load)")
            table.require(blocks.keys())
            self.table = table
        self.divisor = MEGA if self.metric == "flops" else 1.0
        self.costs = BlockCosts(blocks, _pricing(self.metric, table))

    def expected(self, net: Supernet) -> torch.Tensor:
        """The cost (MFLOPs or ms) in expectation under softmax(alpha), differentiable in the
        architecture."""
        net = getattr(net, "module", net)
        probs_b = {k: torch.softmax(a, dim=-1) for k, a in net.arch_backbone.items()}
        doubled = {k: p.double() for k, p in probs_b.items()}
        ref = next(iter(net.arch.values()))
        if self.metric == "flops" and self.mobile is not None:  # the closed form by moments
            total = torch.zeros((), dtype=torch.float64, device=ref.device)
            total = total + self.mobile.expected_flops(doubled)
        else:
            total = self.costs.backbone(doubled, ref.device)
        return self.costs.add_cells(total, probs_b, net.arch) / self.divisor

    def achieved(self, genotype: Genotype) -> float:
        """The cost of the genotype's network: its FLOPs (backbone and live cell edges;
        :func:`nas_reid.space.costs.network_cost`) or the sum of its blocks' latencies."""
        if self.table is not None:
            return float(sum(self.table.ms(b.key) for b in network_blocks(genotype)))
        return network_cost(genotype)[1] / MEGA

    def minimum(self, net: Supernet) -> float:
        """The cost of the cheapest network of the space. FLOPs: every choice at its cheapest
        (a lower bound when a cell's cheapest op is not at the cheapest width); latency: exact
        (:meth:`BlockCosts.bounds`)."""
        if self.metric == "latency":
            return self.costs.bounds()[0]
        net = getattr(net, "module", net)
        if self.mobile is None:
            total = self.costs.fixed  # the ResNet
        else:
            cheapest = {}
            for choice in self.mobile.choices:
                values = [1.0 if o == "skip" else 0.0 for o in choice.options] \
                    if choice.kind == "skip" else [-float(o) for o in choice.options]
                best = max(range(len(values)), key=values.__getitem__)
                cheapest[choice.key] = torch.nn.functional.one_hot(
                    torch.tensor(best), len(values)).double()
            total = float(self.mobile.expected_flops(cheapest))
        for position, (_, table) in self.costs.cells.items():  # each edge at its cheapest op and width
            total += net.arch[position].shape[0] * float(table.min())
        return total / MEGA

    def check(self, net: Supernet) -> None:
        """Raise :class:`UserError` when the multiplicative form cannot work for this space."""
        if self.config.form != "multiplicative":
            return
        low, unit, name = self.minimum(net), self.config.unit, self.unit
        if math.log(low / unit) <= 1:
            raise UserError(
                f"schedule.cost: the multiplicative form uses log({name} / unit) ** beta, but the "
                f"cheapest network of this space costs {low:.3f} {name} (log({low:.3f} / {unit:g}) "
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


def _pricing(metric: str, table: LatencyTable | None) -> Callable[[Block], float]:
    """A block's cost: its FLOPs, or its entry in the latency table."""
    if metric == "latency":
        return lambda block: table.ms(block.key)
    return lambda block: block.flops()


def latency_bounds(space: SearchSpace, table: LatencyTable) -> tuple[float, float]:
    """The summed latency (ms) of the fastest and of the slowest network of ``space``."""
    blocks = space_blocks(space)
    table.require(blocks.keys())
    return BlockCosts(blocks, _pricing("latency", table)).bounds()


def _tensor(grid, value: Callable[[Block], float]) -> torch.Tensor:
    def walk(item):
        return [walk(x) for x in item] if isinstance(item, tuple) else float(value(item))
    return torch.tensor(walk(grid), dtype=torch.float64)


class BlockCosts:
    """The blocks of a space (:class:`~nas_reid.space.blocks.SpaceBlocks`) priced by one metric,
    as float64 tensors in the shape of the choices: the expectation of a network's cost under
    the choice probabilities, and the cheapest and dearest network."""

    def __init__(self, blocks: SpaceBlocks, value: Callable[[Block], float]) -> None:
        self.blocks = blocks
        self.fixed = float(value(blocks.resnet if blocks.resnet is not None else blocks.stem))
        """A fixed ResNet backbone, or a mobile backbone's stem."""
        self.stages = [(stage, _tensor(stage.first, value),
                        _tensor(stage.rest, value) if stage.rest else None)
                       for stage in blocks.stages]
        self.head = _tensor(blocks.head, value) if blocks.head else None
        self.cells = {c.position: (c, _tensor(c.ops, value)) for c in blocks.cells}
        """position -> (its :class:`~nas_reid.space.blocks.CellBlocks`, ``(widths, ops)``)."""

    def backbone(self, probs: dict[str, torch.Tensor], device: torch.device | str = "cpu"
                 ) -> torch.Tensor:
        """The backbone's cost in expectation under ``probs`` (``{choice: probabilities}``,
        float64; a choice with one option is absent)."""
        one = torch.ones(1, dtype=torch.float64, device=device)

        def p(key: str) -> torch.Tensor:
            return probs[key] if key in probs else one

        total = torch.zeros((), dtype=torch.float64, device=device) + self.fixed
        p_in = one
        for stage, first, rest in self.stages:
            p_w, p_k, p_e = (p(stage.keys[kind]) for kind in ("width", "kernel", "expansion"))
            total = total + torch.einsum("i,j,k,e,ijke->", p_in, p_w, p_k, p_e, first.to(device))
            if rest is not None:
                kept = sum(probs[key][0] if key in probs else one[0] for key in stage.skips)
                total = total + kept * torch.einsum("j,k,e,jke->", p_w, p_k, p_e, rest.to(device))
            p_in = p_w
        if self.head is not None:
            total = total + p_in @ self.head.to(device)
        return total

    def add_cells(self, total: torch.Tensor, probs: dict[str, torch.Tensor],
                  arch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``total`` plus every cell edge's expected cost: ``P(width) @ table @ sum_edges
        P(op)`` (``probs``: the backbone's choice probabilities; ``arch``: the cells'
        architecture logits)."""
        for position, (cell, table) in self.cells.items():
            p_ops = torch.softmax(arch[position], dim=-1).double()  # (edges, ops)
            p_w = probs[cell.width_key].double() if cell.width_key in probs else torch.ones(
                1, dtype=torch.float64, device=total.device)
            total = total + (p_w @ table.to(total.device) @ p_ops.sum(0))
        return total

    def bounds(self) -> tuple[float, float]:
        """The cost of the cheapest and of the dearest network of the space, exactly: a dynamic
        programme along the stages over the width (the only choice a stage passes on, as the
        next stage's in width); a later block that may be skipped is skipped for the cheapest
        and kept for the dearest (costs are >= 0); each cell edge at its cheapest / dearest op
        at the width of the stage before it."""
        return self._extreme(dearest=False), self._extreme(dearest=True)

    def _extreme(self, *, dearest: bool) -> float:
        pick = torch.amax if dearest else torch.amin

        def cell_cost(cell, table) -> torch.Tensor:  # per width option
            return cell.edges * pick(table, dim=1)

        if not self.stages:  # a fixed backbone: only the cells vary
            return self.fixed + sum(float(cell_cost(c, t).squeeze(0)) for c, t in self.cells.values())
        after = {c.width_key: (c, t) for c, t in self.cells.values()}
        best = torch.tensor([self.fixed], dtype=torch.float64)  # per in-width option
        for stage, first, rest in self.stages:
            blocks = first
            if rest is not None:
                n = len(stage.skips) if dearest else sum(key is None for key in stage.skips)
                blocks = first + n * rest.unsqueeze(0)
            cost = pick(blocks, dim=(2, 3))  # (in width, width): the best kernel and expansion
            if stage.keys["width"] in after:
                cost = cost + cell_cost(*after[stage.keys["width"]]).unsqueeze(0)
            best = pick(best.unsqueeze(1) + cost, dim=0)
        if self.head is not None:
            best = best + self.head
        return float(pick(best))
