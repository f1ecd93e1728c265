"""Ranked-list picture: for a few queries, the query image and its top-k gallery images.

One row per query: the query (blue border, caption ``query`` and ``pid/c<camera>``), a gap,
then its top-k gallery images left to right, each with a green border when it has the query's
pid (a true match) and a red one otherwise, captioned with its rank and distance
(``#3 d=0.412``) and its ``pid/c<camera>`` (cameras 1-based, as in Market file names). The
gallery items that the evaluation protocol ignores (same pid **and** same camera as the query)
are not in the lists and so never shown: :func:`nas_reid.evaluation.evaluate.ranked_lists`
removes them, exactly as the metrics do. A legend at the bottom says so.

The picture is drawn with Pillow (like the contact sheet) on a fixed grid, so its size is
predictable (:func:`ranked_list_size`, :func:`cell_box`); it is written as a PNG atomically.
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from nas_reid.evaluation.evaluate import RankedList

__all__ = ["plot_ranked_lists", "ranked_list_size", "cell_box", "QUERY_COLOR", "MATCH_COLOR",
           "WRONG_COLOR"]

QUERY_COLOR = (30, 90, 230)
MATCH_COLOR = (0, 170, 40)
WRONG_COLOR = (225, 20, 20)
BACKGROUND = (255, 255, 255)
EMPTY_CELL = (235, 235, 235)
TEXT = (0, 0, 0)

PAD = 4  # around the picture and between cells
BORDER = 3  # coloured frame around each image
GAP = 16  # between the query column and the ranked list
FONT_SIZE = 11
LINE = 13  # caption line height
CAPTION = 2 * LINE + 2  # two caption lines under each cell
TITLE_HEIGHT = 22
LEGEND_HEIGHT = 20
MIN_COLUMN = 66  # columns stay wide enough for "#10 d=0.123" (61 px)


@lru_cache(maxsize=None)
def _font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _legend() -> list[tuple[tuple[int, int, int] | None, str]]:
    return [(QUERY_COLOR, "query"), (MATCH_COLOR, "same pid (true match)"),
            (WRONG_COLOR, "other pid"),
            (None, "gallery images with the query's pid and camera are ignored, not shown")]


def _text_width(text: str, font) -> int:
    return int(round(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)))


def _legend_width() -> int:
    font = _font()
    width = PAD
    for color, text in _legend():
        width += (14 if color is not None else 0) + _text_width(text, font) + 14
    return width


def _column_width(thumb_size: tuple[int, int]) -> int:
    return max(MIN_COLUMN, thumb_size[1] + 2 * BORDER)


def ranked_list_size(num_queries: int, topk: int, thumb_size: tuple[int, int] = (128, 64), *,
                     title: bool = False) -> tuple[int, int]:
    """(width, height) in pixels of a picture of ``num_queries`` rows of top-``topk`` lists."""
    col = _column_width(thumb_size)
    cell_h = thumb_size[0] + 2 * BORDER
    width = max(PAD + col + GAP + topk * (col + PAD), _legend_width())
    height = ((TITLE_HEIGHT if title else 0) + PAD + num_queries * (cell_h + CAPTION + PAD)
              + LEGEND_HEIGHT)
    return width, height


def cell_box(row: int, column: int, thumb_size: tuple[int, int] = (128, 64), *,
             title: bool = False) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive, of the bordered image of ``row`` (a query) and ``column``
    (0: the query, k >= 1: rank k)."""
    col = _column_width(thumb_size)
    w, h = thumb_size[1] + 2 * BORDER, thumb_size[0] + 2 * BORDER
    x = PAD if column == 0 else PAD + col + GAP + (column - 1) * (col + PAD)
    x += (col - w) // 2
    y = (TITLE_HEIGHT if title else 0) + PAD + row * (h + CAPTION + PAD)
    return x, y, x + w - 1, y + h - 1


def _thumbnail(path: str, size: tuple[int, int]) -> Image.Image:
    try:
        with Image.open(path) as img:
            return ImageOps.contain(img.convert("RGB"), (size[1], size[0]), Image.BILINEAR)
    except OSError as exc:
        raise UserError(f"ranked list: cannot read image {path}: {exc}") from None


