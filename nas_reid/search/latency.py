"""Measured latency for the cost-aware search loss: FBNet's latency lookup table (LUT).

FBNet (Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural
Architecture Search", CVPR 2019) times every *block* a network of the space can hold
(:mod:`nas_reid.space.blocks`), once, and prices a network as the **sum of its blocks'
latencies**; the sum is differentiable in the architecture probabilities, as an expectation over
the table (:mod:`nas_reid.search.cost`). An entry is the median of ``repeats`` timed forwards
after ``warmup``, in milliseconds. The table is JSON (``"kind": "nas-reid/latency-table"``,
``"version": 1``, ``meta``, ``entries``; ``latency_table.json`` in a search's run folder, or any
file handed to ``schedule.cost.latency.table``), written atomically and read back validated
(never pickle): a bad field, or a key the space needs that is missing, raises
:class:`LatencyTableError` naming it. Measured latencies vary from run to run: hand a search a
fixed table (``table:``) for "same seed, same genotype".
The additivity assumption, the timing and the file format in detail: docs/search.md, section
`nas_reid.search.latency`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_json
from nas_reid.space.blocks import Block, space_blocks
from nas_reid.engine.schema import format_validation_error
from nas_reid.space.config import SearchSpace

KIND = "nas-reid/latency-table"
VERSION = 1
LATENCY_FILE = "latency_table.json"
_SHOWN = 5  # missing keys named in an error message


class LatencyTableError(UserError):
    """A latency table that cannot be read, does not follow the format, or lacks a key."""


# ------------------------------------------------------------------------------ the file


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    device: str
    torch: str
    batch: int = Field(ge=1)
    warmup: int = Field(ge=0)
    repeats: int = Field(ge=1)
    date: str


class _TableFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["nas-reid/latency-table"]
    version: int
    meta: _Meta
    entries: dict[str, float]

    @field_validator("entries")
    @classmethod
    def _milliseconds(cls, entries: dict[str, float]) -> dict[str, float]:
        for key, ms in entries.items():
            if not math.isfinite(ms) or ms < 0:
                raise ValueError(f"[{key!r}]: a latency is a finite number of ms >= 0, got {ms}")
        return entries


@dataclass
class LatencyTable:
    """Median milliseconds per block key (:mod:`nas_reid.space.blocks`), and how they were
    measured (``meta``: device, torch version, batch, warmup, repeats, date, input size)."""

    entries: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> str:
        """The device the entries were measured on, in words."""
        return str(self.meta.get("device", "unknown device"))

    def ms(self, key: str) -> float:
        """The latency of one block; :class:`LatencyTableError` naming a missing key."""
        try:
            return self.entries[key]
        except KeyError:
            raise LatencyTableError(f"latency table ({self.device}): no entry for {key!r}") from None

    def require(self, keys: Iterable[str], what: str = "the search space") -> None:
        """Raise :class:`LatencyTableError` naming the keys of ``keys`` the table lacks."""
        missing = [k for k in dict.fromkeys(keys) if k not in self.entries]
        if not missing:
            return
        shown = ", ".join(repr(k) for k in missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        where = self.meta.get("source") or "latency table"
        size = self.meta.get("input") or {}
        hint = (f" (the table was measured at {size.get('height')}x{size.get('width')})"
                if size else "")
        raise LatencyTableError(f"{where}: {what} needs {len(missing)} block(s) the table has no "
                                f"entry for{hint}; missing: {shown}{more}; measure a table for "
                                "this space (nas-reid latency-table)")

    # -- JSON

    def to_dict(self) -> dict[str, Any]:
        meta = {k: v for k, v in self.meta.items() if k != "source"}
        return {"kind": KIND, "version": VERSION, "meta": meta, "entries": dict(self.entries)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON, atomically."""
        path = Path(path)
        try:
            return atomic_write_json(path, self.to_dict())
        except OSError as exc:
            raise LatencyTableError(f"latency table {path}: cannot be written ({exc.strerror or exc})"
                                    ) from None

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "<dict>") -> "LatencyTable":
        """Validate a parsed table (see the module doc for the format)."""
        what = f"latency table {where}"
        if not isinstance(data, dict):
            raise LatencyTableError(f"{what}: expected a JSON object at the top, got "
                                    f"{type(data).__name__}")
        version = data.get("version")
        if data.get("kind") == KIND and version != VERSION:
            raise LatencyTableError(f"{what}: version: unknown format version {version!r} (this "
                                    f"nas-reid reads version {VERSION})")
        try:
            doc = _TableFile.model_validate(data)
        except ValidationError as exc:
            raise LatencyTableError(format_validation_error(exc, what, _TableFile)) from None
        return cls(entries=dict(doc.entries), meta={**doc.meta.model_dump(), "source": what})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        """Read a table file (JSON only: reading runs no code)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise LatencyTableError(f"latency table {path}: no such file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise LatencyTableError(f"latency table {path}: not valid JSON at line {exc.lineno}, "
                                    f"column {exc.colno}: {exc.msg}") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise LatencyTableError(f"latency table {path}: cannot be read ({exc})") from None
        return cls.from_dict(data, where=str(path))


# ------------------------------------------------------------------------------ measuring


def measurement_device(spec: str | torch.device, what: str = "--device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a device; :class:`LatencyTableError` when CUDA is asked
    for and not available."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise LatencyTableError(f"{what}: must be cpu or cuda, got {spec!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LatencyTableError(f"{what} {spec}: CUDA is not available on this machine "
                                    "(torch.cuda.is_available() is False)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise LatencyTableError(f"{what}: must be cpu or cuda, got {spec!r}")
    return dev


def device_description(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3 (CUDA 12.4)``, or ``cpu: <model name>, 8 torch threads``."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"cpu: {_cpu_name()}, {torch.get_num_threads()} torch threads"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_block(block: Block, *, batch: int = 1, warmup: int = 10, repeats: int = 30,
                  device: torch.device | str = "cpu") -> float:
    """The median latency (ms) of one forward of ``block`` alone on a random input of its
    shape, batch ``batch``, in eval mode (:func:`time_forward`). The global RNG is left as it
    was (building the block draws its weights)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = block.build().eval().to(device)
        x = torch.randn(batch, *block.input_shape).to(device)
    return time_forward(module, x, warmup=warmup, repeats=repeats)


