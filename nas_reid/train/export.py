"""Export a model checkpoint's retrieval network to ONNX or TorchScript (``nas-reid export``).

:func:`export_model` loads a model checkpoint (:func:`nas_reid.train.checkpoint.load_model`,
``weights_only``) on the CPU in eval mode and exports its :class:`~nas_reid.space.discrete.ReIDNet`
wrapped in :class:`FeatureExtractor`: input ``images``, float32 ``(N, 3, H, W)`` at the genotype's
input size, RGB, prepared like the test transform (resized, scaled to [0, 1], normalised with the
ImageNet mean and std); output ``features``, float32 ``(N, D)``, the eval-mode ``feat_bn`` (the
BNNeck output; flip averaging is not part of the graph). ``N`` is free, ``H`` and ``W`` are
fixed, the weights are constants. ``onnx``: one self-contained file (opset 17 by default, 13..20
accepted; torch's TorchScript-based exporter; ``pip install 'nas-reid[export]'``).
``torchscript``: a ``torch.jit.save`` archive of a trace wrapped in an input-shape check. Both
carry ``nas_reid.*`` string metadata (genotype, input size, normalisation, feature), read back by
:func:`read_export_metadata`. With ``check=True`` (the default) the serialised file is run at
batch sizes 3 and 1 and must match PyTorch within ``CHECK_RTOL * s + CHECK_ATOL`` (``s`` the
largest absolute feature value), else :class:`ExportError`; only then is it written, atomically,
replacing an existing file only with ``overwrite=True``.
Formats, tracing, metadata keys and the check in detail: docs/training.md, section
`nas_reid.train.export`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from nas_reid import __version__
from nas_reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_bytes
from nas_reid.space.discrete import ReIDNet
from nas_reid.train.checkpoint import LoadedModel, load_model

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAME = "images"
OUTPUT_NAME = "features"
FEATURE = "feat_bn"
EXPORT_VERSION = 1
META_PREFIX = "nas_reid."

DEFAULT_OPSET = 17
"""Opset of the ONNX file when none is given: run by every onnxruntime >= 1.12 and by the usual
inference runtimes (TensorRT, OpenVINO)."""
MIN_OPSET, MAX_OPSET = 13, 20
"""Accepted opsets: 20 is the TorchScript-based exporter's newest, 13 the oldest checked here."""

TRACE_BATCH = 2
CHECK_BATCH = 3
CHECK_SEED = 0
CHECK_RTOL = 1e-3
CHECK_ATOL = 1e-5

_INSTALL = "pip install 'nas-reid[export]'"


class ExportError(UserError):
    """An export that cannot be done as asked (format, output path, missing packages) or whose
    file does not reproduce PyTorch's features."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` returns."""

    path: Path
    """The written file."""
    format: str
    """``"onnx"`` or ``"torchscript"``."""
    input_size: tuple[int, int]
    """``(H, W)`` of the ``images`` input."""
    feature_dim: int
    """``D`` of the ``features`` output."""
    max_abs_diff: float | None
    """Largest absolute difference to PyTorch's features over the checked batches (``None``
    without the check)."""
    seconds: float
    """Wall time of the whole export (loading, exporting, checking, writing)."""
    checked_batches: tuple[int, ...] = ()
    """Batch sizes the exported file was run with by the check (``()`` without it)."""
    opset: int | None = None
    """ONNX opset (``None`` for TorchScript)."""
    metadata: dict[str, str] = field(default_factory=dict)
    """The metadata written into the file (see the module doc)."""


