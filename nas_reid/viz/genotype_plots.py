"""Pictures of a genotype: the cell DAGs, the architecture-probability heatmap, the cost of each
cell, and two genotypes side by side.

Every function takes a :class:`~nas_reid.space.genotype.Genotype` (as derived by a search or loaded
with :func:`~nas_reid.space.genotype.load_genotype`) or, where said, anything
:func:`nas_reid.viz.genotype_report.load_source` reads; it returns a matplotlib ``Figure`` (built
without pyplot, see :mod:`nas_reid.viz.figures`) and, given a path, also writes it as a PNG
atomically. A notebook shows the returned figure as is. The pictures: :func:`plot_cells`,
:func:`plot_arch_probabilities`, :func:`plot_cell_costs`, :func:`plot_genotype_diff`,
:func:`plot_backbone`, :func:`plot_backbone_probabilities`. Each op keeps the same colour in
every picture (:func:`op_color`); a backbone choice's options are coloured by
:func:`option_color`, the backbone's widths by :data:`BACKBONE_COLORS`.
What each picture draws, and the colours: docs/genotypes.md, section
`nas_reid.viz.genotype_plots`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Mapping

import networkx as nx
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

from nas_reid.space.genotype import CellGenotype, CellProbabilities, Genotype
from nas_reid.ops import available_ops
from nas_reid.viz.figures import message_figure, write_figure

if TYPE_CHECKING:
    from nas_reid.viz.genotype_diff import GenotypeDiff
    from nas_reid.viz.genotype_report import RunSource

_PALETTE = tuple(c for c in colormaps["tab10"].colors + colormaps["Dark2"].colors
                 if len({round(v, 3) for v in c}) > 1)
_FIXED = {"identity": "#7f7f7f", "zero": "#c7c7c7"}  # parameter-free ops in greys
_NODE_COLORS = {"input": "#d9e6f2", "node": "#f2f2f2", "output": "#e3f2d9"}
HIGHLIGHT_COLORS = {"added": "#b9e7b0", "removed": "#f6b8b8", "changed": "#ffdc8f"}
"""Halo colours of :func:`plot_genotype_diff` (pastels no op uses)."""


def op_color(op: str) -> tuple[float, float, float]:
    """A colour per registered op name, the same in every picture (identity and zero in greys,
    unknown names black)."""
    if op in _FIXED:
        return to_rgb(_FIXED[op])
    ops = [name for name in sorted(available_ops()) if name not in _FIXED]
    if op not in ops:
        return (0.0, 0.0, 0.0)
    return _PALETTE[ops.index(op) % len(_PALETTE)]


_save = write_figure  # the plots' ``path`` argument


def _arc(source: int, target: int) -> float:
    """Curvature of an edge: straight between neighbours, arcs (alternating sides by the
    source's parity, larger for longer jumps) otherwise."""
    gap = target - source
    return 0.0 if gap == 1 else (0.35 + 0.1 * (gap - 2)) * (1 if source % 2 == 0 else -1)


def cell_extent(cell: CellGenotype) -> tuple[float, float]:
    """``(below, above)``: how far, in node spacings, the drawing of ``cell`` reaches under
    and over the line of nodes (arcs with a positive curvature bend down)."""
    below = above = 0.3
    for e in cell.edges:
        rad = _arc(e.source, e.target)
        height = 0.5 * abs(rad) * (e.target - e.source) + 0.2
        if rad > 0:
            below = max(below, height)
        elif rad < 0:
            above = max(above, height)
    return below, above


def draw_cell(ax, cell: CellGenotype, shape: tuple[int, int, int] | None = None, *,
              highlights: Mapping[tuple[int, int], str] | None = None,
              title: str | None = None, extent: tuple[float, float] | None = None
              ) -> tuple[set[str], bool]:
    """Draw the DAG of ``cell`` on ``ax``: nodes left to right (``networkx.multipartite_layout``
    by node index), each edge an arrow in its op's colour labelled with the op, dead edges
    dashed and faded. ``highlights``: edge -> ``added`` / ``removed`` / ``changed``, drawn as
    a pastel halo under the edge (:data:`HIGHLIGHT_COLORS`). ``extent``: ``(below, above)``
    of the y range (default :func:`cell_extent`). Returns the ops drawn and whether a dead
    edge was drawn."""
    graph = cell.to_networkx()
    for n in graph.nodes:
        graph.nodes[n]["layer"] = n
    pos = {n: (float(x), float(y)) for n, (x, y) in
           nx.multipartite_layout(graph, subset_key="layer", scale=1.0).items()}
    xs = sorted({x for x, _ in pos.values()})
    spacing = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    pos = {n: ((x - xs[0]) / spacing, 0.0) for n, (x, _) in pos.items()}  # unit steps
    used: set[str] = set()
    dead = False
    for s, t, data in graph.edges(data=True):
        rad = _arc(s, t)
        color = op_color(data["op"])
        live = data["live"]
        dead |= not live
        used.add(data["op"])
        halo = (highlights or {}).get((s, t))
        if halo is not None:
            ax.add_patch(FancyArrowPatch(
                pos[s], pos[t], connectionstyle=f"arc3,rad={rad}", arrowstyle="-",
                lw=11, color=HIGHLIGHT_COLORS[halo], shrinkA=12, shrinkB=12, zorder=0.5,
                capstyle="round"))
        ax.add_patch(FancyArrowPatch(
            pos[s], pos[t], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=14, lw=2.4 if live else 1.4, color=color,
            linestyle="-" if live else "--", alpha=1.0 if live else 0.45,
            shrinkA=17, shrinkB=17, zorder=1))
        (x1, y1), (x2, y2) = pos[s], pos[t]
        lx, ly = (x1 + x2) / 2 + 0.5 * rad * (y2 - y1), (y1 + y2) / 2 - 0.5 * rad * (x2 - x1)
        ax.text(lx, ly + (0.09 if rad == 0 else 0.0), data["op"], ha="center",
                va="bottom" if rad >= 0 else "top", fontsize=8.5, color="black",
                alpha=1.0 if live else 0.6, zorder=3,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    for n, data in graph.nodes(data=True):
        label = {"input": "in", "output": "out"}.get(data["kind"], str(n))
        ax.scatter(*pos[n], s=900, c=_NODE_COLORS[data["kind"]], edgecolors="#404040",
                   linewidths=1.2, zorder=2, alpha=1.0 if data["live"] else 0.5)
        ax.text(*pos[n], label, ha="center", va="center", fontsize=9, zorder=4)
    if title is None and shape is not None:
        c, h, w = shape
        title = f"{cell.position}  ({c}x{h}x{w})"
    if title is not None:
        ax.set_title(title, fontsize=10)
    span = max(1.0, float(cell.nodes))
    below, above = cell_extent(cell) if extent is None else extent
    ax.set_xlim(-0.45, span + 0.45)
    ax.set_ylim(-below, above)
    ax.set_aspect("equal")
    ax.axis("off")
    return used, dead


def op_handles(ops, *, dead: bool = False, lw: float = 2.4) -> list[Line2D]:
    """Legend entries: one line per op in its colour (sorted), and the dead-edge style."""
    handles = [Line2D([], [], color=op_color(op), lw=lw, label=op) for op in sorted(set(ops))]
    if dead:
        handles.append(Line2D([], [], color="grey", lw=1.4, ls="--", label="dead edge"))
    return handles


def _resolve(genotype: "Genotype | RunSource | str | os.PathLike"
             ) -> tuple[Genotype, str | None, Callable[[str], str] | None]:
    """``(genotype, name, op_of)`` of a genotype or anything ``load_source`` reads."""
    if isinstance(genotype, Genotype):
        return genotype, genotype.space.name, None
    from nas_reid.viz.genotype_report import load_source

    source = load_source(genotype)
    return source.genotype, source.name, source.op_of


def plot_cells(genotype: "Genotype | RunSource | str | os.PathLike",
               path: str | os.PathLike | None = None, *, title: str | None = None) -> Figure:
    """The DAG of every cell of ``genotype`` (or of anything
    :func:`~nas_reid.viz.genotype_report.load_source` reads), side by side; written to ``path`` if
    given."""
    from_source = not isinstance(genotype, Genotype)
    genotype, name, _ = _resolve(genotype)
    cells = genotype.cells
    if not cells:
        fig = message_figure("no cells: the backbone alone",
                             title=title or (f"{name}: cells" if name else "cells"))
        _save(fig, path)
        return fig
    shapes = genotype.position_shapes()
    widths = [max(2.6, 1.6 * (c.nodes + 1)) for c in cells]
    height = max(lo + hi for lo, hi in map(cell_extent, cells))
    fig = Figure(figsize=(sum(widths) + 0.6, max(2.2, 1.4 * height + 1.5)), layout="constrained")
    axes = fig.subplots(1, len(cells), squeeze=False, width_ratios=widths)[0]
    used: set[str] = set()
    dead = False
    for ax, cell in zip(axes, cells):
        ops, has_dead = draw_cell(ax, cell, shapes[cell.position])
        used |= ops
        dead |= has_dead
    handles = op_handles(used, dead=dead)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   fontsize=8.5, frameon=False)
    default = f"{name}: {'cells' if from_source else 'searched cells'}" if name else "cells"
    fig.suptitle(title or default, fontsize=11)
    _save(fig, path)
    return fig


def _op_lookup(op_of: Mapping[str, str] | Callable[[str], str] | None) -> Callable[[str], str]:
    if op_of is None:
        return lambda label: label
    if callable(op_of):
        return op_of
    return lambda label: op_of.get(label, label)


def plot_arch_probabilities(genotype: "Genotype | RunSource | str | os.PathLike",
                            path: str | os.PathLike | None = None, *,
                            probabilities: Mapping[str, CellProbabilities] | None = None,
                            title: str | None = None,
                            op_of: Mapping[str, str] | Callable[[str], str] | None = None
                            ) -> Figure:
    """Heatmap of softmax(alpha) per cell edge (rows) and candidate op (columns).

    The colours diverge from the uniform probability 1/n (white, marked on the colour bar)
    over the range of the data (:func:`probability_scale`), not 0..1, so that a search's small
    departures from uniform show; each cell is labelled with enough decimals to tell every
    edge's two largest candidates apart (:func:`probability_decimals`, at least 3).
    ``probabilities`` defaults to the genotype's own (those it was derived from); the chosen op
    of every kept edge is outlined in red. ``op_of`` maps a candidate label to its op name
    (labels are op names unless the space gives labels; :meth:`RunSource.op_of
    <nas_reid.viz.genotype_report.RunSource.op_of>`); column names are written in their op's
    colour. ``genotype`` may be anything :func:`~nas_reid.viz.genotype_report.load_source` reads
    (then ``op_of`` defaults to the run's). Written to ``path`` if given.
    """
    genotype, name, source_op_of = _resolve(genotype)
    op_name = _op_lookup(op_of if op_of is not None else source_op_of)
    probs = dict(probabilities if probabilities is not None else genotype.probabilities)
    rows, labels, values, boxes, separators = [], None, [], [], []
    for cell in genotype.cells:
        p = probs.get(cell.position)
        if p is None:
            continue
        p = p if isinstance(p, CellProbabilities) else CellProbabilities.model_validate(p)
        labels = labels or list(p.ops)
        if separators or rows:
            separators.append(len(rows) - 0.5)
        chosen = {(e.source, e.target): e.op for e in cell.edges}
        for (s, t), row in zip(p.edges, p.values):
            r = len(rows)
            rows.append(f"{cell.position}  {s}->{t}")
            values.append(list(row))
            op = chosen.get((s, t))
            if op is not None:
                matches = [k for k, lab in enumerate(p.ops) if lab == op or op_name(lab) == op]
                candidates = matches or [k for k, lab in enumerate(p.ops) if lab != "zero"]
                boxes.append((r, max(candidates, key=lambda k: row[k])))
    name = name or "genotype"
    if not rows:
        fig = message_figure(
            "no architecture probabilities in this genotype (a hand-written or reference "
            "genotype, or one retargeted to another size, records none)",
            title=title or f"{name}: architecture probabilities")
        _save(fig, path)
        return fig
    fig = Figure(figsize=(2.4 + 0.75 * len(labels), 2.2 + 0.42 * len(rows)),
                 layout="constrained")
    ax = fig.subplots()
    uniform = 1.0 / len(labels)
    low, high = probability_scale(values, uniform)
    image = ax.imshow(values, cmap=PROBABILITY_CMAP, aspect="auto",
                      norm=TwoSlopeNorm(vcenter=uniform, vmin=low, vmax=high))
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=9)
    for tick, label in zip(ax.get_xticklabels(), labels):
        tick.set_color(op_color(op_name(label)))
        tick.set_fontweight("bold")
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    if len(rows) * len(labels) <= 600:
        digits = probability_decimals(values)
        for r, row in enumerate(values):
            for k, v in enumerate(row):
                half = high - uniform if v > uniform else uniform - low
                far = abs(v - uniform) / half  # 1 at either end of the scale: a dark colour
                ax.text(k, r, f"{v:.{digits}f}", ha="center", va="center", fontsize=7.5,
                        color="white" if far > 0.6 else "black")
    for r, k in boxes:
        ax.add_patch(Rectangle((k - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2.0))
    for y in separators:
        ax.axhline(y, color="white", lw=2.5)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    colorbar.set_label(f"softmax(alpha); white: uniform 1/{len(labels)}", fontsize=9)
    colorbar.set_ticks(sorted({low, uniform, high}))
    colorbar.set_ticklabels([f"{t:.3f}" + (" uniform" if t == uniform else "")
                             for t in sorted({low, uniform, high})])
    colorbar.ax.axhline(uniform, color="black", lw=1.2, ls="--")
    ax.set_xlabel("candidate op", fontsize=9)
    ax.set_ylabel("cell edge", fontsize=9)
    fig.legend(handles=[Patch(fill=False, ec="red", lw=2.0, label="chosen op")],
               loc="outside lower center", fontsize=8.5, frameon=False)
    epoch = genotype.provenance.epoch
    ax.set_title(title or f"{name}: architecture probabilities"
                 + (f" (epoch {epoch})" if epoch is not None else ""), fontsize=11)
    _save(fig, path)
    return fig


PROBABILITY_CMAP = "BrBG"
"""Diverging: brown below uniform, white at it, green above (the chosen op's red outline stays
visible on all three)."""


def probability_scale(values: list[list[float]], uniform: float) -> tuple[float, float]:
    """``(low, high)`` of the colour scale: uniform plus and minus the largest departure from it
    in ``values`` (at least 0.001), kept within [0, 1]."""
    spread = max([abs(v - uniform) for row in values for v in row] + [1e-3])
    return max(0.0, uniform - spread), min(1.0, uniform + spread)


def probability_decimals(values: list[list[float]], least: int = 3, most: int = 6) -> int:
    """The fewest decimals (``least`` .. ``most``) at which every row's largest value and its
    runner-up print differently (equal ones never do: ``most``)."""
    for digits in range(least, most + 1):
        if all(f"{a:.{digits}f}" != f"{b:.{digits}f}"
               for a, b in (sorted(row, reverse=True)[:2] for row in values if len(row) > 1)):
            return digits
    return most


# ------------------------------------------------------------------------------ cell costs


def _tick_label(value: float, _position: int | None = None) -> str:
    """Axis tick: ``0``, ``500 k``, ``2.5 M`` (no trailing zeros)."""
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def plot_cell_costs(genotype: "Genotype | RunSource | str | os.PathLike",
                    path: str | os.PathLike | None = None, *, title: str | None = None) -> Figure:
    """Parameters and forward FLOPs (one image) of every cell, bars stacked by op (live edges
    only; :func:`nas_reid.space.costs.cell_costs`), the total written above each bar.
    ``genotype``: a genotype or anything :func:`~nas_reid.viz.genotype_report.load_source` reads."""
    from nas_reid.viz.genotype_report import cell_costs, format_count, load_source, total_cost

    name = None
    if not isinstance(genotype, Genotype):
        source = load_source(genotype)
        genotype, name = source.genotype, source.name
    name = name or genotype.space.name or "genotype"
    costs = cell_costs(genotype)
    if not costs:
        fig = message_figure("no cells, so no cell cost: the backbone alone",
                             title=title or f"{name}: cost per cell")
        _save(fig, path)
        return fig
    ops = sorted({e.op for c in costs for e in c.edges if e.live})
    fig = Figure(figsize=(max(6.4, 2.2 + 1.5 * len(costs)), 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    x = list(range(len(costs)))
    for ax, what, unit in ((axes[0], "parameters", "parameters"),
                           (axes[1], "flops", "FLOPs per image")):
        bottom = [0.0] * len(costs)
        for op in ops:
            heights = [float(sum(getattr(e, what) for e in c.edges if e.live and e.op == op))
                       for c in costs]
            ax.bar(x, heights, bottom=bottom, color=op_color(op), width=0.6, label=op,
                   edgecolor="white", linewidth=0.6)
            bottom = [b + h for b, h in zip(bottom, heights)]
        top = max(bottom) or 1.0
        for xi, total in zip(x, bottom):
            ax.text(xi, total + 0.02 * top, format_count(total), ha="center", va="bottom",
                    fontsize=8.5)
        ax.set_ylim(0, top * 1.15)
        ax.set_xticks(x, [f"{c.position}\n{c.shape[0]}x{c.shape[1]}x{c.shape[2]}" for c in costs],
                      fontsize=8.5)
        ax.set_ylabel(unit, fontsize=9)
        ax.yaxis.set_major_formatter(_tick_label)
        ax.tick_params(axis="y", labelsize=8.5)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title({"parameters": "parameters", "flops": "FLOPs (one image)"}[what], fontsize=10)
    params, flops = total_cost(costs)
    if ops:
        fig.legend(handles=op_handles(ops, lw=6), loc="outside lower center",
                   ncol=min(len(ops), 6), fontsize=8.5, frameon=False)
    fig.suptitle(title or f"{name}: cost per cell (live edges; total {format_count(params)} "
                          f"parameters, {format_count(flops)} FLOPs)", fontsize=11)
    _save(fig, path)
    return fig


# ------------------------------------------------------------------------------------ diff


def plot_genotype_diff(a: "Genotype | RunSource | str | os.PathLike | GenotypeDiff",
                       b: "Genotype | RunSource | str | os.PathLike | None" = None,
                       path: str | os.PathLike | None = None, *,
                       names: tuple[str, str] | None = None, title: str | None = None) -> Figure:
    """The cells of ``a`` (left) and ``b`` (right), one row per cell position of either, the
    edges that differ under a halo: removed (only in A), added (only in B), changed (another op,
    other parameters, or live in one and dead in the other). Each panel's title gives the
    cell's size, parameters and FLOPs (B's also the difference to A). ``a`` may be a
    :class:`~nas_reid.viz.genotype_diff.GenotypeDiff` already computed (then ``b`` is None)."""
    from nas_reid.viz.genotype_diff import GenotypeDiff, diff_genotypes
    from nas_reid.viz.genotype_report import format_count, format_delta

    diff = a if isinstance(a, GenotypeDiff) else diff_genotypes(a, b, names=names)
    sides = (("a", diff.name_a, diff.a), ("b", diff.name_b, diff.b))
    if not diff.cells:
        fig = message_figure("neither genotype has a cell (both are the backbone alone)",
                             title=title or f"{diff.name_a} vs {diff.name_b}")
        _save(fig, path)
        return fig
    nodes = max(c.nodes for d in diff.cells for c in (d.a, d.b) if c is not None)
    extents = [tuple(max(cell_extent(c)[i] for c in (d.a, d.b) if c is not None) for i in (0, 1))
               for d in diff.cells]
    col_width = max(3.4, 1.6 * (nodes + 1))
    height = sum(max(1.5, 1.6 * (lo + hi) + 0.9) for lo, hi in extents) + 1.6
    fig = Figure(figsize=(2 * col_width + 0.6, height), layout="constrained")
    subfigs = fig.subfigures(1, 2, wspace=0.04)
    used: set[str] = set()
    dead = False
    kinds: set[str] = set()
    for sub, (side, name, genotype) in zip(subfigs, sides):
        g = genotype
        head = side.upper() if name == side.upper() else f"{side.upper()}: {name}"
        sub.suptitle(f"{head}\n{g.backbone.name}, {g.input.height}x{g.input.width}", fontsize=10.5)
        axes = sub.subplots(len(diff.cells), 1, squeeze=False,
                            height_ratios=[max(1.2, lo + hi) for lo, hi in extents])[:, 0]
        for ax, d, extent in zip(axes, diff.cells, extents):
            cell = d.a if side == "a" else d.b
            cost = d.cost_a if side == "a" else d.cost_b
            if cell is None:
                ax.text(0.5, 0.5, f"no cell at {d.position}", ha="center", va="center",
                        fontsize=9.5, color="#606060", transform=ax.transAxes)
                ax.add_patch(Rectangle((0.02, 0.1), 0.96, 0.8, transform=ax.transAxes,
                                       fc="#f4f4f4", ec="#c0c0c0", ls="--", lw=1.0))
                ax.axis("off")
                continue
            halos = d.highlights(side)
            if d.status in ("only_a", "only_b"):
                halos = {(e.source, e.target): "removed" if side == "a" else "added"
                         for e in cell.edges}
            kinds |= set(halos.values())
            c, h, w = cost.shape
            text = f"{d.position} ({c}x{h}x{w}): {format_count(cost.parameters)} params, " \
                   f"{format_count(cost.flops)} FLOPs"
            if side == "b" and d.cost_a is not None:
                text += f"\n({format_delta(d.params_delta)} params, " \
                        f"{format_delta(d.flops_delta, True)} vs A)"
            ops, has_dead = draw_cell(ax, cell, title=text, highlights=halos, extent=extent)
            middle, half = cell.nodes / 2, max(1.0, float(nodes)) / 2 + 0.45
            ax.set_xlim(middle - half, middle + half)  # a smaller cell, centred
            used |= ops
            dead |= has_dead
            ax.title.set_fontsize(9)
    handles = op_handles(used, dead=dead)
    labels = {"removed": "only in A (removed)", "added": "only in B (added)",
              "changed": "changed (op, parameters or liveness)"}
    handles += [Patch(color=HIGHLIGHT_COLORS[k], label=labels[k])
                for k in ("removed", "added", "changed") if k in kinds]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4),
               fontsize=8.5, frameon=False)
    changed = sum(d.status != "same" for d in diff.cells)
    pa, pb, fa, fb = diff.totals
    summary = ("the same network" if diff.identical else
               f"{changed} of {len(diff.cells)} cell positions differ")
    fig.suptitle(title or f"{diff.name_a} vs {diff.name_b}: {summary}; cells "
                          f"{format_count(pa)} -> {format_count(pb)} params, "
                          f"{format_count(fa)} -> {format_count(fb)} FLOPs", fontsize=11)
    _save(fig, path)
    return fig


# ------------------------------------------------------------------------------ backbone

BACKBONE_COLORS = {"chosen": "#4878a8", "widest": "#e4e4e4", "layer": ("#ffffff", "#f3f6fa")}
"""The searched backbone's pictures: the chosen width, the widest option behind it, and the
alternating shades of the layer groups."""


def option_color(index: int, count: int) -> tuple[float, float, float]:
    """The colour of option ``index`` of ``count`` options of a backbone choice (its place in
    the option order: narrow to wide, small to large), from the ``plasma`` map (light to dark
    ends cut off)."""
    return tuple(colormaps["plasma"](0.05 + 0.75 * index / max(1, count - 1))[:3])


def _backbone_message(genotype: Genotype, name: str, what: str, title: str | None,
                      path) -> Figure | None:
    """A message figure when ``genotype`` has no searched backbone, else None."""
    if genotype.backbone.mobile is not None:
        return None
    fig = message_figure(f"no searched backbone: {genotype.backbone.name} is a fixed backbone "
                         "without choices", title=title or f"{name}: {what}")
    _save(fig, path)
    return fig


def _layer_groups(stages) -> list[tuple[str, int, int]]:
    """``[(layer, first index, last index)]`` of consecutive stages of the same layer group."""
    groups: list[tuple[str, int, int]] = []
    for i, stage in enumerate(stages):
        if groups and groups[-1][0] == stage.layer:
            groups[-1] = (stage.layer, groups[-1][1], i)
        else:
            groups.append((stage.layer, i, i))
    return groups


def plot_backbone(genotype: "Genotype | RunSource | str | os.PathLike",
                  path: str | os.PathLike | None = None, *, title: str | None = None) -> Figure:
    """The searched backbone stage by stage: the chosen width as a bar in front of the stage's
    widest option (a light bar, when the genotype records the backbone probabilities), each
    bar annotated with its width (``chosen/widest``), kernel, expansion and kept / total
    blocks; stages grouped by layer (shaded bands, the layer named under them) and each cell
    position marked by a dashed line after its layer's last stage, labelled with the cell's
    live ops in their colours. A fixed ResNet gives a figure saying so."""
    from nas_reid.viz.genotype_report import backbone_cost, backbone_stages, format_count

    genotype, name, _ = _resolve(genotype)
    name = name or "genotype"
    message = _backbone_message(genotype, name, "searched backbone", title, path)
    if message is not None:
        return message
    arch = genotype.backbone.mobile
    stages = backbone_stages(genotype)
    widest = [s.widest for s in stages]
    top = max([s.width for s in stages] + [w for w in widest if w is not None])
    fig = Figure(figsize=(max(6.4, 1.6 + 1.05 * len(stages)), 4.6), layout="constrained")
    ax = fig.subplots()
    x = list(range(len(stages)))
    groups = _layer_groups(stages)
    for g, (layer, first, last) in enumerate(groups):
        ax.axvspan(first - 0.5, last + 0.5, color=BACKBONE_COLORS["layer"][g % 2], zorder=0)
        ax.text((first + last) / 2, -0.13, layer, ha="center", va="top", fontsize=9,
                fontweight="bold", transform=ax.get_xaxis_transform())
    known = [i for i, w in enumerate(widest) if w is not None]
    if known:
        ax.bar([x[i] for i in known], [widest[i] for i in known], width=0.62,
               color=BACKBONE_COLORS["widest"], edgecolor="#a0a0a0", linewidth=0.8, zorder=1)
    ax.bar(x, [s.width for s in stages], width=0.62, color=BACKBONE_COLORS["chosen"], zorder=2)
    for i, s in enumerate(stages):
        height = max(s.width, widest[i] or 0)
        width = f"{s.width}/{widest[i]}" if widest[i] is not None else f"{s.width}"
        ax.text(i, height + 0.02 * top, f"{width}\nk{s.kernel} e{s.expansion}\n"
                f"x{s.depth}/{len(s.blocks)}", ha="center", va="bottom", fontsize=8.5,
                linespacing=1.15, zorder=3)
    cells = {c.position: c for c in genotype.cells}
    used: set[str] = set()
    for layer, first, last in groups:
        cell = cells.get(layer)
        if cell is None:
            continue
        ops = sorted({e.op for e in cell.live_edges()})
        used |= set(ops)
        ax.axvline(last + 0.5, color="#505050", ls="--", lw=1.2, zorder=2.5)
        shown = ops[:3] + ([f"+{len(ops) - 3} more"] if len(ops) > 3 else [])
        for j, op in enumerate(shown):
            ax.text(last + 0.47, 0.97 - 0.065 * j, op, ha="right", va="top", fontsize=8,
                    color=op_color(op) if op in ops else "#505050", fontweight="bold",
                    transform=ax.get_xaxis_transform(), zorder=4,
                    bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="none", alpha=0.85))
    ax.set_xticks(x, [s.name for s in stages], fontsize=9)
    ax.set_xlim(-0.5, len(stages) - 0.5)
    ax.set_ylim(0, top * 1.6)  # room for the annotations and the cells' ops
    ax.set_ylabel("output channels", fontsize=9)
    ax.tick_params(axis="y", labelsize=8.5)
    ax.spines[["top", "right"]].set_visible(False)
    handles = [Patch(color=BACKBONE_COLORS["chosen"], label="chosen width")]
    if known:
        handles.append(Patch(fc=BACKBONE_COLORS["widest"], ec="#a0a0a0",
                             label="widest option of the stage"))
    if used:
        handles.append(Line2D([], [], color="#505050", ls="--", lw=1.2,
                              label="cell (its live ops)"))
    labels = (f"bars: {'chosen/widest' if known else 'chosen'} channels, kernel k, expansion e, "
              "kept/all blocks x")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8.5,
               frameon=False, title=labels, title_fontsize=8.5)
    params, flops = backbone_cost(genotype)
    fig.suptitle(title or f"{name}: searched backbone ({genotype.backbone.name}, stem "
                          f"{arch.stem}, head {arch.head or 'none'}; {format_count(params)} "
                          f"params, {format_count(flops)} FLOPs)", fontsize=11)
    _save(fig, path)
    return fig


