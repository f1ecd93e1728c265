"""MSMT17 (Wei et al., CVPR 2018), V1 or V2, read through its list files.

Layout: ``MSMT17_V1/{train/, test/, list_train.txt, list_val.txt, list_query.txt,
list_gallery.txt}``; V2 names the image folders ``mask_train_v2/`` and ``mask_test_v2/``.
A list line is ``<pid_folder>/<file>.jpg <pid>``; the pid is the second column, used as is
(already 0-based), and the camera is the third ``_`` field of the file name (1..15), made
0-based. Train is ``list_train.txt`` only; ``combine_val=True`` appends ``list_val.txt``.

Train and test pids are numbered separately (both start at 0), so ``extra["test_ids_separate"]``
is set: a train pid and a test pid with the same number are different people.
"""

from __future__ import annotations

import os
from pathlib import Path

from nas_reid.data.base import Item, ReIDDataset
from nas_reid.data.market_style import find_dataset_dir, relabel
from nas_reid.errors import DatasetError

NAME = "msmt17"
NUM_CAMERAS = 15
VERSIONS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
"""Version -> (train image folder, test image folder). V1 is checked first."""


def _candidates() -> list[str]:
    names = []
    for version in VERSIONS:
        names += [f"MSMT17_{version}", f"msmt17/MSMT17_{version}"]
    return [".", *names]


def _version(folder: Path) -> str | None:
    for version, (train_dir, _) in VERSIONS.items():
        if (folder / train_dir).is_dir():
            return version
    return None


def read_list(list_file: Path, image_dir: Path) -> list[Item]:
    """Parse one MSMT17 list file into ``(abs_path, pid, camid)`` items, in file order.

    Raises :class:`DatasetError` naming the list file (and line number) when it is missing,
    empty, has a line that does not parse, or points to an image that does not exist.
    """
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: list file not found")
    items: list[Item] = []
    with open(list_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{list_file}, line {number}"
            if len(fields) != 2:
                raise DatasetError(f"{where}: expected '<folder>/<file>.jpg <pid>', got {line.strip()!r}")
            rel, pid_text = fields
            try:
                pid = int(pid_text)
            except ValueError:
                raise DatasetError(f"{where}: pid {pid_text!r} is not an integer") from None
            if pid < 0:
                raise DatasetError(f"{where}: pid {pid} is negative")
            parts = Path(rel).name.split("_")
            try:
                cam = int(parts[2])
            except (IndexError, ValueError):
                raise DatasetError(
                    f"{where}: cannot read the camera (third '_' field) from {rel!r}"
                ) from None
            if not 1 <= cam <= NUM_CAMERAS:
                raise DatasetError(f"{where}: camera {cam} is out of range 1..{NUM_CAMERAS}")
            path = (image_dir / rel).absolute()
            if not path.is_file():
                raise DatasetError(f"{where}: image {path} not found")
            items.append((str(path), pid, cam - 1))
    if not items:
        raise DatasetError(f"{list_file}: list file is empty")
    return items


def load_msmt17(root: str | os.PathLike, combine_val: bool = False) -> ReIDDataset:
    """Load MSMT17 (V1 if present, else V2) from ``root``.

    ``combine_val`` appends ``list_val.txt`` to train (not the usual protocol). Train pids are
    mapped to ``0..N-1`` in sorted order, which leaves the official 0-based pids unchanged.
    """
    if not isinstance(combine_val, bool):
        raise DatasetError(f"msmt17 option combine_val must be true or false, got {combine_val!r}")
    folder = find_dataset_dir(
        root,
        _candidates(),
        lambda path: _version(path) is not None,
        dataset="MSMT17",
        expected="train/ (V1) or mask_train_v2/ (V2) next to the list_*.txt files",
    )
    version = _version(folder)
    train_dir, test_dir = (folder / name for name in VERSIONS[version])
    if not test_dir.is_dir():
        raise DatasetError(f"{test_dir}: folder not found")
    train = read_list(folder / "list_train.txt", train_dir)
    if combine_val:
        train = train + read_list(folder / "list_val.txt", train_dir)
    train, train_pids = relabel(train)
    return ReIDDataset(
        name=NAME,
        root=folder,
        train=sorted(train),
        query=sorted(read_list(folder / "list_query.txt", test_dir)),
        gallery=sorted(read_list(folder / "list_gallery.txt", test_dir)),
        extra={
            "layout": "msmt17",
            "version": version,
            "combine_val": combine_val,
            "train_relabelled": True,
            "train_pids": train_pids,
            "test_ids_separate": True,
        },
    )