@torch.no_grad()
def time_forward(module: torch.nn.Module, x: torch.Tensor, *, warmup: int = 10,
                 repeats: int = 30) -> float:
    """The median milliseconds of ``module(x)`` under ``no_grad`` (on ``x``'s device), after
    ``warmup`` untimed calls: on a GPU each call between two CUDA events, the device
    synchronized; on the CPU by ``time.perf_counter``."""
    if x.device.type == "cuda":
        return _time_cuda(module, x, warmup, repeats)
    for _ in range(warmup):
        module(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _time_cuda(module: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    with torch.cuda.device(x.device):
        for _ in range(warmup):
            module(x)
        torch.cuda.synchronize(x.device)
        times = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            module(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_table(space: SearchSpace, *, batch: int = 1, warmup: int = 10, repeats: int = 30,
                  device: torch.device | str = "cpu", progress: bool = False) -> LatencyTable:
    """Measure every block the networks of ``space`` can hold (:func:`measure_block`) on
    ``device``; ``progress``: a progress bar on a terminal (stderr)."""
    from tqdm.auto import tqdm

    device = measurement_device(device)
    blocks = space_blocks(space).blocks()
    start = time.monotonic()
    entries = {}
    for block in tqdm(blocks, desc="latency table", unit="block", disable=None if progress else True,
                      dynamic_ncols=True, mininterval=1.0):
        entries[block.key] = round(measure_block(block, batch=batch, warmup=warmup,
                                                 repeats=repeats, device=device), 6)
    meta = {"device": device_description(device), "device_type": device.type,
            "threads": torch.get_num_threads(), "torch": str(torch.__version__),
            "batch": batch, "warmup": warmup, "repeats": repeats,
            "date": datetime.now().isoformat(timespec="seconds"),
            "input": {"height": space.input.height, "width": space.input.width},
            "space": {"name": space.name, "hash": space.canonical_hash()},
            "seconds": round(time.monotonic() - start, 3)}
    return LatencyTable(entries=entries, meta=meta)


def table_for(space: SearchSpace, device: torch.device | str = "cpu", *,
              progress: bool = False) -> LatencyTable:
    """The latency table ``space``'s ``schedule.cost.latency`` asks for: its ``table`` file,
    else measured with its settings on its ``device`` (default ``device``)."""
    cfg = space.schedule.cost.latency
    if cfg.table is not None:
        return LatencyTable.load(cfg.table)
    dev = measurement_device(cfg.device or device,
                             "schedule.cost.latency.device" if cfg.device else "--device")
    return measure_table(space, batch=cfg.batch, warmup=cfg.warmup, repeats=cfg.repeats,
                         device=dev, progress=progress)