def _format_distance(d: float) -> str:
    """At most 6 characters for the usual ranges: 0.123, 12.34, 1234, 1.2e+05."""
    a = abs(d)
    if a < 10:
        return f"{d:.3f}"
    if a < 100:
        return f"{d:.2f}"
    if a < 1e5:
        return f"{d:.0f}"
    return f"{d:.1e}"


def _draw_cell(sheet, draw, box, path, color, lines, thumb_size, font):
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=EMPTY_CELL)
    thumb = _thumbnail(path, thumb_size)
    inner_w, inner_h = thumb_size[1], thumb_size[0]
    sheet.paste(thumb, (x0 + BORDER + (inner_w - thumb.width) // 2,
                        y0 + BORDER + (inner_h - thumb.height) // 2))
    draw.rectangle(box, outline=color, width=BORDER)
    cx = (x0 + x1 + 1) / 2
    for i, text in enumerate(lines):
        draw.text((cx, y1 + 2 + i * LINE), text, fill=TEXT, font=font, anchor="ma")


def plot_ranked_lists(lists: Sequence["RankedList"], out_path: str | os.PathLike, *,
                      topk: int | None = None, thumb_size: tuple[int, int] = (128, 64),
                      title: str | None = None) -> Path:
    """Write the ranked-list PNG of ``lists`` (from
    :func:`~nas_reid.evaluation.evaluate.ranked_lists`) to ``out_path``; returns the path.

    One row per list, in the given order. ``topk``: columns shown (default: the longest
    list); shorter lists leave grey cells. ``thumb_size`` is (height, width) of each image
    area; images keep their aspect ratio inside it. Same-pid-same-camera gallery items are
    never in ``lists`` (the protocol ignores them), so they are never shown. The size is
    :func:`ranked_list_size` ``(len(lists), topk, thumb_size, title=bool(title))``.
    """
    if not lists:
        raise UserError("ranked list: no queries to show")
    h, w = (int(v) for v in thumb_size)
    if h < 16 or w < 8:
        raise UserError(f"ranked list: thumb_size {thumb_size!r} must be at least (16, 8)")
    thumb_size = (h, w)
    if topk is None:
        topk = max(1, max(len(rl.gallery_indices) for rl in lists))
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise UserError(f"ranked list: topk={topk!r} must be a positive integer")
    font = _font()
    has_title = bool(title)
    width, height = ranked_list_size(len(lists), topk, thumb_size, title=has_title)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if has_title:
        draw.text((PAD + 2, 5), title, fill=TEXT, font=_font(FONT_SIZE + 2))

    col = _column_width(thumb_size)
    sep_x = PAD + col + GAP // 2
    for row, rl in enumerate(lists):
        path, pid, cam = rl.query
        box = cell_box(row, 0, thumb_size, title=has_title)
        _draw_cell(sheet, draw, box, str(path), QUERY_COLOR,
                   ["query", f"{int(pid)}/c{int(cam) + 1}"], thumb_size, font)
        draw.line([(sep_x, box[1]), (sep_x, box[3])], fill=(170, 170, 170), width=1)
        for k in range(topk):
            box = cell_box(row, k + 1, thumb_size, title=has_title)
            if k >= len(rl.gallery_indices):
                draw.rectangle(box, fill=EMPTY_CELL)
                continue
            gpath, gpid, gcam = rl.gallery[k]
            color = MATCH_COLOR if bool(rl.matches[k]) else WRONG_COLOR
            _draw_cell(sheet, draw, box, str(gpath), color,
                       [f"#{k + 1} d={_format_distance(float(rl.distances[k]))}",
                        f"{int(gpid)}/c{int(gcam) + 1}"], thumb_size, font)

    # legend
    y = height - LEGEND_HEIGHT + 4
    x = PAD
    for color, text in _legend():
        if color is not None:
            draw.rectangle([x, y + 1, x + 9, y + 10], outline=color, width=BORDER)
            x += 14
        draw.text((x, y), text, fill=TEXT, font=font)
        x += _text_width(text, font) + 14

    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=True)
    return atomic_write_bytes(out_path, buffer.getvalue())
