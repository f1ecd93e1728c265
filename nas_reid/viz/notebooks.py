"""Running the notebooks of ``notebooks/`` on a run, and rendering them to HTML for sharing.

The notebooks read the run (or genotype) to show from the environment variable
:data:`~nas_reid.viz.genotype_report.RUN_ENV` (``NAS_REID_RUN``; unset: the newest finished
``runs/search-*``, else the reference genotype ``rga_sc``) and the genotype to compare it with
from ``NAS_REID_COMPARE`` (default ``rga_sc``). :func:`execute_notebook` runs one top to bottom
in a fresh kernel of *this* Python (so the ``nas_reid`` it imports is this one, whatever kernels
Jupyter has registered), in the notebook's folder, and raises :class:`NotebookError` at the
first cell that fails. :func:`render_notebooks` does that for each notebook and writes the
executed notebook and its HTML page (``nas-reid genotype notebooks``).

Needs the ``notebooks`` extra: ``pip install 'nas-reid[notebooks]'`` (nbclient, nbformat,
ipykernel, nbconvert).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterable

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_text
from nas_reid.viz.genotype_report import RUN_ENV

COMPARE_ENV = "NAS_REID_COMPARE"
NOTEBOOKS = ("genotype_visualization.ipynb", "search_report.ipynb")
"""The notebooks of ``notebooks/``, in the order :func:`render_notebooks` runs them."""

__all__ = ["COMPARE_ENV", "NOTEBOOKS", "NotebookError", "notebook_folder", "find_notebooks",
           "execute_notebook", "render_notebooks"]


class NotebookError(UserError):
    """A notebook cell failed (``details``: nbclient's full report, with the traceback)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise UserError(f"running the notebooks needs {module}: pip install "
                        "'nas-reid[notebooks]' (nbclient, nbformat, ipykernel, nbconvert)") from None


def notebook_folder() -> Path:
    """``notebooks/`` of the source checkout (editable install), else of the current folder.
    The notebooks are not part of a wheel: they live in the repository."""
    for folder in (Path(__file__).resolve().parents[2] / "notebooks", Path.cwd() / "notebooks"):
        if any((folder / name).is_file() for name in NOTEBOOKS):
            return folder
    raise UserError("the notebooks were not found (they live in the source repository's "
                    "notebooks/ folder, not in an installed wheel); run from a checkout or pass "
                    "--notebook FILE")


def find_notebooks(paths: Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """``paths`` checked, or the shipped :data:`NOTEBOOKS`."""
    if paths:
        out = [Path(p) for p in paths]
    else:
        folder = notebook_folder()
        out = [folder / name for name in NOTEBOOKS]
    for p in out:
        if not p.is_file():
            raise UserError(f"notebook {p}: no such file")
        if p.suffix != ".ipynb":
            raise UserError(f"notebook {p}: not a .ipynb file")
    return out


def _kernel_manager():
    """A kernel manager whose ``python3`` kernel is this interpreter's ipykernel."""
    _need("ipykernel")
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"],
                              display_name="Python 3 (nas-reid)", language="python",
                              resource_dir=str(Path(__file__).parent))

    return KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


def _run_value(run: str | os.PathLike) -> str:
    """A run folder or file as an absolute path (the kernel runs in the notebook's folder); a
    reference name as it is."""
    path = Path(os.fspath(run)).expanduser()
    return str(path.resolve()) if path.exists() else os.fspath(run)


def execute_notebook(path: str | os.PathLike, *, run: str | os.PathLike | None = None,
                     compare: str | os.PathLike | None = None, timeout: int = 600,
                     env: dict[str, str] | None = None) -> Any:
    """Run notebook ``path`` top to bottom and return the executed notebook (an nbformat
    ``NotebookNode``). ``run`` / ``compare`` set ``NAS_REID_RUN`` / ``NAS_REID_COMPARE`` for
    it; ``timeout``: seconds per cell. Raises :class:`NotebookError` naming the cell that failed
    (its ``details`` hold the traceback)."""
    nbformat = _need("nbformat")
    _need("nbclient")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    (path,) = find_notebooks([path])
    nb = nbformat.read(path, as_version=4)
    kernel_env = {**os.environ, **(env or {})}
    if run is not None:
        kernel_env[RUN_ENV] = _run_value(run)
    if compare is not None:
        kernel_env[COMPARE_ENV] = _run_value(compare)
    kernel_env.setdefault("MPLBACKEND", "agg")
    km = _kernel_manager()
    client = NotebookClient(nb, km=km, timeout=timeout, startup_timeout=120,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.resolve().parent)}})
    try:
        try:
            client.execute(env=kernel_env)
        finally:  # nbclient leaves a kernel manager it was handed running
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    except CellExecutionError as exc:
        index = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and any(
            o.get("output_type") == "error" for o in cell.get("outputs", []))), None)
        where = f"cell {index}" if index is not None else "a cell"
        raise NotebookError(f"notebook {path.name}: {where} raised {exc.ename}: "
                            f"{str(exc.evalue).splitlines()[0] if exc.evalue else ''}",
                            str(exc)) from None
    except CellTimeoutError as exc:
        raise NotebookError(f"notebook {path.name}: a cell ran longer than {timeout} s",
                            str(exc)) from None
    except DeadKernelError as exc:
        raise NotebookError(f"notebook {path.name}: the kernel died ({exc})", str(exc)) from None
    except RuntimeError as exc:  # the kernel did not start or answer
        raise NotebookError(f"notebook {path.name}: no Python kernel ({exc})", str(exc)) from None
    return nb


def _html(nb: Any) -> str:
    _need("nbconvert")
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def render_notebooks(run: str | os.PathLike | None, out_dir: str | os.PathLike, *,
                     notebooks: Iterable[str | os.PathLike] | None = None,
                     compare: str | os.PathLike | None = None, timeout: int = 600,
                     html: bool = True) -> list[Path]:
    """Execute each notebook (default: :data:`NOTEBOOKS`) on ``run`` and write, into
    ``out_dir``, the executed notebook ``<name>.ipynb`` and (``html``) its page
    ``<name>.html`` (self-contained: the pictures are embedded). Returns the files written."""
    nbformat = _need("nbformat")
    paths = find_notebooks(notebooks)
    if run is not None:  # fail here, with the loader's message, not inside a kernel
        from nas_reid.viz.genotype_report import load_source

        load_source(run)
    if compare is not None:
        from nas_reid.viz.genotype_report import load_source

        load_source(compare)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = execute_notebook(path, run=run, compare=compare, timeout=timeout)
        written.append(atomic_write_text(out / path.name, nbformat.writes(nb)))
        if html:
            written.append(atomic_write_text(out / f"{path.stem}.html", _html(nb)))
    return written
