"""The notebooks of notebooks/: stored clean, calling nas_reid.viz only, and executed top to
bottom (nbclient, a fresh kernel of this Python) on a tiny search run by
`nas-reid genotype notebooks`, which also renders them to HTML.

The tiny search: ResNet-18 at 64x32, one-node cells after layer3 and layer4, three candidates,
two epochs on a 16-identity synthreid (a few seconds). Running both notebooks takes about
15 s (a kernel start and the imports each).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nas_reid.cli import main
from nas_reid.search import search
from nas_reid.errors import UserError
from nas_reid.viz.notebooks import NOTEBOOKS, execute_notebook
from tests.tiny import tiny_space

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("nbconvert")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
SPACE = tiny_space(name="tiny_notebooks")
# figures each notebook draws (one image output per plot call)
IMAGES = {"genotype_visualization.ipynb": 6, "search_report.ipynb": 4}


def _code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset) -> Path:
    base = tmp_path_factory.mktemp("nb")
    out = base / "search-nb"
    search(SPACE, dataset, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def rendered(run_dir, tmp_path_factory) -> Path:
    """Both notebooks executed on the tiny run and rendered by the CLI, once."""
    out = tmp_path_factory.mktemp("rendered")
    result = CliRunner().invoke(main, ["genotype", "notebooks", str(run_dir), "--out", str(out),
                                       "--timeout", "300"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_the_repository_has_both_notebooks():
    assert sorted(p.name for p in FOLDER.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_stored_valid_and_without_outputs(name):
    nb = nbformat.read(FOLDER / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_draw_only_through_nas_reid_viz(name):
    source = "\n".join(c.source for c in _code_cells(FOLDER / name))
    for forbidden in ("import matplotlib", "pyplot", "plt.", "import networkx", "savefig"):
        assert forbidden not in source
    assert "from nas_reid import viz" in source and "viz.plot_" in source
    assert "os.environ.get(RUN_ENV) or find_default_run()" in source


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_run_top_to_bottom_on_a_tiny_search(rendered, run_dir, name):
    nb = nbformat.read(rendered / name, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == IMAGES[name]
    text = json.dumps([o.get("text", "") for o in outputs])
    assert str(run_dir) in text  # NAS_REID_RUN reached the kernel
    # a finished search lacks nothing: no report note (the diff's first line may say that the
    # tiny run and the reference it is compared with are different networks around the cells)
    notes = [line for o in outputs for line in o.get("text", "").splitlines()
             if line.startswith("note:") and not line.startswith("note: A and B are different")]
    assert notes == []


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_html_pages_embed_the_pictures(rendered, name):
    page = (rendered / name).with_suffix(".html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    assert page.count("data:image/png;base64") >= IMAGES[name]


@pytest.mark.slow
def test_a_failing_cell_is_named_and_the_cli_exits_2(tmp_path):
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                          nbformat.v4.new_code_cell("1 / 0")])
    path = tmp_path / "bad.ipynb"
    nbformat.write(bad, path)
    result = CliRunner().invoke(main, ["genotype", "notebooks", "rga_sc", "--notebook", str(path),
                                       "--out", str(tmp_path / "out"), "--timeout", "120"])
    assert result.exit_code == 2, result.output
    assert "bad.ipynb: cell 1 raised ZeroDivisionError" in result.output
    assert "Traceback" not in result.output


def test_the_runner_refuses_what_it_cannot_run(tmp_path):
    result = CliRunner().invoke(main, ["genotype", "notebooks", "no_such_run", "--out",
                                       str(tmp_path)])
    assert result.exit_code == 2 and "no_such_run" in result.output
    result = CliRunner().invoke(main, ["genotype", "notebooks", "--notebook",
                                       str(tmp_path / "missing.ipynb"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "missing.ipynb: no such file" in result.output
    with pytest.raises(UserError, match="no such file"):
        execute_notebook(tmp_path / "missing.ipynb")
