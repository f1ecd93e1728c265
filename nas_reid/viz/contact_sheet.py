"""Contact sheets: a grid of re-ID crops, one row per identity, to eyeball a dataset.

The layout is fixed so callers and tests can predict the size: every cell is ``cell_height``
by ``cell_height // 2`` pixels (the usual 2:1 re-ID crop), with a 12-pixel label strip under
it and 2 pixels of padding around cells; a title adds an 18-pixel band at the top.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_bytes

PAD = 2
LABEL_HEIGHT = 12
TITLE_HEIGHT = 18
BACKGROUND = (255, 255, 255)
EMPTY_CELL = (224, 224, 224)


def sheet_size(rows: int, per_id: int, cell_height: int, *, title: bool) -> tuple[int, int]:
    """(width, height) in pixels of a sheet with ``rows`` identities of ``per_id`` cells."""
    cell_w = max(1, cell_height // 2)
    width = PAD + per_id * (cell_w + PAD)
    height = (TITLE_HEIGHT if title else 0) + PAD + rows * (cell_height + LABEL_HEIGHT + PAD)
    return width, height


def _spread(values: Sequence, n: int) -> list:
    """``n`` values evenly spread over ``values`` (all of them if there are fewer)."""
    if len(values) <= n:
        return list(values)
    if n == 1:
        return [values[0]]
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


def _pick_images(items: Sequence[tuple[str, int, int]], per_id: int) -> list[tuple[str, int, int]]:
    """Up to ``per_id`` images of one identity, round-robin over its cameras (sorted)."""
    by_cam: dict[int, list] = defaultdict(list)
    for item in sorted(items, key=lambda it: (it[2], it[0])):
        by_cam[item[2]].append(item)
    queues = [by_cam[c] for c in sorted(by_cam)]
    out: list = []
    depth = 0
    while len(out) < per_id and any(depth < len(q) for q in queues):
        out += [q[depth] for q in queues if depth < len(q)][: per_id - len(out)]
        depth += 1
    return out


def make_contact_sheet(
    items: Sequence[tuple[str, int, int]],
    out_png: str | os.PathLike,
    *,
    ids: int = 8,
    per_id: int = 8,
    cell_height: int = 128,
    title: str | None = None,
) -> Path:
    """Write a PNG grid of ``items`` (``(path, pid, camid)``, camid 0-based) to ``out_png``.

    The choice is deterministic: ``ids`` identities spread evenly over the sorted pids (pids
    <= 0, distractors and junk, only when there are no others), and for each up to ``per_id``
    images taken round-robin over its cameras in (camera, path) order. Each cell is labelled
    ``"<pid> c<camera>"`` with the camera 1-based, as in Market file names. Images keep their
    aspect ratio inside the cell; missing cells stay grey. The file is written atomically.
    Size: :func:`sheet_size`. Returns the PNG path.
    """
    for name, value in (("ids", ids), ("per_id", per_id)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"contact sheet: {name}={value!r} must be a positive integer")
    if not isinstance(cell_height, int) or cell_height < 16:
        raise UserError(f"contact sheet: cell_height={cell_height!r} must be an integer >= 16")
    if not items:
        raise UserError("contact sheet: no images to show (items is empty)")

    by_pid: dict[int, list] = defaultdict(list)
    for path, pid, camid in items:
        by_pid[int(pid)].append((str(path), int(pid), int(camid)))
    pids = sorted(p for p in by_pid if p > 0) or sorted(by_pid)
    chosen = _spread(pids, ids)

    cell_w = max(1, cell_height // 2)
    top = TITLE_HEIGHT if title else 0
    sheet = Image.new("RGB", sheet_size(len(chosen), per_id, cell_height, title=bool(title)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((PAD + 2, 3), title, fill=(0, 0, 0), font=font)
    for row, pid in enumerate(chosen):
        y = top + PAD + row * (cell_height + LABEL_HEIGHT + PAD)
        picks = _pick_images(by_pid[pid], per_id)
        for col in range(per_id):
            x = PAD + col * (cell_w + PAD)
            draw.rectangle([x, y, x + cell_w - 1, y + cell_height - 1], fill=EMPTY_CELL)
            if col >= len(picks):
                continue
            path, _, camid = picks[col]
            try:
                with Image.open(path) as img:
                    thumb = ImageOps.contain(img.convert("RGB"), (cell_w, cell_height), Image.BILINEAR)
            except OSError as exc:
                raise UserError(f"contact sheet: cannot read image {path}: {exc}") from None
            sheet.paste(thumb, (x + (cell_w - thumb.width) // 2, y + (cell_height - thumb.height) // 2))
            draw.text((x + 1, y + cell_height), f"{pid} c{camid + 1}", fill=(0, 0, 0), font=font)

    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=True)
    return atomic_write_bytes(out_png, buffer.getvalue())
