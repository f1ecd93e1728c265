"""Builders of tiny fake datasets in every supported on-disk layout, for the parser tests.

Each builder writes under a parent folder and returns the dataset folder. Images are 8x4
pixels; the expected contents are given by the module constants next to each builder.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


@lru_cache(maxsize=None)
def _encoded(ext: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 60, 30)).save(buf, format="PNG" if ext == "png" else "JPEG")
    return buf.getvalue()


def write_image(path: Path) -> Path:
    """Write a tiny image whose format follows the extension of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encoded(path.suffix.lower().lstrip(".")))
    return path


def write_split(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(folder / name)
    return folder


# ----------------------------------------------------------------------------- Market-1501

MARKET_TRAIN = [(7, 1), (7, 2), (2, 3), (2, 6), (2, 6), (5, 4)]
MARKET_QUERY = [(3, 1), (4, 2)]
MARKET_GALLERY = [(3, 2), (3, 5), (4, 1), (0, 3), (0, 6)]
MARKET_JUNK = 2  # extra gallery files with pid -1


def market_name(pid: int, cam: int, frame: int, ext: str = "jpg") -> str:
    return f"{pid:04d}_c{cam}s1_{frame:06d}_00.{ext}" if pid >= 0 else f"{pid}_c{cam}s1_{frame:06d}_00.{ext}"


def build_market_layout(folder: Path, train, query, gallery, name=market_name, junk: int = 0) -> Path:
    """Write ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` from (pid, cam) lists."""
    splits = {"bounding_box_train": train, "query": query, "bounding_box_test": gallery}
    for sub, items in splits.items():
        names = [name(pid, cam, i) for i, (pid, cam) in enumerate(items)]
        if sub == "bounding_box_test":
            names += [name(-1, 1, 900 + i) for i in range(junk)]
        write_split(folder / sub, names)
    return folder


def build_market(parent: Path, sub: str = "Market-1501-v15.09.15") -> Path:
    return build_market_layout(
        parent / sub, MARKET_TRAIN, MARKET_QUERY, MARKET_GALLERY, junk=MARKET_JUNK
    )


# ----------------------------------------------------------------------------- Duke family

DUKE_TRAIN = [(1, 1), (1, 8), (12, 2), (12, 3), (30, 5)]
DUKE_QUERY = [(40, 1), (41, 7)]
DUKE_GALLERY = [(40, 8), (41, 6), (41, 2), (5000, 4)]  # 5000: a gallery-only id


def duke_name(pid: int, cam: int, frame: int) -> str:
    return f"{pid:04d}_c{cam}_f{frame:07d}.jpg"


def build_duke(parent: Path, sub: str = "DukeMTMC-reID") -> Path:
    return build_market_layout(parent / sub, DUKE_TRAIN, DUKE_QUERY, DUKE_GALLERY, name=duke_name)


def build_occluded_duke(parent: Path, sub: str = "Occluded_Duke") -> Path:
    # same layout; one gallery image fewer to tell it apart from Duke
    return build_market_layout(parent / sub, DUKE_TRAIN, DUKE_QUERY, DUKE_GALLERY[:-1], name=duke_name)


# ----------------------------------------------------------------------------- MSMT17

MSMT_TRAIN = [(0, 1), (0, 15), (1, 3), (2, 3), (2, 4)]  # (pid, camera 1..15)
MSMT_VAL = [(1, 9), (2, 10)]
MSMT_QUERY = [(0, 2), (1, 5)]
MSMT_GALLERY = [(0, 6), (1, 2), (1, 7), (2, 11)]


def msmt_rel(pid: int, cam: int, index: int) -> str:
    return f"{pid:04d}/{pid:04d}_{index:03d}_{cam:02d}_0303morning_{index:04d}_0.jpg"


def build_msmt17(parent: Path, version: str = "V1", sub: str | None = None) -> Path:
    folder = parent / (sub or f"MSMT17_{version}")
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    lists = {
        "list_train.txt": (train_dir, MSMT_TRAIN, 0),
        "list_val.txt": (train_dir, MSMT_VAL, 100),
        "list_query.txt": (test_dir, MSMT_QUERY, 0),
        "list_gallery.txt": (test_dir, MSMT_GALLERY, 100),
    }
    for list_name, (image_dir, items, offset) in lists.items():
        lines = []
        for i, (pid, cam) in enumerate(items):
            rel = msmt_rel(pid, cam, offset + i)
            write_image(folder / image_dir / rel)
            lines.append(f"{rel} {pid}\n")
        (folder / list_name).write_text("".join(lines))
    return folder


# ----------------------------------------------------------------------------- CUHK03-NP images

CUHK_NP = {
    "labeled": {
        "train": [(1, 1), (1, 2), (9, 1), (9, 2), (9, 2)],
        "query": [(20, 1), (20, 2)],
        "gallery": [(20, 1), (20, 2), (21, 2)],
    },
    "detected": {
        "train": [(1, 1), (1, 2), (9, 1)],
        "query": [(20, 1), (20, 2)],
        "gallery": [(20, 1), (20, 2)],
    },
}


def cuhk_np_name(pid: int, cam: int, index: int) -> str:
    return f"{pid:04d}_c{cam}_{index}.png"


def build_cuhk03_np(parent: Path, sub: str = "cuhk03-np", variants=("labeled", "detected")) -> Path:
    folder = parent / sub
    for variant in variants:
        spec = CUHK_NP[variant]
        build_market_layout(
            folder / variant, spec["train"], spec["query"], spec["gallery"], name=cuhk_np_name
        )
    return folder


# ----------------------------------------------------------------------------- CUHK03 original

# Per variant: pair -> list of persons, each a list of the image slots (0..9) that hold an image.
# Slots 0-4 are view 1, 5-9 view 2. "detected" lacks one image of pair 1, person 1.
CUHK_MAT_PERSONS = {
    "labeled": {1: [[0, 1, 5, 6], [0, 1, 5, 6], [2, 7, 8]], 2: [[0, 1, 5], [3, 4, 9]]},
    "detected": {1: [[0, 5, 6], [0, 1, 5, 6], [2, 7, 8]], 2: [[0, 1, 5], [3, 4, 9]]},
}
CUHK_MAT_LABELS = {(1, 1): 1, (1, 2): 2, (1, 3): 3, (2, 1): 4, (2, 2): 5}  # (pair, person) -> label
CUHK_MAT_TRAIN_LABELS = {1, 4}  # test: 2, 3, 5


def cuhk_mat_image(pair: int, person: int, slot: int) -> np.ndarray:
    """HxWx3 uint8 image with a recognisable value in pixel (0, 0)."""
    image = np.zeros((8, 4, 3), dtype=np.uint8)
    image[0, 0] = (pair, person, slot)
    return image


def cuhk_mat_names(variant: str) -> list[tuple[str, int, int]]:
    """Expected extracted files: (name, label, view)."""
    out = []
    for pair, persons in CUHK_MAT_PERSONS[variant].items():
        for person, slots in enumerate(persons, start=1):
            for slot in slots:
                view = 1 if slot < 5 else 2
                out.append((f"{pair}_{person:03d}_{view}_{slot + 1:02d}.png", CUHK_MAT_LABELS[pair, person], view))
    return out


def write_cuhk03_release(path: Path) -> Path:
    """A MATLAB-v7.3-like HDF5 file: per variant a (1, pairs) array of refs to (10, persons)
    arrays of refs to images stored transposed; empty cells are MATLAB's (2,) uint64 dims."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        refs_group = f.create_group("#refs#")
        counter = iter(range(10**6))

        def store(data) -> h5py.Reference:
            return refs_group.create_dataset(f"r{next(counter)}", data=data).ref

        for variant, pairs in CUHK_MAT_PERSONS.items():
            pair_refs = []
            for pair, persons in pairs.items():
                grid = np.empty((10, len(persons)), dtype=h5py.ref_dtype)
                for person, slots in enumerate(persons, start=1):
                    for slot in range(10):
                        if slot in slots:
                            grid[slot, person - 1] = store(cuhk_mat_image(pair, person, slot).T)
                        else:
                            grid[slot, person - 1] = store(np.zeros(2, dtype=np.uint64))
                pair_refs.append(store(grid))
            f.create_dataset(variant, data=np.array([pair_refs], dtype=h5py.ref_dtype))
    return path


def write_cuhk03_protocol(path: Path, variant: str) -> Path:
    """A new-protocol .mat: train = labels 1 and 4; for each test label the first image of each
    view is a query, the rest gallery."""
    from scipy.io import savemat

    files = cuhk_mat_names(variant)
    train_idx, query_idx, gallery_idx, seen = [], [], [], set()
    for i, (_, label, view) in enumerate(files, start=1):
        if label in CUHK_MAT_TRAIN_LABELS:
            train_idx.append(i)
        elif (label, view) not in seen:
            seen.add((label, view))
            query_idx.append(i)
        else:
            gallery_idx.append(i)
    column = lambda values: np.array(values, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    filelist = np.empty((len(files), 1), dtype=object)
    for i, (name, _, _) in enumerate(files):
        filelist[i, 0] = name
    savemat(
        str(path),
        {
            "filelist": filelist,
            "labels": column([label for _, label, _ in files]),
            "camId": column([view for _, _, view in files]),
            "train_idx": column(train_idx),
            "query_idx": column(query_idx),
            "gallery_idx": column(gallery_idx),
        },
    )
    return path


def build_cuhk03_mat(parent: Path, sub: str = "cuhk03", protocols=("labeled", "detected")) -> Path:
    folder = parent / sub
    write_cuhk03_release(folder / "cuhk03_release" / "cuhk-03.mat")
    for variant in protocols:
        write_cuhk03_protocol(folder / f"cuhk03_new_protocol_config_{variant}.mat", variant)
    return folder
