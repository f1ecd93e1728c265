"""Collapse guard: warn when the search drifts towards parameter-free cells.

DARTS-style searches are known to collapse to skip connections: DARTS "is easy to converge to
a network with many skip connection layers", as the maintainer of D-X-Y/AutoDL-Projects answered
in its issue #58, citing Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible
Neural Architecture Search", ICLR 2020. Every epoch the loop derives the genotype the
architecture parameters point to *without* the skip cap (the cap would hide the drift) and
checks it here: when more than ``threshold`` (default one half) of the live edges over all
cells are ``identity``, it is a collapse and :func:`check_collapse` returns a message; the
loop issues a :class:`CollapseWarning`, prints it and records ``collapse: true`` in the
epoch's metrics. The optional cap (``schedule.skip_cap``) is applied to the genotype the search
exports (:func:`nas_reid.space.genotype.derive_genotype`).
"""

from __future__ import annotations

from dataclasses import dataclass

from nas_reid.space.genotype import Genotype

PARAMETER_FREE = ("identity",)


class CollapseWarning(UserWarning):
    """The derived architecture is dominated by parameter-free (identity) edges."""


@dataclass(frozen=True)
class CollapseReport:
    identity_edges: int
    live_edges: int
    identity_cells: list[str]
    """Cells whose every live edge is identity: the cell is a no-op."""

    @property
    def fraction(self) -> float:
        return self.identity_edges / self.live_edges if self.live_edges else 0.0

    def as_dict(self) -> dict:
        return {"identity_edges": self.identity_edges, "live_edges": self.live_edges,
                "identity_fraction": round(self.fraction, 6), "identity_cells": self.identity_cells}


def collapse_report(genotype: Genotype) -> CollapseReport:
    """Count the identity edges among the live edges of every cell."""
    identity = live = 0
    cells = []
    for cell in genotype.cells:
        edges = cell.live_edges()
        n = sum(e.op in PARAMETER_FREE for e in edges)
        identity += n
        live += len(edges)
        if edges and n == len(edges):
            cells.append(cell.position)
    return CollapseReport(identity, live, cells)


def check_collapse(genotype: Genotype, threshold: float = 0.5) -> str | None:
    """A warning message when more than ``threshold`` of the live edges are identity, else None."""
    report = collapse_report(genotype)
    if report.live_edges and report.fraction > threshold:
        return (f"architecture collapse: {report.identity_edges} of {report.live_edges} edges pick "
                f"identity (no-op cells: {', '.join(report.identity_cells) or 'none'}); consider "
                "more warm-up epochs, a lower architecture learning rate, or schedule.skip_cap")
    return None
