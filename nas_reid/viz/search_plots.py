"""Pictures of a run over its epochs, from its ``metrics.jsonl`` and ``genotype_history.jsonl``.

Every function takes anything :func:`nas_reid.viz.genotype_report.load_source` reads (a run
folder, or a :class:`~nas_reid.viz.genotype_report.RunSource` already loaded), returns a matplotlib
``Figure`` and, given a path, also writes it (the suffix names the format; PNG without one).
What a source does not have (a reference genotype has no epochs, a retrain run no
probabilities or temperature) gives a small figure saying so, never an error. The pictures:
:func:`plot_probability_evolution`, :func:`plot_op_counts`, :func:`plot_backbone_evolution`,
:func:`plot_cost` (MFLOPs, or ms for a latency cost), :func:`plot_losses`, :func:`plot_rib`,
:func:`plot_heldout`, :func:`plot_temperature`.
What each picture draws: docs/genotypes.md, section `nas_reid.viz.search_plots`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from nas_reid.viz.genotype_report import (
    CHOICE_KINDS,
    RunSource,
    backbone_probability_history,
    cost_history,
    load_source,
    op_count_history,
    probability_history,
)
from nas_reid.viz.figures import message_figure
from nas_reid.viz.figures import write_figure as _save
from nas_reid.viz.genotype_plots import op_color, op_handles, option_color

__all__ = ["plot_probability_evolution", "plot_op_counts", "plot_backbone_evolution",
           "plot_losses", "plot_rib", "plot_heldout", "plot_temperature", "plot_cost"]

_STYLES = ["-", "--", ":", "-."]
# series colours of the metric curves (black for totals, then distinct hues)
_SERIES = {"total": "black", "id": "#1f77b4", "triplet": "#ff7f0e", "rib": "#2ca02c",
           "center": "#9467bd", "arch triplet": "#d62728", "mAP": "#1f77b4", "R1": "#ff7f0e",
           "R5": "#2ca02c", "I(X;F)": "#1f77b4", "I(F;Y)": "#ff7f0e", "IB": "black",
           "weight": "#7f7f7f", "tau": "#9467bd", "arch lr": "#8c564b",
           "achieved": "black", "expected": "#1f77b4", "target": "#d62728"}


def _why_not(source: RunSource, what: str) -> str:
    if source.kind == "reference":
        return f"no {what}: {source.name} is a reference genotype (hand-written, never searched)"
    if source.kind == "file":
        return f"no {what}: a genotype file alone has no epochs; name its run folder instead"
    if source.kind in ("retrain", "run"):
        return f"no {what}: {source.name} is a retrain run, which trains one fixed genotype"
    return f"no {what} in {source.name}"


def _axis_epochs(ax, epochs: Sequence[int]) -> None:
    ax.set_xlabel("epoch", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.tick_params(labelsize=8.5)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _marker(n: int) -> str | None:
    return "o" if n <= 15 else None


# ------------------------------------------------------------------------- probabilities


def plot_probability_evolution(source: RunSource | str | os.PathLike,
                               path: str | os.PathLike | None = None, *,
                               title: str | None = None, max_columns: int = 4) -> Figure:
    """softmax(alpha) over epochs: one panel per cell edge (one row of panels per cell, at most
    ``max_columns`` per row), one line per candidate in its op's colour (a second candidate of
    the same op dashed), the candidate the final genotype kept on that edge thick, the uniform
    value 1/K dotted. All panels share the y axis."""
    source = load_source(source)
    hist = probability_history(source)
    name = source.name
    if hist is None:
        fig = message_figure(_why_not(source, "architecture-probability history"),
                             title=title or f"{name}: architecture probabilities over epochs")
        _save(fig, path)
        return fig
    labels, epochs = hist.labels, hist.epochs
    style: dict[str, str] = {}
    seen: dict[str, int] = {}
    for lab in labels:
        op = source.op_of(lab)
        style[lab] = _STYLES[seen.get(op, 0) % len(_STYLES)]
        seen[op] = seen.get(op, 0) + 1
    panels = []  # (row, position, edge index)
    total = sum(len(c.edges) for c in hist.cells.values())
    if total <= max_columns:  # few edges (one-node cells): all in one row
        panels = [(0, position, e) for position, c in hist.cells.items()
                  for e in range(len(c.edges))]
        rows, cols = 1, total
    else:  # a row (or more) of panels per cell
        row = 0
        for position, cell in hist.cells.items():
            for start in range(0, len(cell.edges), max_columns):
                panels += [(row, position, e)
                           for e in range(start, min(start + max_columns, len(cell.edges)))]
                row += 1
        rows = row
        cols = min(max_columns, max(len(c.edges) for c in hist.cells.values()))
    fig = Figure(figsize=(0.6 + 3.1 * cols, 0.9 + 2.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    used_axes = set()
    lo = min(v for c in hist.cells.values() for ep in c.values for r in ep for v in r)
    hi = max(v for c in hist.cells.values() for ep in c.values for r in ep for v in r)
    uniform = 1.0 / len(labels)
    lo, hi = min(lo, uniform), max(hi, uniform)
    pad = max(0.02, 0.08 * (hi - lo))
    counters: dict[int, int] = {}
    live_edges = {c.position: {(e.source, e.target) for e in c.live_edges()}
                  for c in source.genotype.cells}
    for r, position, e in panels:
        c = counters.get(r, 0)
        counters[r] = c + 1
        ax = axes[r][c]
        used_axes.add((r, c))
        cell = hist.cells[position]
        s, t = cell.edges[e]
        chosen = cell.chosen.get((s, t))
        for k, lab in enumerate(labels):
            series = [ep[e][k] for ep in cell.values]
            kept = k == chosen
            ax.plot(epochs, series, color=op_color(source.op_of(lab)), ls=style[lab],
                    lw=2.6 if kept else 1.3, marker=_marker(len(epochs)),
                    markersize=4 if kept else 2.5, zorder=3 if kept else 2)
        ax.axhline(uniform, color="#909090", ls=":", lw=1.0, zorder=1)
        kept_text = "not kept"
        if chosen is not None:
            live = (s, t) in live_edges[position]
            kept_text = f"kept: {labels[chosen]}" + ("" if live else ", dead")
        ax.set_title(f"{position}  {s}->{t}  ({kept_text})", fontsize=9,
                     color="black" if chosen is not None else "#707070")
        _axis_epochs(ax, epochs)
        ax.set_ylim(lo - pad, hi + pad)
        if c == 0:
            ax.set_ylabel("softmax(alpha)", fontsize=9)
    for r in range(rows):
        for c in range(cols):
            if (r, c) not in used_axes:
                axes[r][c].axis("off")
    handles = [Line2D([], [], color=op_color(source.op_of(lab)), ls=style[lab], lw=1.6, label=lab)
               for lab in labels]
    handles += [Line2D([], [], color="black", lw=2.6, label="thick: kept at the end"),
                Line2D([], [], color="#909090", ls=":", lw=1.0, label=f"uniform 1/{len(labels)}")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
               fontsize=8.5, frameon=False)
    fig.suptitle(title or f"{name}: architecture probabilities over epochs", fontsize=11)
    _save(fig, path)
    return fig


def plot_op_counts(source: RunSource | str | os.PathLike, path: str | os.PathLike | None = None,
                   *, title: str | None = None) -> Figure:
    """Live edges per op in the genotype derived at each epoch, as stacked bars."""
    source = load_source(source)
    counts = op_count_history(source)
    if counts is None:
        fig = message_figure(_why_not(source, "op counts over epochs"),
                             title=title or f"{source.name}: ops per epoch")
        _save(fig, path)
        return fig
    epochs, per_op = counts
    fig = Figure(figsize=(max(5.0, 1.5 + 0.28 * len(epochs)), 3.4), layout="constrained")
    ax = fig.subplots()
    bottom = [0] * len(epochs)
    for op, values in per_op.items():
        ax.bar(epochs, values, bottom=bottom, color=op_color(op), width=0.75, label=op,
               edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, values)]
    _axis_epochs(ax, epochs)
    ax.grid(False)
    ax.grid(axis="y", alpha=0.3)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("live edges", fontsize=9)
    ax.set_ylim(0, max(bottom) * 1.1 + 0.01)
    fig.legend(handles=op_handles(per_op, lw=6), loc="outside lower center",
               ncol=min(len(per_op), 6), fontsize=8.5, frameon=False)
    fig.suptitle(title or f"{source.name}: ops of each epoch's genotype", fontsize=11)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------- searched backbone

_PANELS = CHOICE_KINDS + ("blocks",)


def plot_backbone_evolution(source: RunSource | str | os.PathLike,
                            path: str | os.PathLike | None = None, *,
                            title: str | None = None) -> Figure:
    """The backbone choice probabilities over epochs: one row of panels per stage with a
    choice, one column per choice kind (width, kernel, expansion, blocks). A width, kernel or
    expansion panel has one line per option (colours from narrow / small to wide / large, the
    option the final genotype chose thick, the uniform value dotted); the blocks panel the
    probability of skipping each block (a block is skipped when that passes 0.5; the blocks
    the final genotype skipped thick). All panels share the y axis 0..1."""
    source = load_source(source)
    hist = backbone_probability_history(source)
    name = source.name
    what = "backbone choice probabilities over epochs"
    if hist is None:
        why = (f"no searched backbone: {source.genotype.backbone.name} is a fixed backbone"
               if source.genotype.backbone.mobile is None
               else _why_not(source, "backbone-probability history"))
        fig = message_figure(why, title=title or f"{name}: {what}")
        _save(fig, path)
        return fig
    stages = hist.by_stage()
    present = {part if part in CHOICE_KINDS else "blocks"
               for choices in stages.values() for part in choices}
    kinds = [k for k in _PANELS if k in present]
    epochs = hist.epochs
    fig = Figure(figsize=(0.6 + 2.9 * len(kinds), 0.9 + 1.9 * len(stages)), layout="constrained")
    axes = fig.subplots(len(stages), len(kinds), squeeze=False, sharey=True)
    for r, (stage, choices) in enumerate(stages.items()):
        for c, kind in enumerate(kinds):
            ax = axes[r][c]
            blocks = {p: h for p, h in choices.items() if p not in CHOICE_KINDS}
            if kind == "blocks" and blocks:
                _skip_panel(ax, stage, blocks, epochs)
            elif kind in choices:
                _option_panel(ax, stage, kind, choices[kind], epochs)
            else:
                ax.axis("off")
                continue
            _axis_epochs(ax, epochs)
            ax.set_ylim(-0.04, 1.04)
            if r < len(stages) - 1:
                ax.set_xlabel("")
            if c == 0:
                ax.set_ylabel("softmax(alpha)", fontsize=9)
    handles = [Line2D([], [], color="black", lw=2.6, label="thick: chosen at the end"),
               Line2D([], [], color="#909090", ls=":", lw=1.0,
                      label="uniform 1/K (blocks: 0.5, skipped above)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8.5, frameon=False)
    fig.suptitle(title or f"{name}: {what}", fontsize=11)
    _save(fig, path)
    return fig


def _option_panel(ax, stage: str, kind: str, choice, epochs: Sequence[int]) -> None:
    """One width / kernel / expansion choice: a line per option, the chosen one thick."""
    n = len(choice.options)
    for k, option in enumerate(choice.options):
        kept = k == choice.chosen
        ax.plot(epochs, [v[k] for v in choice.values], color=option_color(k, n),
                lw=2.6 if kept else 1.3, marker=_marker(len(epochs)),
                markersize=4 if kept else 2.5, zorder=3 if kept else 2, label=str(option))
    ax.axhline(1.0 / n, color="#909090", ls=":", lw=1.0, zorder=1)
    chosen = choice.options[choice.chosen] if choice.chosen is not None else "?"
    ax.set_title(f"{stage} {kind}: {chosen}", fontsize=9)
    ax.legend(fontsize=7.5, loc="best", ncol=n, frameon=True, framealpha=0.8,
              handlelength=1.2, columnspacing=0.8, borderpad=0.3)


def _skip_panel(ax, stage: str, blocks: dict, epochs: Sequence[int]) -> None:
    """The skip choices of a stage's blocks: P(skip) of each block, a skipped one thick."""
    skipped = []
    for k, (part, choice) in enumerate(blocks.items()):
        column = choice.options.index("skip") if "skip" in choice.options else 1
        is_skipped = choice.chosen is not None and choice.options[choice.chosen] == "skip"
        skipped += [part] if is_skipped else []
        ax.plot(epochs, [v[column] for v in choice.values], color=option_color(k, len(blocks)),
                lw=2.6 if is_skipped else 1.3, marker=_marker(len(epochs)),
                markersize=4 if is_skipped else 2.5, label=f"{part} skip")
    ax.axhline(0.5, color="#909090", ls=":", lw=1.0, zorder=1)
    ax.set_title(f"{stage} blocks: " + (", ".join(skipped) + " skipped" if skipped
                                        else "all kept"), fontsize=9)
    ax.legend(fontsize=7.5, loc="best", ncol=min(len(blocks), 3), frameon=True, framealpha=0.8,
              handlelength=1.2, columnspacing=0.8, borderpad=0.3)


