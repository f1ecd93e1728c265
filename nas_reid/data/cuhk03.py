"""CUHK03 (Li et al., CVPR 2014) under the new protocol (CUHK03-NP, Zhong et al., CVPR 2017).

Two on-disk forms are accepted, and the image form wins when both exist:

* image form: ``cuhk03-np/{labeled,detected}/{bounding_box_train,query,bounding_box_test}/*.png``,
  parsed as Market layout with cameras 1..2;
* original release: ``cuhk03_release/cuhk-03.mat`` (MATLAB v7.3, read with h5py) plus
  ``cuhk03_new_protocol_config_{labeled,detected}.mat`` next to ``cuhk03_release/``. The first
  load extracts the images to ``images_{variant}/`` (atomically) and later loads reuse it.

``variant`` picks the hand-labelled ("labeled", default) or DPM-detected ("detected") boxes.
camid is the view (0/1) inside the person's camera pair, not a global camera id. The classic
20-split protocol is not provided.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nas_reid.data.base import Item, ReIDDataset
from nas_reid.data.market_style import MARKET_FOLDERS, has_any, load_market_style, relabel
from nas_reid.errors import DatasetError
from nas_reid.fileio import atomic_directory

NAME = "cuhk03"
VARIANTS = ("labeled", "detected")
NUM_CAMERAS = 2
MAX_PID = 9999
"""Image form: the pid field has four digits; CUHK03 has 1,467 ids in all."""
NP_CANDIDATES = (".", "cuhk03-np", "cuhk03/cuhk03-np")
MAT_CANDIDATES = (".", "cuhk03")
RELEASE = Path("cuhk03_release") / "cuhk-03.mat"
PROTOCOL_KEYS = ("labels", "filelist", "train_idx", "query_idx", "gallery_idx")
IMAGES_PER_VIEW = 5


def protocol_name(variant: str) -> str:
    return f"cuhk03_new_protocol_config_{variant}.mat"


def load_cuhk03(root: str | os.PathLike, variant: str = "labeled") -> ReIDDataset:
    """Load CUHK03-NP (``variant`` "labeled" or "detected") from ``root``, either form."""
    if variant not in VARIANTS:
        raise DatasetError(f"cuhk03 option variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(f"{root}: CUHK03 root folder not found")
    tried = []
    for rel in NP_CANDIDATES:
        folder = root / rel / variant
        if folder.is_dir() and has_any(*MARKET_FOLDERS.values())(folder):
            extra = {"form": "np-images", "variant": variant}
            return load_market_style(
                NAME, folder, max_pid=MAX_PID, num_cameras=NUM_CAMERAS, extra=extra
            )
        tried.append(str(folder))
    for rel in MAT_CANDIDATES:
        folder = root / rel
        if (folder / RELEASE).is_file():
            return load_cuhk03_mat(folder, variant)
        tried.append(str(folder / RELEASE))
    raise DatasetError(
        f"no CUHK03 dataset found under {root}: expected {variant}/bounding_box_train/ etc. "
        f"(CUHK03-NP images) or {RELEASE} (original release) in one of: " + ", ".join(tried)
    )


def load_cuhk03_mat(folder: Path, variant: str) -> ReIDDataset:
    """Load the original release in ``folder``, extracting ``images_{variant}/`` when absent."""
    protocol = folder / protocol_name(variant)
    if not protocol.is_file():
        raise DatasetError(
            f"{protocol}: CUHK03 new-protocol file not found; get {protocol.name} from "
            "zhunzhong07/person-re-ranking (evaluation/data/CUHK03) and put it next to cuhk03_release/"
        )
    splits = read_protocol(protocol)
    images_dir = folder / f"images_{variant}"
    if not images_dir.is_dir():
        extract_images(folder / RELEASE, variant, images_dir)
    present = set(os.listdir(images_dir))
    items: dict[str, list[Item]] = {}
    for split, entries in splits.items():
        items[split] = []
        for name, pid in entries:
            if name not in present:
                raise DatasetError(
                    f"{protocol}: lists {name}, which is not in {images_dir} "
                    "(delete that folder to extract it again from cuhk-03.mat)"
                )
            view = _view(name, protocol)
            items[split].append((str(images_dir / name), pid, view - 1))
    train, train_pids = relabel(items["train"])
    return ReIDDataset(
        name=NAME,
        root=folder,
        train=sorted(train),
        query=sorted(items["query"]),
        gallery=sorted(items["gallery"]),
        extra={
            "form": "mat",
            "variant": variant,
            "images_dir": str(images_dir),
            "train_relabelled": True,
            "train_pids": train_pids,
        },
    )


def _view(name: str, protocol: Path) -> int:
    parts = Path(name).stem.split("_")
    try:
        view = int(parts[2])
    except (IndexError, ValueError):
        raise DatasetError(f"{protocol}: file name {name!r} is not {{pair}}_{{pid}}_{{view}}_{{img}}.png") from None
    if view not in (1, 2):
        raise DatasetError(f"{protocol}: file name {name!r} has view {view}, expected 1 or 2")
    return view


def read_protocol(path: Path) -> dict[str, list[tuple[str, int]]]:
    """Read a new-protocol .mat: split -> list of ``(file name, pid)`` (pid = ``labels`` entry)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises several types for unreadable files
        raise DatasetError(f"{path}: cannot read the CUHK03 protocol file ({exc})") from None
    missing = [key for key in PROTOCOL_KEYS if key not in mat]
    if missing:
        raise DatasetError(f"{path}: CUHK03 protocol file lacks the field(s) {', '.join(missing)}")
    names = [str(np.asarray(entry).ravel()[0]) for entry in np.asarray(mat["filelist"]).ravel()]
    labels = np.asarray(mat["labels"]).ravel().astype(np.int64)
    if len(labels) != len(names):
        raise DatasetError(f"{path}: 'labels' has {len(labels)} entries but 'filelist' has {len(names)}")
    splits = {}
    for split in ("train", "query", "gallery"):
        index = np.asarray(mat[f"{split}_idx"]).ravel().astype(np.int64)
        if index.size == 0 or index.min() < 1 or index.max() > len(names):
            raise DatasetError(f"{path}: '{split}_idx' is empty or outside 1..{len(names)}")
        splits[split] = [(names[i - 1], int(labels[i - 1])) for i in index]
    return splits


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise DatasetError(
            "reading the original CUHK03 release (cuhk-03.mat) needs h5py: "
            "pip install h5py (or pip install 'nas-reid[cuhk03]')"
        ) from None
    return h5py


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(path)


