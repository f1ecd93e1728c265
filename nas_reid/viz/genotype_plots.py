"""Pictures of a genotype: the cell DAGs and the architecture-probability heatmap.

Both functions take a :class:`~nas_reid.genotype.Genotype` (as derived by a search or loaded
with :func:`~nas_reid.genotype.load_genotype`), return a matplotlib ``Figure`` (built without
pyplot, so nothing depends on the active backend and nothing opens a window) and, given a path,
also write it as a PNG atomically. A notebook shows the returned figure as is.

- :func:`plot_cells`: one panel per cell, nodes left to right (``networkx.multipartite_layout``
  by node index), each chosen edge an arrow coloured by its op and labelled with it; edges that
  cannot reach the output (dead) are dashed and faded. Each op keeps the same colour in every
  picture (:func:`op_color`).
- :func:`plot_arch_probabilities`: rows are the edges of every cell (``layer3 0->1``), columns
  the candidate ops, colour and number the probability softmax(alpha) the genotype was derived
  from; the chosen op of each kept edge is outlined.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

import networkx as nx
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

from nas_reid.fileio import atomic_write_bytes
from nas_reid.genotype import CellProbabilities, Genotype
from nas_reid.ops import available_ops

_PALETTE = colormaps["tab10"].colors + colormaps["Dark2"].colors
_FIXED = {"identity": "#7f7f7f", "zero": "#c7c7c7"}  # parameter-free ops in greys
_NODE_COLORS = {"input": "#d9e6f2", "node": "#f2f2f2", "output": "#e3f2d9"}
_DPI = 120


def op_color(op: str) -> tuple[float, float, float]:
    """A colour per registered op name, the same in every picture (identity and zero in greys,
    unknown names black)."""
    if op in _FIXED:
        return to_rgb(_FIXED[op])
    ops = [name for name in sorted(available_ops()) if name not in _FIXED]
    if op not in ops:
        return (0.0, 0.0, 0.0)
    return _PALETTE[ops.index(op) % len(_PALETTE)]


def _save(fig: Figure, path: str | os.PathLike | None) -> None:
    if path is None:
        return
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")
    atomic_write_bytes(Path(path), buffer.getvalue())


def plot_cells(genotype: Genotype, path: str | os.PathLike | None = None, *,
               title: str | None = None) -> Figure:
    """The DAG of every cell of ``genotype``, side by side; written to ``path`` if given."""
    cells = genotype.cells
    shapes = genotype.position_shapes()
    widths = [max(2.6, 1.6 * (c.nodes + 1)) for c in cells] or [3.0]
    fig = Figure(figsize=(sum(widths) + 0.6, 3.4 if any(c.nodes > 1 for c in cells) else 2.6),
                 layout="constrained")
    axes = fig.subplots(1, max(1, len(cells)), squeeze=False, width_ratios=widths)[0]
    used: dict[str, bool] = {}
    for ax, cell in zip(axes, cells):
        graph = cell.to_networkx()
        for n in graph.nodes:
            graph.nodes[n]["layer"] = n
        pos = {n: (float(x), float(y)) for n, (x, y) in
               nx.multipartite_layout(graph, subset_key="layer", scale=1.0).items()}
        xs = sorted({x for x, _ in pos.values()})
        spacing = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
        pos = {n: ((x - xs[0]) / spacing, 0.0) for n, (x, _) in pos.items()}  # unit steps
        reach = 0.3
        for s, t, data in graph.edges(data=True):
            gap = t - s
            rad = 0.0 if gap == 1 else (0.35 + 0.1 * (gap - 2)) * (1 if s % 2 == 0 else -1)
            reach = max(reach, 0.5 * abs(rad) * gap + 0.2)
            color = op_color(data["op"])
            live = data["live"]
            used[data["op"]] = True
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
        c, h, w = shapes[cell.position]
        ax.set_title(f"{cell.position}  ({c}x{h}x{w})", fontsize=10)
        span = max(1.0, float(cell.nodes))
        ax.set_xlim(-0.45, span + 0.45)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.axis("off")
    handles = [Line2D([], [], color=op_color(op), lw=2.4, label=op) for op in sorted(used)]
    if any(not d["live"] for cell in cells for _, _, d in cell.to_networkx().edges(data=True)):
        handles.append(Line2D([], [], color="grey", lw=1.4, ls="--", label="dead edge"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   fontsize=8.5, frameon=False)
    name = genotype.space.name or "genotype"
    fig.suptitle(title or f"{name}: searched cells", fontsize=11)
    _save(fig, path)
    return fig


def plot_arch_probabilities(genotype: Genotype,
                            path: str | os.PathLike | None = None, *,
                            probabilities: Mapping[str, CellProbabilities] | None = None,
                            title: str | None = None) -> Figure:
    """Heatmap of softmax(alpha) per cell edge (rows) and candidate op (columns).

    ``probabilities`` defaults to the genotype's own (those it was derived from); the chosen op
    of every kept edge is outlined in red. Written to ``path`` if given.
    """
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
                matches = [k for k, lab in enumerate(p.ops) if lab == op]
                candidates = matches or [k for k, lab in enumerate(p.ops) if lab != "zero"]
                boxes.append((r, max(candidates, key=lambda k: row[k])))
    fig = Figure(figsize=(2.4 + 0.75 * len(labels or [1]), 2.2 + 0.42 * max(1, len(rows))),
                 layout="constrained")
    ax = fig.subplots()
    if not rows:
        ax.text(0.5, 0.5, "no architecture probabilities in this genotype", ha="center",
                va="center")
        ax.axis("off")
        _save(fig, path)
        return fig
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    if len(rows) * len(labels) <= 600:
        for r, row in enumerate(values):
            for k, v in enumerate(row):
                ax.text(k, r, f"{v:.2f}", ha="center", va="center", fontsize=7.5,
                        color="black" if v > 0.55 else "white")
    for r, k in boxes:
        ax.add_patch(Rectangle((k - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2.0))
    for y in separators:
        ax.axhline(y, color="white", lw=2.5)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    colorbar.set_label("softmax(alpha)", fontsize=9)
    ax.set_xlabel("candidate op", fontsize=9)
    ax.set_ylabel("cell edge", fontsize=9)
    fig.legend(handles=[Patch(fill=False, ec="red", lw=2.0, label="chosen op")],
               loc="outside lower center", fontsize=8.5, frameon=False)
    name = genotype.space.name or "genotype"
    epoch = genotype.provenance.epoch
    ax.set_title(title or f"{name}: architecture probabilities"
                 + (f" (epoch {epoch})" if epoch is not None else ""), fontsize=11)
    _save(fig, path)
    return fig
