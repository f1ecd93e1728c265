"""What every matplotlib picture of :mod:`nas_reid.viz` shares: writing it, and a figure that
says why there is nothing to draw.

Figures are built without pyplot (``matplotlib.figure.Figure``), so nothing depends on the
active backend and nothing opens a window; a notebook shows a returned figure as it is
(``%matplotlib inline``).
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import Iterable

from matplotlib import rc_context
from matplotlib.figure import Figure

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_bytes

DPI = 120
FORMATS = ("png", "svg", "pdf")

__all__ = ["DPI", "FORMATS", "figure_bytes", "save_figure", "write_figure", "message_figure"]


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """``fig`` encoded as ``fmt`` (png, svg or pdf)."""
    buffer = io.BytesIO()
    # a fixed hash salt and no date: the same figure gives the same SVG / PDF bytes
    with rc_context({"svg.hashsalt": "nas-reid"}):
        fig.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight", facecolor="white",
                    metadata={"Date": None} if fmt in ("svg", "pdf") else None)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike,
                formats: Iterable[str] | None = None) -> list[Path]:
    """Write ``fig`` atomically; returns the files written.

    Without ``formats``, ``path`` is written in the format its suffix names (``.png`` when it
    has none). With ``formats`` (e.g. ``("png", "svg")``), one file per format: ``path`` with
    that suffix.
    """
    path = Path(path)
    if formats is None:
        fmt = path.suffix.lstrip(".").lower() or "png"
        formats, path = [fmt], path if path.suffix else path.with_suffix(".png")
        targets = [(fmt, path)]
    else:
        targets = [(f.lower(), path.with_suffix(f".{f.lower()}")) for f in formats]
    written = []
    for fmt, target in targets:
        if fmt not in FORMATS:
            raise UserError(f"picture format {fmt!r} is not supported; formats: "
                            f"{', '.join(FORMATS)}")
        written.append(atomic_write_bytes(target, figure_bytes(fig, fmt)))
    return written


def write_figure(fig: Figure, path: str | os.PathLike | None) -> None:
    """Write ``fig`` to exactly ``path`` (if given) in the format its suffix names (png, svg,
    pdf), else as a PNG; atomically."""
    if path is None:
        return
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    atomic_write_bytes(path, figure_bytes(fig, fmt if fmt in FORMATS else "png"))


def message_figure(message: str, *, title: str | None = None,
                   size: tuple[float, float] = (6.4, 1.8)) -> Figure:
    """A small figure that only says ``message`` (why a plot has nothing to show)."""
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(message, 70)), ha="center", va="center",
            fontsize=10, color="#404040", transform=ax.transAxes)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
