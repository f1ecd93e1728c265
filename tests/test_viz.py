"""Looking at genotypes: loading runs, text summaries, costs, diffs, the plots and
`nas-reid genotype show | plot | diff`.

One tiny search (ResNet-18 at 64x32, two-node cells after layer3 and layer4, three candidates,
two epochs on a 16-identity synthreid: a few seconds) gives the run folder; a retrain run
folder is written by hand from its genotype (the reading side is what is tested here).
"""

from __future__ import annotations

import json
import math
import shutil
from itertools import combinations
from pathlib import Path

import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text

from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype, GenotypeError
from nas_reid.viz.genotype_diff import diff_genotypes, format_diff
from nas_reid.viz.genotype_report import (
    cell_costs,
    cost_rows,
    default_compare,
    epoch_rows,
    final_rows,
    find_default_run,
    format_count,
    format_summary,
    load_source,
    markdown_table,
    op_count_history,
    probability_history,
    total_cost,
)
from nas_reid.ops import available_ops
from nas_reid.search import search
from nas_reid import viz
from nas_reid.viz.genotype_plots import op_color
from tests.tiny import tiny_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = tiny_space(name="tiny_viz", nodes=2)
FIGURES = ["cells", "arch_probs", "prob_evolution", "op_counts", "cell_costs", "losses",
           "evaluation", "rib", "temperature"]
