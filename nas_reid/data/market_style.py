"""The Market-1501 folder layout, shared by every dataset stored that way.

A Market-style dataset is a folder holding ``bounding_box_train/``, ``query/`` and
``bounding_box_test/`` (the gallery). Each image name starts with ``<pid>_c<camera>``
(e.g. ``0002_c1s1_000451_03.jpg``); only those two numbers are read. pid -1 marks junk and is
dropped; pid 0 marks a distractor and is kept in query and gallery (an error in train).
Market-1501, DukeMTMC-reID, Occluded-Duke, the CUHK03-NP image form and the synthetic
benchmark all use this parser, with their own pid and camera ranges.

This module also holds :func:`find_dataset_dir`, the root resolution every loader uses.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

from nas_reid.data.base import Item, ReIDDataset
from nas_reid.errors import DatasetError

NAME_PATTERN = re.compile(r"([-\d]+)_c(\d+)")
"""Searched in the file name: group 1 is the pid, group 2 the 1-based camera."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})

JUNK_PID = -1
DISTRACTOR_PID = 0

MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def is_image_file(name: str) -> bool:
    """True for a visible file name with an image extension (case-insensitive).

    Names starting with ``.`` (macOS ``._*`` resource forks, editor temp files) are skipped:
    they would otherwise parse as duplicates of the real images.
    """
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def parse_market_name(path: Path, *, max_pid: int, num_cameras: int) -> tuple[int, int]:
    """Return ``(pid, camera)`` of one image as written in its name (camera still 1-based).

    Raises :class:`DatasetError` naming the file when the name does not parse or a number is
    out of range (pid in ``-1..max_pid``, camera in ``1..num_cameras``).
    """
    match = NAME_PATTERN.search(path.name)
    if match is None:
        raise DatasetError(
            f"{path}: file name does not start with '<pid>_c<camera>' (e.g. 0002_c1s1_000451_03.jpg)"
        )
    try:
        pid, cam = int(match.group(1)), int(match.group(2))
    except ValueError:
        raise DatasetError(f"{path}: pid {match.group(1)!r} in the file name is not an integer") from None
    if not JUNK_PID <= pid <= max_pid:
        raise DatasetError(f"{path}: pid {pid} is out of range -1..{max_pid}")
    if not 1 <= cam <= num_cameras:
        raise DatasetError(f"{path}: camera c{cam} is out of range c1..c{num_cameras}")
    return pid, cam


def read_market_folder(
    folder: str | os.PathLike,
    *,
    max_pid: int,
    num_cameras: int,
    allow_distractors: bool = True,
) -> list[Item]:
    """Parse one Market-style image folder into sorted ``(abs_path, pid, camid)`` items.

    Junk (pid -1) is dropped and camid is made 0-based. Distractors (pid 0) are kept when
    ``allow_distractors``, otherwise they are an error (training folders). Sub-folders and
    non-image files are ignored. A missing folder, or one left with no usable image, raises
    :class:`DatasetError` naming the folder.
    """
    folder = Path(folder).absolute()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    items: list[Item] = []
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if is_image_file(e.name) and e.is_file())
    for name in names:
        path = folder / name
        pid, cam = parse_market_name(path, max_pid=max_pid, num_cameras=num_cameras)
        if pid == JUNK_PID:
            continue
        if pid == DISTRACTOR_PID and not allow_distractors:
            raise DatasetError(f"{path}: distractor pid 0 is not allowed in a training folder")
        items.append((str(path), pid, cam - 1))
    if not items:
        raise DatasetError(f"{folder}: no usable image (.jpg/.jpeg/.png, junk pid -1 excluded)")
    return items


def relabel(items: Sequence[Item]) -> tuple[list[Item], list[int]]:
    """Map pids to ``0..N-1`` in sorted pid order.

    Returns the relabelled items and the sorted original pids (index = new label).
    """
    pids = sorted({pid for _, pid, _ in items})
    new = {pid: label for label, pid in enumerate(pids)}
    return [(path, new[pid], cam) for path, pid, cam in items], pids


def load_market_style(
    name: str,
    root: str | os.PathLike,
    *,
    max_pid: int,
    num_cameras: int,
    relabel_train: bool = True,
    folders: dict[str, str] | None = None,
    extra: dict | None = None,
) -> ReIDDataset:
    """Read a Market-style dataset folder ``root`` (already resolved, see :func:`find_dataset_dir`).

    ``folders`` maps split -> sub-folder name (default :data:`MARKET_FOLDERS`). With
    ``relabel_train`` the train pids become ``0..N-1`` and the original ones are kept in
    ``extra["train_pids"]`` (index = new label). Query and gallery pids are unchanged.
    """
    root = Path(root).absolute()
    folders = {**MARKET_FOLDERS, **(folders or {})}
    read = lambda split, distractors: read_market_folder(  # noqa: E731
        root / folders[split], max_pid=max_pid, num_cameras=num_cameras, allow_distractors=distractors
    )
    train = read("train", False)
    query = read("query", True)
    gallery = read("gallery", True)
    info: dict = {"layout": "market", "distractor_pid": DISTRACTOR_PID, "train_relabelled": relabel_train}
    if relabel_train:
        train, info["train_pids"] = relabel(train)
    info.update(extra or {})
    return ReIDDataset(name=name, root=root, train=train, query=query, gallery=gallery, extra=info)


def find_dataset_dir(
    root: str | os.PathLike,
    candidates: Iterable[str],
    looks_like: Callable[[Path], bool],
    *,
    dataset: str,
    expected: str,
) -> Path:
    """Resolve the dataset folder from what the user passed.

    ``candidates`` are paths relative to ``root`` (``"."`` is ``root`` itself), tried in order;
    the first folder for which ``looks_like`` is true wins. Otherwise a :class:`DatasetError`
    lists every path tried and what was ``expected`` in it.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"{root}: {dataset} root folder not found")
    tried: list[str] = []
    for rel in candidates:
        path = root if rel == "." else root / rel
        if path.is_dir() and looks_like(path):
            return path
        tried.append(str(path))
    raise DatasetError(
        f"no {dataset} dataset found under {root}: expected {expected} in one of: " + ", ".join(tried)
    )


def has_any(*names: str) -> Callable[[Path], bool]:
    """A ``looks_like`` test: the folder holds at least one of ``names``."""
    return lambda path: any((path / n).exists() for n in names)


def market_root(root: str | os.PathLike, candidates: Iterable[str], *, dataset: str) -> Path:
    """:func:`find_dataset_dir` for the Market layout (any of the three split folders present)."""
    return find_dataset_dir(
        root,
        candidates,
        has_any(*MARKET_FOLDERS.values()),
        dataset=dataset,
        expected="bounding_box_train/, query/, bounding_box_test/",
    )