class FeatureExtractor(nn.Module):
    """``images (N, 3, H, W) -> features (N, D)``: the network's eval-mode ``feat_bn``."""

    def __init__(self, net: ReIDNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[FEATURE]


class _InputCheck(nn.Module):
    """Scripted around the traced network: a clear error for an input of the wrong shape."""

    def __init__(self, traced: nn.Module, height: int, width: int) -> None:
        super().__init__()
        self.net = traced
        self.height = height
        self.width = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if (images.dim() != 4 or images.size(1) != 3 or images.size(2) != self.height
                or images.size(3) != self.width):
            raise RuntimeError("this nas-reid model takes images of shape (N, 3, "
                               + str(self.height) + ", " + str(self.width) + "), got "
                               + str(images.shape))
        return self.net(images)


# ------------------------------------------------------------------------------ public API


def default_output(checkpoint_file: str | os.PathLike, fmt: str) -> Path:
    """``<checkpoint stem><suffix>`` next to the checkpoint file (suffix per :data:`SUFFIXES`)."""
    path = Path(checkpoint_file)
    return path.with_name(path.stem + SUFFIXES[_check_format(fmt)])


def export_model(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None,
                 *, opset: int | None = None, check: bool = True,
                 overwrite: bool = False) -> ExportResult:
    """Export the retrieval network of a model checkpoint (or of a retrain run folder: the
    checkpoint :func:`~nas_reid.train.checkpoint.read_checkpoint` takes for it) to ``fmt``
    (``"onnx"`` or ``"torchscript"``); see the module doc.

    ``out``: the file to write (default :func:`default_output`; an existing folder receives the
    default file name). ``opset``: ONNX opset, :data:`MIN_OPSET` .. :data:`MAX_OPSET` (default
    :data:`DEFAULT_OPSET`; ONNX only). ``check``: compare the exported file's features with PyTorch's before writing it.
    ``overwrite``: replace an existing ``out``. Raises :class:`ExportError` (or the checkpoint's
    :class:`~nas_reid.train.checkpoint.ModelCheckpointError`); nothing is written then.
    """
    start = time.perf_counter()
    fmt = _check_format(fmt)
    if fmt == "onnx":
        opset = _check_opset(opset)
        onnx = _require("onnx")
        ort = _require("onnxruntime") if check else None
    elif opset is not None:
        raise ExportError("an opset applies to the onnx format only, not to torchscript")

    loaded = load_model(checkpoint, "cpu")
    target = _output_path(out, loaded.path, fmt)
    _check_target(target, loaded.path, overwrite)
    height, width = loaded.genotype.input_size
    net = FeatureExtractor(loaded.model).eval()
    meta = _metadata(loaded, fmt, net)
    example = _random_batch(TRACE_BATCH, height, width, seed=CHECK_SEED + 1)

    if fmt == "onnx":
        data = _to_onnx(net, example, opset, onnx, meta, loaded.path)
    else:
        data = _to_torchscript(net, example, height, width, meta, loaded.path)

    diff, batches = None, ()
    if check:
        run = _onnx_runner(ort, data) if fmt == "onnx" else _torchscript_runner(data)
        diff, batches = _compare(net, run, height, width, fmt)

    _check_target(target, loaded.path, overwrite)  # it may have appeared meanwhile
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return ExportResult(path=target, format=fmt, input_size=(height, width),
                        feature_dim=int(meta[META_PREFIX + "feature_dim"]), max_abs_diff=diff,
                        seconds=time.perf_counter() - start, checked_batches=batches,
                        opset=opset if fmt == "onnx" else None, metadata=meta)


def read_export_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``nas_reid.*`` metadata of an exported ONNX or TorchScript file (keys as stored,
    see the module doc). Reads only the metadata: no model code is run or unpickled."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExportError(f"no exported model at {path}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04":  # a zip archive: TorchScript
        try:
            with zipfile.ZipFile(path) as archive:
                meta = {}
                for name in archive.namelist():
                    parts = name.split("/")
                    if len(parts) == 3 and parts[1] == "extra" and parts[2].startswith(META_PREFIX):
                        meta[parts[2]] = archive.read(name).decode("utf-8")
        except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise ExportError(f"{path} cannot be read as a TorchScript archive ({exc})") from None
    else:
        onnx = _require("onnx")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf decode errors
            raise ExportError(f"{path} is neither a TorchScript archive nor an ONNX file "
                              f"({_first_line(exc)})") from None
        meta = {p.key: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
    if not meta:
        raise ExportError(f"{path} carries no nas-reid export metadata (not written by "
                          "nas-reid export)")
    return meta


# ------------------------------------------------------------------------------ checks


def _check_format(fmt: Any) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _check_opset(opset: Any) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"ONNX opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, "
                          f"got {opset!r}")
    return opset


def _require(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportError(f"the ONNX format needs the {name!r} package, which is not "
                          f"installed: {_INSTALL}") from None


def _output_path(out: str | os.PathLike | None, checkpoint_file: Path, fmt: str) -> Path:
    default = default_output(checkpoint_file, fmt)
    if out is None:
        return default
    target = Path(out).expanduser()
    if target.is_dir():
        return target / default.name
    return target


def _check_target(target: Path, checkpoint_file: Path, overwrite: bool) -> None:
    if target.is_dir():
        raise ExportError(f"output {target} is a folder")
    if target.exists() and target.resolve() == checkpoint_file.resolve():
        raise ExportError(f"output {target} is the checkpoint itself; choose another file")
    if target.exists() and not overwrite:
        raise ExportError(f"output {target} already exists; add --overwrite to replace it")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ------------------------------------------------------------------------------ export


def _metadata(loaded: LoadedModel, fmt: str, net: FeatureExtractor) -> dict[str, str]:
    height, width = loaded.genotype.input_size
    dim = net.net.head.bottleneck.num_features
    values = {
        "export_version": str(EXPORT_VERSION),
        "version": __version__,
        "format": fmt,
        "genotype": loaded.genotype.to_json(),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_height": str(height),
        "input_width": str(width),
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "preprocessing": (f"RGB image resized to {height}x{width} (antialiased), scaled to "
                          "[0, 1], then (x - mean) / std per channel; float32 NCHW"),
        "feature": FEATURE,
        "feature_dim": str(dim),
    }
    return {META_PREFIX + k: v for k, v in values.items()}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.jit / legacy ONNX exporter deprecation and tracer warnings, and anything
    the exporter prints from Python, for the duration of the block."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.")
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"You are using the legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r"The feature will be removed")
        yield


def _random_batch(batch: int, height: int, width: int, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)


def _to_onnx(net: FeatureExtractor, example: torch.Tensor, opset: int, onnx: Any,
             meta: dict[str, str], source: Path) -> bytes:
    buffer = io.BytesIO()
    # torch (2.14) turns its C++ ONNX log on for every TorchScript-based export and never turns
    # it off again (setup_onnx_logging tests the function object, not its result): put it back
    is_logging = getattr(torch._C, "_jit_is_onnx_log_enabled", None)
    set_logging = getattr(torch._C, "_jit_set_onnx_log_enabled", None)
    was_logging = is_logging() if callable(is_logging) and callable(set_logging) else None
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                net, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True, export_params=True)
    except Exception as exc:
        raise ExportError(f"exporting {source} to ONNX failed: {_first_line(exc)}") from exc
    finally:
        if was_logging is not None:
            set_logging(was_logging)
    model = onnx.load_model_from_string(buffer.getvalue())
    del model.metadata_props[:]
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.doc_string = (f"nas-reid {__version__} re-ID feature extractor: {INPUT_NAME} "
                        f"(N, 3, H, W) -> {OUTPUT_NAME} (N, D); see metadata_props")
    return model.SerializeToString()