def extract_images(release: Path, variant: str, dest: Path) -> int:
    """Write every ``variant`` image of ``cuhk-03.mat`` to ``dest`` as PNG; return the count.

    Names are ``{pair}_{pid:03}_{view}_{img:02}.png`` (all 1-based; images 1-5 are view 1,
    6-10 view 2). ``dest`` appears only once complete: a failure or a kill leaves no partial
    folder under that name.
    """
    h5py = _import_h5py()
    count = 0
    try:
        with atomic_directory(dest) as tmp, h5py.File(release, "r") as mat:
            if variant not in mat:
                raise DatasetError(f"{release}: no '{variant}' entry in the CUHK03 release file")
            for pair, pair_ref in enumerate(np.asarray(mat[variant]).ravel(), start=1):
                refs = mat[pair_ref][:]  # (images per person, persons)
                for person in range(refs.shape[1]):
                    for img in range(refs.shape[0]):
                        ref = refs[img, person]
                        if not ref:
                            continue
                        image = mat[ref][:].T  # stored transposed: (3, W, H) -> (H, W, 3)
                        if image.ndim != 3 or image.size == 0:
                            continue  # an empty cell
                        view = 1 if img < IMAGES_PER_VIEW else 2
                        _write_png(image, tmp / f"{pair}_{person + 1:03d}_{view}_{img + 1:02d}.png")
                        count += 1
            if count == 0:
                raise DatasetError(f"{release}: no '{variant}' image found in the CUHK03 release file")
    except FileExistsError:
        return 0  # another process finished the same extraction first
    except OSError as exc:
        raise DatasetError(f"{release}: cannot extract CUHK03 images to {dest} ({exc})") from None
    return count
