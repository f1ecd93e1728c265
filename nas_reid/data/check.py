"""Sanity report on a loaded dataset: split sizes against the official ones, plus the two
mistakes that break evaluation of custom data (the first is the most reported custom-data failure
of torchreid and fast-reid, e.g. KaiyangZhou/deep-person-reid issues #207, #348, #497 and #509).

* a query whose pid has no gallery image from another camera can never be matched (the
  evaluation drops it; when all are dropped it fails: "all query identities do not appear
  in gallery");
* a pid in both train and test leaks test identities into training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from nas_reid.data.base import SPLITS, ReIDDataset, SplitStats

MAX_NAMED = 5
"""How many offending ids a warning names."""


@dataclass(frozen=True)
class CheckRow:
    """One split: what was loaded, the official figures (None if unknown) and whether they match."""

    split: str
    found: SplitStats
    official: SplitStats | None = None

    @property
    def matches(self) -> dict[str, bool] | None:
        if self.official is None:
            return None
        return {k: getattr(self.found, k) == getattr(self.official, k) for k in ("ids", "images", "cameras")}

    @property
    def ok(self) -> bool | None:
        return None if self.official is None else all(self.matches.values())


@dataclass
class DatasetCheck:
    name: str
    root: Path
    rows: list[CheckRow]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unmatched_queries: int = 0
    """Query images with no gallery image of the same pid from another camera."""
    unmatched_query_ids: list[int] = field(default_factory=list)
    overlap_ids: list[int] = field(default_factory=list)
    """Original pids present in train and in query or gallery."""

    @property
    def ok(self) -> bool:
        return not self.warnings


def _name_some(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:MAX_NAMED])
    return shown + (", ..." if len(ids) > MAX_NAMED else "")


def _as_stats(value) -> SplitStats:
    return value if isinstance(value, SplitStats) else SplitStats(*value)


def _unmatched_queries(ds: ReIDDataset) -> tuple[int, list[int]]:
    cams_by_pid: dict[int, set[int]] = {}
    for _, pid, cam in ds.gallery:
        cams_by_pid.setdefault(pid, set()).add(cam)
    bad_images, bad_ids = 0, set()
    for _, pid, cam in ds.query:
        if not cams_by_pid.get(pid, set()) - {cam}:
            bad_images += 1
            bad_ids.add(pid)
    return bad_images, sorted(bad_ids)


def _original_train_pids(ds: ReIDDataset) -> set[int] | None:
    """Train pids in the numbering of query/gallery, or None when that cannot be known."""
    extra = ds.extra or {}
    if extra.get("test_ids_separate"):
        return None
    labels = {pid for _, pid, _ in ds.train}
    if "train_pids" in extra:
        mapping = extra["train_pids"]
        return {mapping[label] for label in labels}
    if extra.get("train_relabelled") is False:
        return labels
    return None


def check_dataset(ds: ReIDDataset, official: Mapping[str, SplitStats | tuple] | None = None) -> DatasetCheck:
    """Compare ``ds`` with ``official`` (split -> (ids, images, cameras)) and look for the
    usual evaluation pitfalls. Every problem becomes one line in ``warnings``."""
    official = official or {}
    rows = [
        CheckRow(split, ds.stats(split), _as_stats(official[split]) if split in official else None)
        for split in SPLITS
    ]
    check = DatasetCheck(name=ds.name, root=Path(ds.root), rows=rows)
    for row in rows:
        for key, same in (row.matches or {}).items():
            if not same:
                check.warnings.append(
                    f"{row.split} {key}: found {getattr(row.found, key):,}, "
                    f"official {getattr(row.official, key):,}"
                )
    if not official:
        check.notes.append("no official counts known for this dataset")

    bad_images, bad_ids = _unmatched_queries(ds)
    check.unmatched_queries, check.unmatched_query_ids = bad_images, bad_ids
    if bad_images:
        tail = " (no query can be evaluated)" if bad_images == len(ds.query) else ""
        check.warnings.append(
            f"{bad_images:,} of {len(ds.query):,} query images ({len(bad_ids):,} ids, e.g. "
            f"{_name_some(bad_ids)}) have no gallery image of the same id from another camera; "
            f"evaluation skips them{tail}"
        )

    train = _original_train_pids(ds)
    if train is None:
        check.notes.append("train/test id overlap not checked: train and test ids are numbered separately "
                           "or the original train pids are unknown")
    else:
        distractor = (ds.extra or {}).get("distractor_pid")
        test = {pid for split in ("query", "gallery") for _, pid, _ in ds.split(split)} - {distractor}
        check.overlap_ids = sorted(train & test)
        if check.overlap_ids:
            n = len(check.overlap_ids)
            check.warnings.append(
                f"{n:,} {'id appears' if n == 1 else 'ids appear'} in both train and test "
                f"(e.g. {_name_some(check.overlap_ids)})"
            )
    return check


def _cell(found: int, official: int | None) -> str:
    return f"{found:,}" if official is None else f"{found:,} ({official:,})"


def format_check(check: DatasetCheck) -> str:
    """A fixed-width table (official figures in brackets) followed by warnings and notes."""
    header = ("split", "ids", "images", "cameras", "match")
    lines = []
    for row in check.rows:
        off = row.official
        lines.append((
            row.split,
            _cell(row.found.ids, off and off.ids),
            _cell(row.found.images, off and off.images),
            _cell(row.found.cameras, off and off.cameras),
            "-" if row.ok is None else ("yes" if row.ok else "NO"),
        ))
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda r: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    ).rstrip()
    out = [f"dataset {check.name}  ({check.root})", fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(r) for r in lines]
    if check.rows and any(r.official is not None for r in check.rows):
        out.append("(official figures in brackets)")
    out.append("")
    if check.warnings:
        out.append(f"{len(check.warnings)} warning(s):")
        out += [f"  - {w}" for w in check.warnings]
    else:
        out.append("no warnings")
    out += [f"note: {n}" for n in check.notes]
    return "\n".join(out)