def _to_torchscript(net: FeatureExtractor, example: torch.Tensor, height: int, width: int,
                    meta: dict[str, str], source: Path) -> bytes:
    buffer = io.BytesIO()
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(net, (example,), check_trace=False)
            module = torch.jit.script(_InputCheck(traced, height, width))
            torch.jit.save(module, buffer, _extra_files=meta)
    except Exception as exc:
        raise ExportError(f"exporting {source} to TorchScript failed: {_first_line(exc)}") from exc
    return buffer.getvalue()


# ------------------------------------------------------------------------------ check

Runner = Callable[[torch.Tensor], torch.Tensor]


def _onnx_runner(ort: Any, data: bytes) -> Runner:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load the exported ONNX model: "
                          f"{_first_line(exc)}") from exc

    def run(images: torch.Tensor) -> torch.Tensor:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
        return torch.from_numpy(out)

    return run


def _torchscript_runner(data: bytes) -> Runner:
    with _quiet():
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    module.eval()

    def run(images: torch.Tensor) -> torch.Tensor:
        return module(images)

    return run


def _compare(net: FeatureExtractor, run: Runner, height: int, width: int,
             fmt: str) -> tuple[float, tuple[int, ...]]:
    """Largest |exported - PyTorch| over batches of CHECK_BATCH and 1 images; ExportError if it
    exceeds the tolerance (module doc)."""
    images = _random_batch(CHECK_BATCH, height, width, seed=CHECK_SEED)
    worst, scale, batches = 0.0, 0.0, []
    for batch in (images, images[:1]):
        with torch.no_grad():
            expected = net(batch)
            try:
                got = run(batch)
            except Exception as exc:
                raise ExportError(f"the exported {fmt} model fails on a batch of {len(batch)}: "
                                  f"{_first_line(exc)}") from exc
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportError(f"the exported {fmt} model returns shape {tuple(got.shape)} for a "
                              f"batch of {len(batch)}, PyTorch {tuple(expected.shape)}")
        diff = float((got.float() - expected).abs().max())
        if not math.isfinite(diff):
            raise ExportError(f"the exported {fmt} model or PyTorch gives non-finite features "
                              f"for a batch of {len(batch)}; nothing was written")
        worst = max(worst, diff)
        scale = max(scale, float(expected.abs().max()))
        batches.append(len(batch))
    tolerance = CHECK_RTOL * scale + CHECK_ATOL
    if worst > tolerance:
        raise ExportError(
            f"the exported {fmt} model's features differ from PyTorch's by up to {worst:.3g} "
            f"(allowed {tolerance:.3g} = {CHECK_RTOL:g} x the largest feature magnitude "
            f"{scale:.3g} + {CHECK_ATOL:g}); nothing was written")
    return worst, tuple(batches)