def _choice_label(stage: str, part: str) -> str:
    return f"{stage}  {part} skip" if part.startswith("b") else f"{stage}  {part}"


def plot_backbone_probabilities(genotype: "Genotype | RunSource | str | os.PathLike",
                                path: str | os.PathLike | None = None, *,
                                title: str | None = None) -> Figure:
    """Heatmap of softmax(alpha) of every backbone choice (rows, grouped by stage) over its
    options (columns: first, second, ... option; each cell names its option), the chosen
    option outlined in red as in :func:`plot_arch_probabilities`. A fixed ResNet, or a
    genotype without recorded backbone probabilities, gives a figure saying so."""
    import numpy as np

    from nas_reid.viz.genotype_report import backbone_stages

    genotype, name, _ = _resolve(genotype)
    name = name or "genotype"
    what = "backbone choice probabilities"
    message = _backbone_message(genotype, name, what, title, path)
    if message is not None:
        return message
    stages = backbone_stages(genotype)
    rows: list[tuple[str, list, list[float], int | None]] = []  # label, options, values, chosen
    separators = []
    for stage in stages:
        if not stage.options:
            continue
        if rows:
            separators.append(len(rows) - 0.5)
        for part, options in stage.options.items():
            key = (f"{stage.name}_{part}" if not part.startswith("b")
                   else f"{stage.name}_{part}_skip")
            values = list(genotype.backbone_probabilities[key].values)
            chosen = stage.chosen(part)
            rows.append((_choice_label(stage.name, part), options, values,
                         options.index(chosen) if chosen in options else None))
    if not rows:
        fig = message_figure("no backbone probabilities in this genotype (a hand-written "
                             "backbone records none)", title=title or f"{name}: {what}")
        _save(fig, path)
        return fig
    columns = max(len(r[1]) for r in rows)
    values = np.full((len(rows), columns), np.nan)
    for r, (_, _, v, _) in enumerate(rows):
        values[r, :len(v)] = v
    fig = Figure(figsize=(2.6 + 0.95 * columns, 1.6 + 0.36 * len(rows)), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="#f4f4f4")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for r, (_, options, v, chosen) in enumerate(rows):
        for k, (option, p) in enumerate(zip(options, v)):
            ax.text(k, r, f"{option}: {p:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if p > 0.55 else "white")
        if chosen is not None:
            ax.add_patch(Rectangle((chosen - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2.0))
    for y in separators:
        ax.axhline(y, color="white", lw=2.5)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    ax.set_xticks(range(columns), [f"option {k + 1}" for k in range(columns)], fontsize=9)
    ax.tick_params(length=0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
    colorbar.set_label("softmax(alpha)", fontsize=9)
    fig.legend(handles=[Patch(fill=False, ec="red", lw=2.0, label="chosen option")],
               loc="outside lower center", fontsize=8.5, frameon=False)
    epoch = genotype.provenance.epoch
    ax.set_title(title or f"{name}: {what}" + (f" (epoch {epoch})" if epoch is not None else ""),
                 fontsize=11)
    _save(fig, path)
    return fig