# ---------------------------------------------------------------------------- the report


def _series(metrics: list[dict[str, Any]], get) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(metrics):
        try:
            v = get(r)
        except (KeyError, TypeError, AttributeError):
            v = None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(int(r.get("epoch", i + 1)))
            ys.append(float(v))
    return xs, ys


def _lines(ax, metrics, getters: dict[str, Any], *, scale: float = 1.0, styles=None) -> int:
    drawn = 0
    for label, get in getters.items():
        xs, ys = _series(metrics, get)
        if not xs:
            continue
        ax.plot(xs, [scale * y for y in ys], color=_SERIES.get(label.split(" (")[0], None),
                ls=(styles or {}).get(label, "-"), lw=1.8, marker=_marker(len(xs)), markersize=3.5,
                label=label)
        drawn += 1
    return drawn


def _report_figure(source, title, what, path, draw) -> Figure:
    source = load_source(source)
    if not source.metrics:
        fig = message_figure(_why_not(source, what), title=title or f"{source.name}: {what}")
        _save(fig, path)
        return fig
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    drawn = draw(ax, source)
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(source.metrics)]
    _axis_epochs(ax, epochs)
    if not drawn:
        ax.clear()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {what} in {source.name}'s metrics.jsonl", ha="center",
                va="center", transform=ax.transAxes, color="#404040")
    else:
        handles, labels = ax.get_legend_handles_labels()
        for extra in getattr(ax, "_nas_reid_twins", []):
            h, l = extra.get_legend_handles_labels()
            handles, labels = handles + h, labels + l
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5),
                   fontsize=8.5, frameon=False)
    fig.suptitle(title or f"{source.name}: {what}", fontsize=11)
    _save(fig, path)
    return fig


