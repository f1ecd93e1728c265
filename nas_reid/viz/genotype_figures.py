"""All the pictures of a genotype or a run at once: what ``nas-reid genotype plot`` writes.

:func:`genotype_figures` builds, for anything :func:`nas_reid.viz.genotype_report.load_source`
reads, every figure that the source has data for (the cell DAGs, the probability heatmap and its
evolution, op counts, cell costs, a searched backbone's stages and probabilities, losses,
evaluation, RIB, temperature, cost), and says why each other one is left out. A fixed ResNet
backbone has no ``backbone*`` figures; the ``cost`` figure is in MFLOPs or, for a latency cost,
in ms.
The figures' file stems and what each needs: docs/genotypes.md, section
`nas_reid.viz.genotype_figures`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from matplotlib.figure import Figure

from nas_reid.space.genotype import Genotype
from nas_reid.viz.genotype_report import (
    RunSource,
    backbone_probability_history,
    cost_history,
    load_source,
    op_count_history,
    probability_history,
)
from nas_reid.viz.figures import save_figure
from nas_reid.viz.genotype_plots import (
    plot_arch_probabilities,
    plot_backbone,
    plot_backbone_probabilities,
    plot_cell_costs,
    plot_cells,
)
from nas_reid.viz.search_plots import (
    plot_backbone_evolution,
    plot_cost,
    plot_heldout,
    plot_losses,
    plot_op_counts,
    plot_probability_evolution,
    plot_rib,
    plot_temperature,
)

__all__ = ["genotype_figures", "write_genotype_figures"]


def genotype_figures(source: RunSource | str | os.PathLike
                     ) -> tuple[dict[str, Figure], dict[str, str]]:
    """``(figures, skipped)``: file stem -> figure, and file stem -> why it is left out."""
    src = load_source(source)
    g = src.genotype
    figures: dict[str, Figure] = {}
    skipped: dict[str, str] = {}
    if g.cells:
        figures["cells"] = plot_cells(src)
    else:
        skipped["cells"] = "no cells (the backbone alone)"
    if g.probabilities:
        figures["arch_probs"] = plot_arch_probabilities(src)
    else:
        skipped["arch_probs"] = "the genotype records no architecture probabilities"
    if probability_history(src) is not None:
        figures["prob_evolution"] = plot_probability_evolution(src)
    else:
        skipped["prob_evolution"] = "no architecture-probability history (not a search run)"
    if op_count_history(src) is not None:
        figures["op_counts"] = plot_op_counts(src)
    else:
        skipped["op_counts"] = "no genotype history (not a search run)"
    if g.cells:
        figures["cell_costs"] = plot_cell_costs(src)
    else:
        skipped["cell_costs"] = "no cells"
    _backbone_figures(src, figures, skipped)
    m = src.metrics
    if m:
        figures["losses"] = plot_losses(src)
        figures["evaluation"] = plot_heldout(src)
        if any(isinstance(r.get("rib"), dict) for r in m):
            figures["rib"] = plot_rib(src)
        else:
            skipped["rib"] = "no RIB estimates in the metrics"
        if any(isinstance(r.get("tau"), (int, float)) for r in m):
            figures["temperature"] = plot_temperature(src)
        else:
            skipped["temperature"] = "no temperature in the metrics (not a search run)"
        if cost_history(src) is not None:
            figures["cost"] = plot_cost(src)
        else:
            skipped["cost"] = ("no cost in the metrics (not a search run, or a search with a "
                               "fixed backbone and no cost term)")
    else:
        why = "no metrics.jsonl epochs (not a run folder)"
        skipped.update({k: why for k in ("losses", "evaluation", "rib", "temperature", "cost")})
    return figures, skipped


def _fixed(genotype: Genotype) -> str:
    return f"a fixed {genotype.backbone.name} backbone has no searched choices"


def _backbone_figures(src: RunSource, figures: dict[str, Figure], skipped: dict[str, str]) -> None:
    """Add the searched backbone's figures (``backbone``, ``backbone_probs``,
    ``backbone_evolution``) to ``figures``, or say in ``skipped`` why each is left out."""
    g = src.genotype
    if g.backbone.mobile is None:
        skipped.update({k: _fixed(g) for k in ("backbone", "backbone_probs", "backbone_evolution")})
        return
    figures["backbone"] = plot_backbone(src)
    if g.backbone_probabilities:
        figures["backbone_probs"] = plot_backbone_probabilities(src)
    else:
        skipped["backbone_probs"] = "the genotype records no backbone probabilities"
    if backbone_probability_history(src) is not None:
        figures["backbone_evolution"] = plot_backbone_evolution(src)
    else:
        skipped["backbone_evolution"] = "no backbone-probability history (not a search run)"


def write_genotype_figures(source: RunSource | str | os.PathLike, out_dir: str | os.PathLike,
                           formats: Iterable[str] = ("png", "svg")
                           ) -> tuple[list[Path], dict[str, str]]:
    """Write :func:`genotype_figures` into ``out_dir`` (created), one file per figure and
    format (``cells.png``, ``cells.svg``, ...). Returns the files and the skipped figures."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        from nas_reid.errors import UserError

        raise UserError(f"--out {out} exists and is not a folder")
    figures, skipped = genotype_figures(source)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, fig in figures.items():
        written += save_figure(fig, out / stem, formats=list(formats))
    return written, skipped
