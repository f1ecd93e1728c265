"""Pictures shared by the CLI and the notebooks (contact sheets, ranked lists, genotype,
search and tuning plots).

The plotting functions are importable from here (``from nas_reid import viz;
viz.plot_cells(genotype)``); they load lazily, so ``import nas_reid.viz`` costs nothing until
one is used. They come from :mod:`~nas_reid.viz.genotype_plots` (genotypes and a searched
backbone), :mod:`~nas_reid.viz.search_plots` (runs over epochs),
:mod:`~nas_reid.viz.genotype_figures` (all the pictures of a genotype or run at once),
:mod:`~nas_reid.viz.tune_plots` (tuning studies), :mod:`~nas_reid.viz.figures`
(:func:`save_figure`, :func:`message_figure`) and :mod:`~nas_reid.viz.notebooks`
(:func:`execute_notebook`, :func:`render_notebooks`).
The functions by module: docs/genotypes.md, section `nas_reid.viz`.
"""

from importlib import import_module

_EXPORTS = {
    "plot_cells": "genotype_plots", "plot_arch_probabilities": "genotype_plots",
    "plot_cell_costs": "genotype_plots", "plot_genotype_diff": "genotype_plots",
    "op_color": "genotype_plots", "draw_cell": "genotype_plots",
    "plot_backbone": "genotype_plots", "plot_backbone_probabilities": "genotype_plots",
    "option_color": "genotype_plots",
    "plot_probability_evolution": "search_plots", "plot_op_counts": "search_plots",
    "plot_losses": "search_plots", "plot_rib": "search_plots", "plot_heldout": "search_plots",
    "plot_temperature": "search_plots", "plot_backbone_evolution": "search_plots",
    "plot_cost": "search_plots",
    "genotype_figures": "genotype_figures", "write_genotype_figures": "genotype_figures",
    "plot_optimization_history": "tune_plots", "plot_param_importances": "tune_plots",
    "write_tune_plots": "tune_plots",
    "save_figure": "figures", "message_figure": "figures",
    "execute_notebook": "notebooks", "render_notebooks": "notebooks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