def plot_losses(source: RunSource | str | os.PathLike, path: str | os.PathLike | None = None,
                *, title: str | None = None) -> Figure:
    """Epoch means of the losses: a search's weight-step total, ID, triplet and RIB terms and
    its architecture-step triplet loss; a retrain's total, ID, triplet, center and RIB."""
    def draw(ax, src):
        m = src.metrics
        search = any(isinstance((r.get("loss") or {}).get("weights"), dict) for r in m)
        if search:
            getters = {f"{k} (weights)" if k != "total" else "total (weights)":
                       (lambda r, k=k: r["loss"]["weights"][k])
                       for k in ("total", "id", "triplet", "rib")}
            getters["arch triplet (held-out ids)"] = lambda r: r["loss"]["arch"]["triplet"]
        else:
            getters = {k: (lambda r, k=k: r["loss"][k])
                       for k in ("total", "id", "triplet", "center", "rib")}
        n = _lines(ax, m, getters, styles={"arch triplet (held-out ids)": "--"})
        ax.set_ylabel("loss (epoch mean)", fontsize=9)
        return n
    return _report_figure(source, title, "losses", path, draw)


def plot_rib(source: RunSource | str | os.PathLike, path: str | os.PathLike | None = None,
             *, title: str | None = None) -> Figure:
    """The RIB estimates I(X;F), I(F;Y) and the bound IB (nats, at each epoch's start), and the
    RIB loss weight on the right axis."""
    def draw(ax, src):
        m = src.metrics
        n = _lines(ax, m, {k: (lambda r, key=key: r["rib"][key]) for k, key in
                           (("I(X;F)", "I_XF"), ("I(F;Y)", "I_FY"), ("IB", "IB"))})
        ax.set_ylabel("nats", fontsize=9)
        ax.axhline(0.0, color="#b0b0b0", lw=0.8)
        xs, ys = _series(m, lambda r: r["rib"]["weight"])
        if xs and n:
            twin = ax.twinx()
            twin.plot(xs, ys, color=_SERIES["weight"], ls="--", lw=1.4, label="RIB weight (right)")
            twin.set_ylabel("RIB loss weight", fontsize=9)
            twin.tick_params(labelsize=8.5)
            twin.set_ylim(0, max(ys) * 1.2 if max(ys) > 0 else 1.0)
            ax._nas_reid_twins = [twin]
        return n
    return _report_figure(source, title, "RIB estimates", path, draw)


