"""How two genotypes differ, position by position: the layer under ``nas-reid genotype diff``.

:func:`diff_genotypes` compares the network around the cells (search space, input size,
backbone), every cell position of either genotype (a cell only in A or only in B; node counts;
edges added, removed, with another op or other parameters, or whose liveness changed), a
searched mobile backbone on either side stage by stage, and the parameters and FLOPs per cell,
of the backbone and of the whole network (:mod:`nas_reid.space.costs`). Parameters are compared
with the op's defaults filled in. :func:`format_diff` writes it as text;
:func:`nas_reid.viz.plot_genotype_diff` draws it.
What is compared, in detail: docs/genotypes.md, section `nas_reid.viz.genotype_diff`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from nas_reid.space.genotype import CellGenotype, Edge, Genotype
from nas_reid.viz.genotype_report import (
    CellCost,
    RunSource,
    StageChoice,
    backbone_cost,
    backbone_stages,
    full_params,
    cell_costs,
    network_cost,
    format_count,
    format_delta,
    format_flops,
    format_params,
    load_source,
)
from nas_reid.space.backbone import POSITIONS

__all__ = ["EdgeChange", "CellDiff", "StageDiff", "GenotypeDiff", "diff_genotypes", "format_diff",
           "format_stages"]

ChangeKind = Literal["added", "removed", "op", "params", "live"]


@dataclass(frozen=True)
class EdgeChange:
    """One edge ``source -> target`` that differs; ``a`` / ``b`` its edge in each (or None)."""

    source: int
    target: int
    kind: ChangeKind
    a: Edge | None
    b: Edge | None

    @property
    def key(self) -> tuple[int, int]:
        return (self.source, self.target)

    def describe(self) -> str:
        s = f"{self.source}->{self.target}"
        a, b = self.a, self.b
        if self.kind == "added":
            return f"{s} added: {b.op}" + (f" [{format_params(b.params)}]" if b.params else "")
        if self.kind == "removed":
            return f"{s} removed: {a.op}" + (f" [{format_params(a.params)}]" if a.params else "")
        if self.kind == "op":
            return f"{s} op: {a.op} -> {b.op}"
        if self.kind == "params":
            pa, pb = full_params(a.op, a.params), full_params(b.op, b.params)
            changed = [f"{k} {pa.get(k, '-')} -> {pb.get(k, '-')}"
                       for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
            return f"{s} {a.op} params: {', '.join(changed)}"
        return f"{s} {b.op}: {'live' if self.a_live else 'dead'} -> {'live' if self.b_live else 'dead'}"

    a_live: bool = True
    b_live: bool = True


@dataclass
class CellDiff:
    """One cell position: ``status`` ``same`` / ``changed`` / ``only_a`` / ``only_b``."""

    position: str
    status: Literal["same", "changed", "only_a", "only_b"]
    a: CellGenotype | None
    b: CellGenotype | None
    cost_a: CellCost | None
    cost_b: CellCost | None
    changes: list[EdgeChange] = field(default_factory=list)

    @property
    def params_delta(self) -> int:
        return ((self.cost_b.parameters if self.cost_b else 0)
                - (self.cost_a.parameters if self.cost_a else 0))

    @property
    def flops_delta(self) -> int:
        return (self.cost_b.flops if self.cost_b else 0) - (self.cost_a.flops if self.cost_a else 0)

    def highlights(self, side: Literal["a", "b"]) -> dict[tuple[int, int], str]:
        """Edge -> change kind to highlight in the drawing of side ``a`` or ``b``."""
        out = {}
        for c in self.changes:
            if c.kind == "added" and side == "b":
                out[c.key] = "added"
            elif c.kind == "removed" and side == "a":
                out[c.key] = "removed"
            elif c.kind in ("op", "params", "live"):
                out[c.key] = "changed"
        return out


STAGE_FIELDS = ("layer", "stride", "width", "kernel", "expansion", "blocks")
"""What :class:`StageDiff` compares, in this order."""


def _stage_value(stage: StageChoice, name: str) -> str:
    return stage.blocks_text() if name == "blocks" else str(getattr(stage, name))


@dataclass
class StageDiff:
    """One stage of a searched backbone of either genotype: ``status`` ``same`` / ``changed``
    / ``only_a`` / ``only_b``; ``changes`` the ``(field, value in A, value in B)`` that differ
    (:data:`STAGE_FIELDS`; blocks as ``x1/2 (b1 skipped)``)."""

    name: str
    status: Literal["same", "changed", "only_a", "only_b"]
    a: StageChoice | None
    b: StageChoice | None
    changes: list[tuple[str, str, str]] = field(default_factory=list)


def _stage_diffs(a: list[StageChoice], b: list[StageChoice]) -> list[StageDiff]:
    """The stages of ``a`` and ``b`` matched by name, in network order (A's, then the stages
    only in B where they sit in B)."""
    by_a = {s.name: s for s in a}
    by_b = {s.name: s for s in b}
    order = [s.name for s in a]
    for i, s in enumerate(b):  # a stage only in B goes after the stage before it in B
        if s.name not in by_a:
            before = [x.name for x in b[:i] if x.name in order]
            order.insert(order.index(before[-1]) + 1 if before else 0, s.name)
    out = []
    for name in order:
        x, y = by_a.get(name), by_b.get(name)
        if y is None:
            out.append(StageDiff(name, "only_a", x, None))
        elif x is None:
            out.append(StageDiff(name, "only_b", None, y))
        else:
            changes = [(f, _stage_value(x, f), _stage_value(y, f)) for f in STAGE_FIELDS
                       if _stage_value(x, f) != _stage_value(y, f)]
            out.append(StageDiff(name, "changed" if changes else "same", x, y, changes))
    return out


def _mobile_header(a: Genotype, b: Genotype) -> list[tuple[str, str, str]]:
    """The stem, head and activation of two searched backbones where they differ."""
    ma, mb = a.backbone.mobile, b.backbone.mobile
    if ma is None or mb is None:
        return []
    fields = [("stem", str(ma.stem), str(mb.stem)), ("head", str(ma.head), str(mb.head)),
              ("activation", ma.activation, mb.activation)]
    return [f for f in fields if f[1] != f[2]]


@dataclass
class GenotypeDiff:
    name_a: str
    name_b: str
    a: Genotype
    b: Genotype
    header: list[tuple[str, str, str]]
    """``(field, value in A, value in B)`` for each differing field around the cells (the
    stem, head and activation of two searched backbones included)."""
    cells: list[CellDiff]
    stages: list[StageDiff] = field(default_factory=list)
    """The searched backbone's stages of either side (``[]`` when both are ResNets)."""

    @property
    def identical(self) -> bool:
        """Same network: no header difference, every backbone stage and every cell the same."""
        return (not self.header and all(s.status == "same" for s in self.stages)
                and all(c.status == "same" for c in self.cells))

    @property
    def backbone_costs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((params A, flops A), (params B, flops B))`` of the backbones."""
        return backbone_cost(self.a), backbone_cost(self.b)

    @property
    def network_costs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((params A, flops A), (params B, flops B))`` of the whole networks (no
        classifier, see :func:`~nas_reid.space.costs.network_cost`)."""
        return network_cost(self.a), network_cost(self.b)

    @property
    def totals(self) -> tuple[int, int, int, int]:
        """``(params A, params B, flops A, flops B)`` over the cells."""
        pa = sum(c.cost_a.parameters for c in self.cells if c.cost_a)
        pb = sum(c.cost_b.parameters for c in self.cells if c.cost_b)
        fa = sum(c.cost_a.flops for c in self.cells if c.cost_a)
        fb = sum(c.cost_b.flops for c in self.cells if c.cost_b)
        return pa, pb, fa, fb


