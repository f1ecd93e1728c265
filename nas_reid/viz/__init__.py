"""Pictures shared by the CLI and the notebooks (contact sheets, ranked lists, genotype,
search and tuning plots).

The plotting functions are importable from here (``from nas_reid import viz;
viz.plot_cells(genotype)``); they load lazily, so ``import nas_reid.viz`` costs nothing until
one is used:

- genotypes (:mod:`~nas_reid.viz.genotype_plots`): :func:`plot_cells`,
  :func:`plot_arch_probabilities`, :func:`plot_cell_costs`, :func:`plot_genotype_diff`,
  :func:`op_color`, a searched backbone's :func:`plot_backbone`,
  :func:`plot_backbone_probabilities`, :func:`option_color`;
- runs over epochs (:mod:`~nas_reid.viz.search_plots`): :func:`plot_probability_evolution`,
  :func:`plot_op_counts`, :func:`plot_losses`, :func:`plot_rib`, :func:`plot_heldout`,
  :func:`plot_temperature`, :func:`plot_backbone_evolution`, :func:`plot_cost`;
- all the pictures of a genotype or run at once (:mod:`~nas_reid.viz.genotype_figures`):
  :func:`genotype_figures`, :func:`write_genotype_figures`;
- tuning studies (:mod:`~nas_reid.viz.tune_plots`): :func:`plot_optimization_history`,
  :func:`plot_param_importances`, :func:`write_tune_plots`;
- :func:`save_figure` (PNG, SVG, PDF) and :func:`message_figure` (:mod:`~nas_reid.viz.figures`);
- the notebooks (:mod:`~nas_reid.viz.notebooks`): :func:`execute_notebook`,
  :func:`render_notebooks`.
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
