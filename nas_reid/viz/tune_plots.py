"""Pictures of a tuning study (an Optuna study, as both ``nas-reid tune`` backends record it).

- :func:`plot_optimization_history`: each complete trial's value by trial number and the best
  value so far (pruned and failed trials are counted in the legend);
- :func:`plot_param_importances`: how much of the value's variation each parameter explains
  (``optuna.importance.get_param_importances``: PED-ANOVA in Optuna 5, normalised to sum 1);
- :func:`write_tune_plots`: both as PNG into a folder, with the reason for a picture left out
  (no complete trial; fewer than two complete trials or no variation for the importances).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

from nas_reid.viz.figures import save_figure

HISTORY = "optimization_history"
IMPORTANCES = "param_importances"


def plot_optimization_history(trials: Sequence[Any], *, metric: str, direction: str,
                              title: str | None = None) -> Figure:
    """``trials``: Optuna ``FrozenTrial``s; ``direction``: ``maximize`` or ``minimize``."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    numbers = [t.number for t in done]
    values = [float(t.value) for t in done]
    better = max if direction == "maximize" else min
    best, running = [], None
    for v in values:
        running = v if running is None else better(running, v)
        best.append(running)
    ax.plot(numbers, values, "o", color="#1f77b4", label=f"{metric} of a complete trial ({len(done)})")
    ax.step(numbers, best, where="post", color="#d62728", lw=1.8, label="best so far")
    if pruned or failed:
        ax.plot([], [], " ", label=f"not shown: {pruned} pruned, {failed} failed")
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"validation {metric}")
    every = [t.number for t in trials]
    if every:
        ax.set_xlim(min(every) - 0.5, max(every) + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "optimization history", fontsize=11)
    return fig


def plot_param_importances(importances: dict[str, float], *, metric: str,
                           title: str | None = None) -> Figure:
    """Horizontal bars, the most important parameter on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(6.4, 0.45 * len(items) + 1.4), layout="constrained")
    ax = fig.subplots()
    names = [k for k, _ in items]
    values = [float(v) for _, v in items]
    bars = ax.barh(names, values, color="#1f77b4")
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}", va="center",
                fontsize=8)
    ax.set_xlim(0, max(values + [0.0]) * 1.15 or 1.0)
    ax.set_xlabel(f"importance for validation {metric} (sums to 1)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "parameter importances", fontsize=11)
    return fig


def param_importances(study: Any) -> tuple[dict[str, float] | None, str | None]:
    """``(importances, None)``, or ``(None, why not)``."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if len(done) < 2:
        return None, f"{len(done)} complete trial(s); importances need at least 2"
    values = [float(t.value) for t in done]
    if max(values) - min(values) <= 0:
        return None, "every complete trial has the same value; nothing to attribute"
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return None, f"optuna could not compute them: {exc}"
    if not importances or not all(math.isfinite(v) for v in importances.values()):
        return None, "optuna gave no finite importances (too few distinct trials)"
    return importances, None


def write_tune_plots(study: Any, out: str | os.PathLike, *, metric: str) -> tuple[list[Path], dict[str, str]]:
    """``optimization_history.png`` and ``param_importances.png`` in ``out``; returns
    ``(written, {name: why it was left out})``. A picture left out is also removed from
    ``out`` (it would show an older state of the study)."""
    out = Path(out)
    written: list[Path] = []
    skipped: dict[str, str] = {}
    trials = study.get_trials(deepcopy=False)
    direction = study.direction.name.lower()
    name = study.study_name
    if any(t.state.name == "COMPLETE" for t in trials):
        fig = plot_optimization_history(trials, metric=metric, direction=direction,
                                        title=f"{name}: optimization history")
        written += save_figure(fig, out / f"{HISTORY}.png")
    else:
        skipped[HISTORY] = "no complete trial yet"
    importances, why = param_importances(study)
    if importances is not None:
        fig = plot_param_importances(importances, metric=metric,
                                     title=f"{name}: parameter importances")
        written += save_figure(fig, out / f"{IMPORTANCES}.png")
    else:
        skipped[IMPORTANCES] = why
    for stem in skipped:
        (out / f"{stem}.png").unlink(missing_ok=True)
    return written, skipped