def _space(g: Genotype) -> str:
    if g.space.name is None and g.space.hash is None:
        return "none (hand-written)"
    return " ".join(x for x in (g.space.name, f"({g.space.hash})" if g.space.hash else None) if x)


def _header(a: Genotype, b: Genotype) -> list[tuple[str, str, str]]:
    fields = [
        ("space", _space(a), _space(b)),
        ("input", f"{a.input.height}x{a.input.width}", f"{b.input.height}x{b.input.width}"),
        ("backbone", f"{a.backbone.name} (last stride {a.backbone.last_stride})",
         f"{b.backbone.name} (last stride {b.backbone.last_stride})"),
    ]
    return [f for f in fields if f[1] != f[2]]


def _cell_changes(a: CellGenotype, b: CellGenotype) -> list[EdgeChange]:
    ea = {(e.source, e.target): e for e in a.edges}
    eb = {(e.source, e.target): e for e in b.edges}
    live_a = {(e.source, e.target) for e in a.live_edges()}
    live_b = {(e.source, e.target) for e in b.live_edges()}
    changes = []
    for key in sorted(set(ea) | set(eb), key=lambda k: (k[1], k[0])):
        x, y = ea.get(key), eb.get(key)
        if x is None:
            kind = "added"
        elif y is None:
            kind = "removed"
        elif x.op != y.op:
            kind = "op"
        elif full_params(x.op, x.params) != full_params(y.op, y.params):
            kind = "params"
        elif (key in live_a) != (key in live_b):
            kind = "live"
        else:
            continue
        changes.append(EdgeChange(*key, kind, x, y, a_live=key in live_a, b_live=key in live_b))
    return changes