def plot_heldout(source: RunSource | str | os.PathLike, path: str | os.PathLike | None = None,
                 *, title: str | None = None) -> Figure:
    """mAP, R1 and R5 (%) per epoch: a search's quick evaluation on its held-out identities, a
    retrain's query / gallery evaluation; the best mAP starred."""
    def draw(ax, src):
        m = src.metrics
        key = "heldout" if any("heldout" in r for r in m) else "eval"
        n = _lines(ax, m, {k: (lambda r, k=k: r[key][k]) for k in ("mAP", "R1", "R5")},
                   scale=100.0)
        xs, ys = _series(m, lambda r: r[key]["mAP"])
        if xs:
            i = max(range(len(ys)), key=lambda j: ys[j])
            ax.plot([xs[i]], [100 * ys[i]], marker="*", markersize=13, color=_SERIES["mAP"],
                    ls="none", label=f"best mAP {100 * ys[i]:.1f} (epoch {xs[i]})", zorder=4)
        ax.set_ylabel("%", fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_title("held-out identities (quick evaluation)" if key == "heldout"
                     else "query / gallery", fontsize=9)
        return n
    return _report_figure(source, title, "evaluation per epoch", path, draw)


def plot_temperature(source: RunSource | str | os.PathLike, path: str | os.PathLike | None = None,
                     *, title: str | None = None) -> Figure:
    """The Gumbel temperature tau of each epoch, the warm-up epochs (no architecture update)
    shaded."""
    def draw(ax, src):
        m = src.metrics
        n = _lines(ax, m, {"tau": lambda r: r["tau"]})
        ax.set_ylabel("Gumbel temperature tau", fontsize=9)
        warm = [int(r.get("epoch", i + 1)) for i, r in enumerate(m) if r.get("arch_updates") is False]
        if warm and n:
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="#e8e8e8", zorder=0,
                       label="warm-up (weights only)")
        return n
    return _report_figure(source, title, "temperature", path, draw)


