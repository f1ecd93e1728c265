"""The plain data model every dataset parser returns: lists of ``(path, pid, camid)``.

As in torchreid, a dataset is three plain lists. Train pids are relabelled to ``0..N-1``;
query and gallery pids keep their original values (distractors keep pid 0); camera ids are
0-based everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Item = tuple[str, int, int]
"""One image: ``(absolute path, pid, camid)``."""

SPLITS = ("train", "query", "gallery")


@dataclass(frozen=True)
class SplitStats:
    ids: int
    images: int
    cameras: int


@dataclass
class ReIDDataset:
    """Train/query/gallery lists of one dataset, as read from disk."""

    name: str
    root: Path
    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    extra: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Item]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def stats(self, name: str) -> SplitStats:
        items = self.split(name)
        return SplitStats(
            ids=len({pid for _, pid, _ in items}),
            images=len(items),
            cameras=len({cam for _, _, cam in items}),
        )

    @property
    def num_train_pids(self) -> int:
        return self.stats("train").ids

    @property
    def num_cameras(self) -> int:
        return len({cam for split in SPLITS for _, _, cam in self.split(split)})