def diff_genotypes(a: Genotype | RunSource | str | os.PathLike,
                   b: Genotype | RunSource | str | os.PathLike, *,
                   names: tuple[str, str] | None = None) -> GenotypeDiff:
    """Compare ``a`` and ``b`` (genotypes, or anything :func:`load_source` reads)."""
    resolved = []
    for x, default in ((a, "A"), (b, "B")):
        if isinstance(x, Genotype):
            resolved.append((x, x.space.name or default))
        else:
            src = load_source(x)
            resolved.append((src.genotype, src.name))
    (ga, na), (gb, nb) = resolved
    if names is not None:
        na, nb = names
    costs_a = {c.position: c for c in cell_costs(ga)}
    costs_b = {c.position: c for c in cell_costs(gb)}
    cells_a = {c.position: c for c in ga.cells}
    cells_b = {c.position: c for c in gb.cells}
    diffs = []
    for pos in POSITIONS:
        ca, cb = cells_a.get(pos), cells_b.get(pos)
        if ca is None and cb is None:
            continue
        if cb is None:
            diffs.append(CellDiff(pos, "only_a", ca, None, costs_a[pos], None))
            continue
        if ca is None:
            diffs.append(CellDiff(pos, "only_b", None, cb, None, costs_b[pos]))
            continue
        changes = _cell_changes(ca, cb)
        status = "changed" if changes or ca.nodes != cb.nodes else "same"
        diffs.append(CellDiff(pos, status, ca, cb, costs_a[pos], costs_b[pos], changes))
    return GenotypeDiff(na, nb, ga, gb, _header(ga, gb) + _mobile_header(ga, gb), diffs,
                        _stage_diffs(backbone_stages(ga), backbone_stages(gb)))


def _edges_text(cell: CellGenotype) -> str:
    live = {(e.source, e.target) for e in cell.live_edges()}
    return ", ".join(f"{e.source}->{e.target} {e.op}" + ("" if (e.source, e.target) in live
                                                         else " (dead)") for e in cell.edges)


def _cost(c: CellCost | None) -> str:
    return "none" if c is None else f"{format_count(c.parameters)} params, {format_flops(c.flops)}"


def _stage_text(stage: StageChoice) -> str:
    """``layer1 8 k5 e3 x1/2 (b1 skipped)``."""
    return f"{stage.layer} {stage.width} k{stage.kernel} e{stage.expansion} {stage.blocks_text()}"