RESNET_SKIPS = {"backbone", "backbone_probs", "backbone_evolution", "cost"}
"""Left out for a ResNet search without a cost term (tests/test_mobile_report.py draws them)."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset) -> Path:
    base = tmp_path_factory.mktemp("viz")
    out = base / "search-tiny"
    search(SPACE, dataset, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def retrain_dir(run_dir, tmp_path_factory) -> Path:
    """A retrain run folder as nas_reid.train.loop writes it (genotype, config, metrics)."""
    out = tmp_path_factory.mktemp("retrain") / "retrain-tiny"
    out.mkdir()
    shutil.copy(run_dir / "genotype.json", out / "genotype.json")
    (out / "config.yaml").write_text(yaml.safe_dump({"genotype": {"source": str(run_dir)},
                                                     "reference": None, "recipe": {"epochs": 2}}))
    records = [{"kind": "epoch", "epoch": e, "epochs": 2, "step": 4 * e, "time": 1.5 * e,
                "lr": 0.01, "loss": {"total": 3.0 / e, "id": 2.0 / e, "triplet": 1.0 / e,
                                     "center": 0.0, "rib": 0.0},
                "rib": None, "eval": {"mAP": 0.2 * e, "R1": 0.3 * e, "R5": 0.5, "R10": 0.6,
                                      "mINP": 0.1},
                "best": {"mAP": 0.2 * e, "R1": 0.3 * e, "epoch": e},
                "images_per_second": 50.0, "peak_memory_mib": None} for e in (1, 2)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def genotype(cells, *, backbone="resnet18", size=(64, 32), name=None) -> Genotype:
    return Genotype.from_dict({
        "schema": "nas-reid/genotype", "version": 1,
        "space": {"name": name, "hash": None},
        "input": {"height": size[0], "width": size[1]},
        "backbone": {"name": backbone, "last_stride": 1, "choices": {}},
        "cells": [{"position": pos, "nodes": nodes,
                   "edges": [{"source": s, "target": t, "op": op, "params": params}
                             for s, t, op, params in edges]}
                  for pos, nodes, edges in cells]})


# ------------------------------------------------------------------------------ sources


def test_a_search_run_loads_with_its_metrics_history_and_candidates(run_dir):
    src = load_source(run_dir)
    assert src.kind == "search" and src.finished and src.name == "search-tiny"
    assert len(src.metrics) == 2 and len(src.history) == 2
    assert src.candidates["se"] == ("se", {"reduction": 8})
    assert src.op_of("se") == "se" and src.label_ops == {"eca": "eca", "identity": "identity",
                                                         "se": "se"}
    assert src.notes == []
    # the run folder's genotype.json brings its run along
    via_file = load_source(run_dir / "genotype.json")
    assert via_file.kind == "search" and len(via_file.metrics) == 2


def test_references_files_retrain_and_unfinished_runs_say_what_they_lack(run_dir, retrain_dir,
                                                                          tmp_path):
    ref = load_source("rga_sc")
    assert ref.kind == "reference" and ref.path is None and not ref.has_probabilities
    assert "reference" in ref.notes[0] and "no architecture probabilities" in ref.notes[0]

    lone = tmp_path / "mine.json"
    shutil.copy(run_dir / "genotype.json", lone)
    src = load_source(lone)
    assert src.kind == "file" and src.name == "mine" and src.has_probabilities
    assert any("no search history" in n for n in src.notes)

    re = load_source(retrain_dir)
    assert re.kind == "retrain" and len(re.metrics) == 2 and not re.history
    assert any("retrain run trains one fixed genotype" in n for n in re.notes)
    assert probability_history(re) is None and op_count_history(re) is None

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "genotype_history.jsonl"):
        shutil.copy(run_dir / name, unfinished / name)
    src = load_source(unfinished)
    assert src.kind == "search" and not src.finished
    assert src.genotype.to_json() == Genotype.from_json(run_dir / "genotype.json").to_json()
    assert "unfinished search" in src.notes[0]


def test_bad_specs_are_one_clear_error(tmp_path):
    with pytest.raises(GenotypeError, match="neither a genotype file"):
        load_source(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenotypeError, match="without genotype.json"):
        load_source(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"kind": "epoch"}\nnot json\n')
    shutil.copy(Path(__file__).parents[1] / "search_spaces/reference/rga_s.json",
                broken / "genotype.json")
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        load_source(broken)


def test_the_default_run_is_the_newest_finished_search_else_rga_sc(tmp_path):
    runs = tmp_path / "runs"
    assert find_default_run(runs) == "rga_sc"
    for name in ("search-a", "search-b", "retrain-c", "search-unfinished"):
        (runs / name).mkdir(parents=True)
    for name in ("search-a", "search-b", "retrain-c"):
        (runs / name / "genotype.json").write_text("{}")
    import os

    os.utime(runs / "search-a" / "genotype.json", (1e9, 1e9))
    assert find_default_run(runs) == str((runs / "search-b").resolve())
    assert default_compare(load_source("rga_sc")) == "rib_dcs"
    assert default_compare(load_source("rga_s")) == "rga_sc"


# ------------------------------------------------------------------------ history, costs


def test_the_probability_history_follows_the_metrics(run_dir):
    src = load_source(run_dir)
    hist = probability_history(src)
    assert hist.epochs == [1, 2] and hist.labels == ["identity", "se", "eca"]
    for position, cell in hist.cells.items():
        assert cell.edges == [(0, 1), (0, 2), (1, 2)]
        for i, record in enumerate(src.metrics):
            assert cell.values[i] == record["arch_probs"][position]
        for e in src.genotype.cell(position).edges:  # the chosen column is the genotype's op
            assert hist.labels[cell.chosen[(e.source, e.target)]] == e.op
    epochs, counts = op_count_history(src)
    assert epochs == [1, 2]
    assert {op: n[-1] for op, n in counts.items() if n[-1]} == src.genotype.op_counts()


def test_cell_costs_count_live_edges_and_match_the_reference_docs():
    params, flops = total_cost(cell_costs(Genotype.from_json(
        Path(__file__).parents[1] / "search_spaces/reference/rga_s.json")))
    assert params == 3_223_800 and flops > 0  # nas_reid/space/reference.py
    g = genotype([("layer4", 2, [(0, 1, "se", {"reduction": 8}), (0, 2, "eca", {})])])
    (cost,) = cell_costs(g)
    dead, live = cost.edges
    assert not dead.live and dead.parameters == dead.flops == 0  # 0->1 feeds nothing
    assert live.live and cost.parameters == live.parameters and cost.shape == (512, 4, 2)
    header, rows = cost_rows(g)
    assert rows[0][2] == "0->2 eca" and rows[-1][0] == "total"
    assert format_count(2_673_172) == "2.67 M" and format_count(16_700) == "16.7 k"


def test_the_text_summary_shows_cells_costs_probabilities_and_the_run(run_dir, retrain_dir):
    text = format_summary(run_dir)
    g = Genotype.from_json(run_dir / "genotype.json")
    for cell in g.cells:
        assert f"  {cell.position}  " in text
        for e in cell.edges:
            assert f"{e.source}->{e.target}  {e.op}  p=" in text
    assert "held-out" in text and "probabilities: recorded for layer3, layer4" in text
    ref = format_summary("rga_sc")
    assert "6.31 M params" in ref and "probabilities: none recorded" in ref and "note:" in ref
    assert "backbone: resnet50 (fixed), last stride 1; 23.5 M params" in ref
    assert "  total     29.8 M params" in ref  # backbone, cells and the BNNeck's BatchNorm
    assert "query/gallery" in format_summary(retrain_dir)
    assert "cells: none (the backbone alone)" in format_summary("baseline")


def test_the_tables_of_the_report(run_dir, retrain_dir):
    header, rows = epoch_rows(load_source(run_dir))
    assert header[:4] == ["epoch", "loss", "arch loss", "mAP %"] and len(rows) == 2
    assert "|" in markdown_table(header, rows).splitlines()[0]
    final = dict(final_rows(load_source(run_dir)))
    assert {"epochs", "final mAP / R1", "best mAP / R1", "final tau", "genotype",
            "cell cost"} <= set(final)
    retrain = dict(final_rows(load_source(retrain_dir)))
    assert "final tau" not in retrain and retrain["final mAP / R1"].endswith("(query/gallery)")


# ------------------------------------------------------------------------------------ diff


def test_the_diff_finds_every_kind_of_change():
    a = genotype([
        ("layer2", 1, [(0, 1, "se", {"reduction": 8})]),
        ("layer3", 2, [(0, 1, "se", {"reduction": 8}), (1, 2, "eca", {}), (0, 2, "identity", {})]),
        ("layer4", 1, [(0, 1, "eca", {})]),
    ])
    b = genotype([
        ("layer1", 1, [(0, 1, "eca", {})]),
        ("layer3", 2, [(0, 1, "se", {"reduction": 16}), (1, 2, "cbam_c", {}), (0, 2, "eca", {})]),
        ("layer4", 1, [(0, 1, "eca", {"b": 1, "gamma": 2, "kernel": 0})]),  # defaults written out
    ], backbone="resnet50", size=(128, 64))
    diff = diff_genotypes(a, b)
    status = {c.position: c.status for c in diff.cells}
    assert status == {"layer1": "only_b", "layer2": "only_a", "layer3": "changed",
                      "layer4": "same"}
    layer3 = next(c for c in diff.cells if c.position == "layer3")
    assert {(c.source, c.target): c.kind for c in layer3.changes} == {
        (0, 1): "params", (1, 2): "op", (0, 2): "op"}
    assert [f for f, _, _ in diff.header] == ["input", "backbone"]
    assert not diff.identical
    text = format_diff(diff)
    assert text.splitlines()[0] == (
        "note: A and B are different networks around the cells (input 64x32 vs 128x64; "
        "backbone resnet18 (last stride 1) vs resnet50 (last stride 1)): compare their cells' "
        "ops; their costs follow the sizes")
    small = genotype([("layer4", 1, [(0, 1, "se", {})])])
    assert format_diff(diff_genotypes(small, a)).startswith("A: ")  # same sizes: no note
    for line in ("layer1  only in B: 0->1 eca", "layer2  only in A: 0->1 se",
                 "0->1 se params: reduction 8 -> 16", "1->2 op: eca -> cbam_c",
                 "layer4  same cell (other size, so another cost)", "input     64x32  ->  128x64",
                 "total (cells only):"):
        assert line in text, line
    pa, pb, fa, fb = diff.totals
    assert pb - pa == sum(c.params_delta for c in diff.cells)

    edges = genotype([("layer4", 2, [(0, 1, "se", {}), (1, 2, "eca", {})])])
    fewer = genotype([("layer4", 2, [(0, 1, "se", {}), (0, 2, "eca", {})])])
    (cell,) = diff_genotypes(edges, fewer).cells
    kinds = {(c.source, c.target): c.kind for c in cell.changes}
    assert kinds == {(1, 2): "removed", (0, 2): "added", (0, 1): "live"}
    assert diff_genotypes("rga_s", "rga_s").identical
    assert "the same network" in format_diff(diff_genotypes("rga_s", "rga_s"))


# ----------------------------------------------------------------------------------- plots


def _texts(fig: Figure) -> str:
    """Every piece of text on the figure (titles, annotations, messages)."""
    return " | ".join(t.get_text() for t in fig.findobj(Text) if t.get_text())


def _legend_labels(fig: Figure) -> dict[str, str]:
    out = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            color = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()
            out[text.get_text()] = to_hex(color)
    return out


def test_every_registered_op_has_its_own_colour():
    colors = [to_hex(op_color(op)) for op in available_ops()]
    assert len(set(colors)) == len(colors), dict(zip(available_ops(), colors))


def test_op_colours_are_the_same_in_every_figure(run_dir):
    src = load_source(run_dir)
    figures = [viz.plot_cells(src), viz.plot_probability_evolution(src), viz.plot_op_counts(src),
               viz.plot_cell_costs(src), viz.plot_genotype_diff(src, "rga_sc")]
    for fig in figures:
        legend = _legend_labels(fig)
        ops = [label for label in legend if label in available_ops()]
        assert ops, f"no op legend in {fig._suptitle.get_text()}"
        for op in ops:
            assert legend[op] == to_hex(op_color(op)), (fig._suptitle.get_text(), op)
    probs = viz.plot_arch_probabilities(src)
    for tick in probs.axes[0].get_xticklabels():
        assert to_hex(tick.get_color()) == to_hex(op_color(src.op_of(tick.get_text())))


def test_arch_probabilities_scale_around_uniform_and_tell_the_choice_from_its_runner_up():
    """A search's probabilities lie close to uniform (here 1/4 = 0.25, within 0.17-0.32): the
    colours span the data around uniform, not 0..1, and the labels tell 0.3141 from 0.3138."""
    from nas_reid.viz.genotype_plots import probability_decimals, probability_scale

    g = genotype([("layer3", 1, [(0, 1, "se", {})]), ("layer4", 1, [(0, 1, "eca", {})])])
    ops = ["identity", "se", "eca", "cbam_c"]
    probs = {"layer3": {"ops": ops, "edges": [[0, 1]], "values": [[0.2, 0.3141, 0.3138, 0.1721]]},
             "layer4": {"ops": ops, "edges": [[0, 1]], "values": [[0.24, 0.25, 0.27, 0.24]]}}
    fig = viz.plot_arch_probabilities(g, probabilities=probs)
    ax, bar = fig.axes
    norm = ax.images[0].norm
    assert norm.vcenter == 0.25  # white is uniform
    assert (norm.vmin, norm.vmax) == pytest.approx((0.1721, 0.3279))  # 0.25 -+ the widest gap
    # 3 decimals would print the chosen se and its runner-up eca alike (0.314): 4 are used
    assert [t.get_text() for t in ax.texts] == ["0.2000", "0.3141", "0.3138", "0.1721",
                                                "0.2400", "0.2500", "0.2700", "0.2400"]
    assert [t.get_text() for t in bar.get_yticklabels()] == ["0.172", "0.250 uniform", "0.328"]
    assert any(list(line.get_ydata()) == [0.25, 0.25] for line in bar.lines)  # uniform marked
    assert "white: uniform 1/4" in bar.get_ylabel()
    assert probability_decimals([[0.163, 0.157, 0.1]]) == 3  # the "0.16 and 0.16"
    assert probability_decimals([[0.16341, 0.16338]]) == 5
    assert probability_decimals([[0.5, 0.5]]) == 6  # a tie never separates
    assert probability_scale([[0.9, 0.1]], 0.5) == pytest.approx((0.1, 0.9))
    assert probability_scale([[0.25, 0.25]], 0.25) == pytest.approx((0.249, 0.251))


def test_cells_have_distinct_nodes_and_labels_that_do_not_overlap():
    g = genotype([("layer3", 4, [(0, 1, "se", {}), (0, 2, "eca", {}), (1, 3, "cbam_c", {}),
                                 (2, 4, "identity", {}), (0, 4, "se", {}), (1, 2, "eca", {})]),
                  ("layer4", 1, [(0, 1, "rga_s", {})])])
    fig = viz.plot_cells(g)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    diameter = 2 * (900 / math.pi) ** 0.5 * fig.dpi / 72  # scatter s=900 pt^2, in pixels
    for ax in fig.axes:
        centres = [ax.transData.transform(c.get_offsets()[0]) for c in ax.collections]
        assert len(centres) in (5, 2)
        for a, b in combinations(centres, 2):
            assert math.dist(a, b) > 1.5 * diameter  # nodes are well apart
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        for a, b in combinations(boxes, 2):
            assert not a.overlaps(b), [t.get_text() for t in ax.texts]
    assert set(_legend_labels(fig)) >= {"se", "eca", "cbam_c", "identity", "rga_s", "dead edge"}


def test_plots_degrade_to_a_message_where_there_is_nothing_to_draw(retrain_dir):
    for fn, expected in ((viz.plot_arch_probabilities, "no architecture probabilities"),
                         (viz.plot_probability_evolution, "reference genotype"),
                         (viz.plot_op_counts, "reference genotype"),
                         (viz.plot_losses, "reference genotype"),
                         (viz.plot_temperature, "reference genotype")):
        assert expected in _texts(fn("rga_sc"))
    assert "backbone alone" in _texts(viz.plot_cells("baseline"))
    assert "backbone alone" in _texts(viz.plot_cell_costs("baseline"))
    assert "retrain run" in _texts(viz.plot_probability_evolution(retrain_dir))
    assert "no temperature" in _texts(viz.plot_temperature(retrain_dir))
    assert "query / gallery" in _texts(viz.plot_heldout(retrain_dir))


def test_the_evolution_has_one_panel_per_edge_and_the_diff_one_row_per_position(run_dir):
    src = load_source(run_dir)
    fig = viz.plot_probability_evolution(src)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 6  # 3 edges in each of two 2-node cells
    assert sum("kept:" in ax.get_title() for ax in titled) == sum(
        len(c.edges) for c in src.genotype.cells)
    diff = viz.plot_genotype_diff(src, "rga_sc")
    assert len(diff.subfigs) == 2 and all(len(s.axes) == 4 for s in diff.subfigs)
    assert "no cell at layer1" in _texts(diff)
    assert "+" in " ".join(ax.get_title() for ax in diff.subfigs[1].axes)  # deltas vs A
    labels = _legend_labels(diff)
    assert "only in B (added)" in labels and "changed (op, parameters or liveness)" in labels


def test_search_report_curves(run_dir):
    src = load_source(run_dir)
    legend = set(_legend_labels(viz.plot_losses(src)))
    assert {"total (weights)", "id (weights)", "triplet (weights)",
            "arch triplet (held-out ids)"} <= legend
    assert {"mAP", "R1", "R5"} <= set(_legend_labels(viz.plot_heldout(src)))
    assert {"I(X;F)", "I(F;Y)", "IB", "RIB weight (right)"} <= set(_legend_labels(viz.plot_rib(src)))
    assert "tau" in _legend_labels(viz.plot_temperature(src))


def test_figures_are_written_as_png_and_svg(run_dir, tmp_path):
    written, skipped = viz.write_genotype_figures(run_dir, tmp_path / "out")
    assert set(skipped) == RESNET_SKIPS
    assert "fixed resnet_tiny backbone" in skipped["backbone"] and "no cost" in skipped["cost"]
    assert sorted(p.name for p in written) == sorted(f"{s}.{e}" for s in FIGURES
                                                     for e in ("png", "svg"))
    assert all(p.stat().st_size > 1000 for p in written)
    assert (tmp_path / "out/cells.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "out/cells.svg").read_bytes()[:500]
    again = viz.save_figure(viz.plot_cells(run_dir), tmp_path / "again", formats=["svg"])
    assert again[0].read_bytes() == (tmp_path / "out/cells.svg").read_bytes()  # deterministic
    written, skipped = viz.write_genotype_figures("rga_sc", tmp_path / "ref", formats=["png"])
    assert sorted(p.name for p in written) == ["cell_costs.png", "cells.png"]
    assert set(skipped) == set(FIGURES) - {"cells", "cell_costs"} | RESNET_SKIPS


# ------------------------------------------------------------------------------------- CLI


def test_cli_show_plot_and_diff(run, run_dir, retrain_dir, tmp_path):
    shown = run("genotype", "show", run_dir)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"genotype: {run_dir} (search run, finished")
    assert "note:" in run("genotype", "show", retrain_dir).output

    plotted = run("genotype", "plot", run_dir, "--out", tmp_path / "p", "--format", "png")
    assert plotted.exit_code == 0, plotted.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(f"{s}.png" for s in FIGURES)
    ref = run("genotype", "plot", "rga_sc", "--out", tmp_path / "r")
    assert ref.exit_code == 0 and "skipped arch_probs:" in ref.output
    assert (tmp_path / "r/cells.svg").is_file()

    diffed = run("genotype", "diff", run_dir, "rga_sc", "--out", tmp_path / "d")
    assert diffed.exit_code == 0, diffed.output
    assert "layer1  only in B: 0->1 rga_sc" in diffed.output
    assert (tmp_path / "d/diff.png").is_file() and (tmp_path / "d/diff.svg").is_file()


@pytest.mark.parametrize("args, message", [
    (["show", "no_such_genotype"], "neither a genotype file"),
    (["diff", "rga_s", "nowhere.json"], "nowhere.json"),
    (["plot", "rga_s", "--out", "{file}"], "is not a folder"),
    (["diff", "rga_s", "rga_c", "--out", "{file}"], "is not a folder"),
])
def test_cli_failures_are_one_line_and_exit_2(run, tmp_path, args, message):
    file = tmp_path / "a_file"
    file.write_text("x")
    result = run("genotype", *[a.format(file=file) for a in args])
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output and message in result.output
    assert "Traceback" not in result.output
