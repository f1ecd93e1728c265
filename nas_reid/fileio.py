"""Atomic file and folder writes: write to a temporary sibling, then rename.

A kill at any moment leaves either the previous good state or the new complete one, never a
half-written file. This is the project's run-folder contract: every file under ``runs/<name>/``
is written this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from nas_reid.killpoints import reached


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, what: str) -> None:
    """:class:`~nas_reid.errors.UserError` (naming ``what``, e.g. ``--out x``) unless ``path``
    (a folder, or where one will be created) can be written into: the first of it and its parents
    that exists must be a folder that takes a file (an anonymous temporary file, gone at once)."""
    from nas_reid.errors import UserError

    folder = Path(path).expanduser().absolute()
    while not folder.exists() and not folder.is_symlink():  # the first that exists holds the new
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{what}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{what}: cannot write into {folder} ({exc.strerror or exc})") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (same-folder temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        reached(f"write:{path.name}")  # test-only kill point (nas_reid.killpoints)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write or fsync names the file it was for
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory, then
    :func:`atomic_write_bytes`)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def torch_load_safe(path: str | os.PathLike, error: type[Exception]) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU: reading runs no code. ``error`` for
    a missing file or one torch cannot read (the message names the file and the first line of
    torch's reason)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle or unsafe-type errors: not a checkpoint of ours
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"checkpoint {path} cannot be read ({first})") from None


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` when the block succeeds.

    On an exception the temporary folder is removed and ``path`` is left untouched. With
    ``overwrite`` an existing ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