def format_stages(diff: GenotypeDiff) -> list[str]:
    """The backbone-stage lines of :func:`format_diff` (none when both backbones are ResNets)."""
    if not diff.stages:
        return []
    ka, kb = (f"{g.backbone.name} ({'fixed' if g.backbone.mobile is None else 'searched'})"
              for g in (diff.a, diff.b))
    lines = [f"backbone stages ({ka if ka == kb else f'{ka} vs {kb}'}; A -> B):"]
    width = max(len(s.name) for s in diff.stages)
    for s in diff.stages:
        head = f"  {s.name:<{width}}  "
        if s.status == "only_a":
            lines.append(f"{head}only in A: {_stage_text(s.a)}")
        elif s.status == "only_b":
            lines.append(f"{head}only in B: {_stage_text(s.b)}")
        elif s.status == "same":
            lines.append(f"{head}same: {_stage_text(s.a)}")
        else:
            lines.append(f"{head}changed: " + ", ".join(f"{f} {x} -> {y}" for f, x, y in s.changes))
    return lines


def _cost_change(what: str, a: tuple[int, int], b: tuple[int, int]) -> str:
    (pa, fa), (pb, fb) = a, b
    return (f"{what}: {format_count(pa)} -> {format_count(pb)} params ({format_delta(pb - pa)}), "
            f"{format_flops(fa)} -> {format_flops(fb)} ({format_delta(fb - fa, True)})")


def format_diff(diff: GenotypeDiff) -> str:
    """The text of ``nas-reid genotype diff``; its first line warns when A and B are different
    networks around the cells (input size or backbone), so like cells cost differently."""
    lines = []
    around = [f"{f} {x} vs {y}" for f, x, y in diff.header if f in ("input", "backbone")]
    if around:
        lines.append(f"note: A and B are different networks around the cells ({'; '.join(around)}): "
                     "compare their cells' ops; their costs follow the sizes")
    lines += [f"A: {diff.name_a}", f"B: {diff.name_b}"]
    if diff.identical:
        lines.append("the two genotypes describe the same network")
    if diff.header:
        lines.append("around the cells:")
        width = max(len(f) for f, _, _ in diff.header)
        lines += [f"  {f:<{width}}  {x}  ->  {y}" for f, x, y in diff.header]
    lines += format_stages(diff)
    lines.append("cells (parameters and FLOPs of the live edges, one image; A -> B):")
    if not diff.cells:
        lines.append("  neither genotype has a cell")
    for c in diff.cells:
        delta = (f"cost {_cost(c.cost_a)} -> {_cost(c.cost_b)} "
                 f"({format_delta(c.params_delta)} params, {format_delta(c.flops_delta, True)})")
        if c.status == "only_a":
            lines.append(f"  {c.position}  only in A: {_edges_text(c.a)}")
        elif c.status == "only_b":
            lines.append(f"  {c.position}  only in B: {_edges_text(c.b)}")
        elif c.status == "same":
            same = "same cell" + ("" if c.params_delta == 0 and c.flops_delta == 0
                                  else " (other size, so another cost)")
            lines.append(f"  {c.position}  {same}: {_edges_text(c.a)}")
        else:
            lines.append(f"  {c.position}  changed:")
            if c.a.nodes != c.b.nodes:
                lines.append(f"      nodes {c.a.nodes} -> {c.b.nodes}")
            lines += [f"      {ch.describe()}" for ch in c.changes]
        lines.append(f"      {delta}")
    pa, pb, fa, fb = diff.totals
    lines.append(_cost_change("total (cells only)", (pa, fa), (pb, fb)))
    lines.append(_cost_change("backbone", *diff.backbone_costs))
    lines.append(_cost_change("network (backbone, cells, BNNeck; no classifier)",
                              *diff.network_costs))
    return "\n".join(lines)