def plot_cost(source: RunSource | str | os.PathLike, path: str | os.PathLike | None = None,
              *, title: str | None = None) -> Figure:
    """The architecture's cost per epoch in the logged unit (MFLOPs for one image, or ms
    summed from a latency lookup table): expected under the architecture probabilities (what
    the cost-aware loss sees), achieved by the epoch's derived genotype, and the cost term's
    target as a horizontal line."""
    def draw(ax, src):
        hist = cost_history(src)
        if hist is None:
            return 0
        ax.plot(hist.epochs, hist.achieved, color=_SERIES["achieved"], lw=1.8,
                marker=_marker(len(hist.epochs)), markersize=3.5, label="achieved (genotype)")
        ax.plot(hist.epochs, hist.expected, color=_SERIES["expected"], ls="--", lw=1.8,
                marker=_marker(len(hist.epochs)), markersize=3.5,
                label="expected (probabilities)")
        if hist.target is not None:
            ax.axhline(hist.target, color=_SERIES["target"], ls=":", lw=1.6,
                       label=f"target {hist.target:g}")
        top = max(hist.achieved + hist.expected + ([hist.target] if hist.target else []))
        ax.set_ylim(0, top * 1.15)
        ax.set_ylabel("MFLOPs (one image)" if hist.unit == "MFLOPs"
                      else f"latency, {hist.unit} (lookup-table sum)", fontsize=9)
        ax.set_title(f"cost term: {hist.form}" + (f"; latency on {hist.device}" if hist.device
                                                   else ""), fontsize=9)
        return 2
    return _report_figure(source, title, "architecture cost", path, draw)
