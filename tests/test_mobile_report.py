"""The genotype tooling with a searched mobile backbone: `nas-reid genotype show | diff | plot`
and the search plots carry the backbone's choices, and the parameters and FLOPs of the backbone
and of the whole network match the built model.

One tiny mobile search (a five-stage MobileNetV2-family backbone at 64x32, width / kernel /
expansion / skip choices, one-node cells after layer3 and layer4, an additive cost term, two
epochs on a 16-identity synthreid: a few seconds) gives the run folder.
"""

from __future__ import annotations

import copy
import math
from itertools import combinations
from pathlib import Path

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch.utils.flop_counter import FlopCounterMode

from nas_reid import viz
from nas_reid.space.genotype import Genotype
from nas_reid.viz.genotype_diff import diff_genotypes, format_diff
from nas_reid.viz.genotype_report import (
    backbone_cost,
    backbone_probability_history,
    backbone_stages,
    bnneck_parameters,
    cell_costs,
    cost_history,
    final_rows,
    format_summary,
    load_source,
    network_cost,
    split_choice_key,
    stage_rows,
    total_cost,
)
from nas_reid.search import search
from nas_reid.space.discrete import build_model
from nas_reid.space.mobile import arch_flops
from nas_reid.viz.genotype_plots import plot_backbone, plot_backbone_probabilities
from nas_reid.viz.search_plots import plot_backbone_evolution, plot_cost
from tests.tiny import tiny_genotype

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXED = {"width": [1.0], "kernel": [3], "expansion": [1], "skip": False}
SPACE = {
    "name": "tiny_mobile",
    "input": {"height": 64, "width": 32},
    "backbone": {"name": "mobilenetv2", "last_stride": 1, "mobile": {
        "stem": 8, "head": 32, "activation": "relu6", "divisor": 4,
        "stages": [
            {"name": "s1", "layer": "stem", "channels": 8, "blocks": 1, **FIXED},
            {"name": "s2", "layer": "layer1", "channels": 8, "blocks": 1, "stride": 2},
            {"name": "s3", "layer": "layer2", "channels": 16, "blocks": 2, "stride": 2},
            {"name": "s4", "layer": "layer3", "channels": 16, "blocks": 2, "stride": 2,
             "kernel": [3]},
            {"name": "s5", "layer": "layer4", "channels": 24, "blocks": 1, "stride": 2},
        ],
        "choices": {"width": [0.5, 1.0], "kernel": [3, 5], "expansion": [2, 4], "skip": True}}},
    "cells": {"positions": ["layer3", "layer4"], "nodes": 1, "edges_per_node": 1},
    "ops": ["identity", {"name": "se", "params": {"reduction": 4}}, "eca"],
    "sampling": {"strategy": "gumbel", "tau": {"start": 5.0, "end": 0.5}},
    "schedule": {"epochs": 2, "warmup_epochs": 0, "batch": {"p": 2, "k": 4},
                 "weights": {"lr": 0.05}, "arch": {"lr": 0.01},
                 "cost": {"form": "additive", "target": 0.5}},
}
WIDEST = {"s1": 8, "s2": 8, "s3": 16, "s4": 16, "s5": 24}
BACKBONE_FIGURES = {"backbone", "backbone_probs", "backbone_evolution", "cost"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset) -> Path:
    out = tmp_path_factory.mktemp("mobile") / "search-mobile"
    search(SPACE, dataset, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def searched(run_dir) -> Genotype:
    return Genotype.from_json(run_dir / "genotype.json")


def with_stage(genotype: Genotype, name: str, **changes) -> Genotype:
    """``genotype`` with stage ``name`` of its backbone changed (probabilities dropped, as the
    searched probabilities no longer describe it)."""
    doc = copy.deepcopy(genotype.to_dict())
    for stage in doc["backbone"]["choices"]["stages"]:
        if stage["name"] == name:
            stage.update(changes)
    doc.pop("backbone_probabilities", None)
    return Genotype.from_dict(doc)


def _texts(fig: Figure) -> str:
    return " | ".join(t.get_text() for t in fig.findobj(Text) if t.get_text())


def _legend_labels(fig: Figure) -> list[str]:
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return labels + [t.get_text() for ax in fig.axes if ax.get_legend()
                     for t in ax.get_legend().get_texts()]


# ------------------------------------------------------------------------------ the text


def test_choice_keys_split_into_stage_and_part():
    stages = ["s2", "s2_x"]
    assert split_choice_key("s2_width", stages) == ("s2", "width")
    assert split_choice_key("s2_b1_skip", stages) == ("s2", "b1")
    assert split_choice_key("s2_x_kernel", stages) == ("s2_x", "kernel")  # longest name wins
    assert split_choice_key("s3_width", stages) is None
    assert split_choice_key("s2_depth", stages) is None


def test_show_prints_the_backbone_stage_by_stage(run_dir, searched):
    arch = searched.backbone.mobile
    stages = backbone_stages(searched)
    assert [s.name for s in stages] == [s.name for s in arch.stages]
    for st, chosen in zip(stages, arch.stages):
        assert (st.width, st.kernel, st.expansion, list(st.blocks)) == (
            chosen.width, chosen.kernel, chosen.expansion, chosen.blocks)
        assert st.widest == WIDEST[st.name]
    s3 = next(s for s in stages if s.name == "s3")
    assert set(s3.options) == {"width", "kernel", "expansion", "b1"}
    assert s3.options["width"] == [8, 16]
    assert s3.probability["width"] == searched.backbone_probabilities["s3_width"].values[
        s3.options["width"].index(s3.width)]
    assert "kernel" not in next(s for s in stages if s.name == "s4").options  # a fixed kernel

    text = format_summary(run_dir)
    assert "backbone: mobilenetv2 (searched), last stride 1, stem 8, head 32, relu6;" in text
    header, rows = stage_rows(searched)
    assert header[:5] == ["stage", "layer", "stride", "output", "width (max)"]
    for row, st in zip(rows, stages):
        assert row[4].startswith(f"{st.width} ({WIDEST[st.name]})")
        assert row[5].startswith(str(st.kernel)) and row[6].startswith(str(st.expansion))
        assert row[7] == st.blocks_text()
        line = next(line for line in text.splitlines() if line.startswith(f"  {st.name}  "))
        for cell in row:
            assert cell in line, (cell, line)
    assert "p=" in rows[2][4] and "p=" not in rows[0][4]  # s3's width was searched, s1's not
    for what in ("backbone", "cells", "BNNeck", "total"):
        assert f"\n  {what:<9} " in text
    assert "the backbone is not counted" not in text
    final = dict(final_rows(load_source(run_dir)))
    assert final["backbone"] == searched.backbone.mobile.summary()
    assert final["final cost"].startswith("expected ") and "additive cost term, target 0.50" in \
        final["final cost"]
    assert "final cost" in text

    hand = with_stage(searched, "s3", blocks=[True, False])
    (s3,) = [s for s in backbone_stages(hand) if s.name == "s3"]
    assert s3.widest is None and s3.blocks_text() == "x1/2 (b1 skipped)"
    assert "no backbone probabilities recorded" in format_summary(hand)
    assert "backbone: resnet_tiny (fixed)" in format_summary(tiny_genotype())


# ------------------------------------------------------------------------------ the cost


def _built_cost(genotype: Genotype) -> tuple[int, int]:
    """Parameters (classifier excluded) and FlopCounterMode FLOPs of the built model in eval
    mode at batch 1."""
    torch.manual_seed(0)
    model = build_model(genotype, num_classes=7).eval()
    params = model.num_parameters() - model.head.classifier.weight.numel()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *genotype.input_size))
    return params, int(counter.get_total_flops())


def test_network_cost_is_the_built_model_without_its_classifier(searched):
    resnet = tiny_genotype()
    two_node = Genotype.from_dict({**searched.to_dict(), "cells": [
        {"position": "layer4", "nodes": 2, "edges": [
            {"source": 0, "target": 1, "op": "se", "params": {"reduction": 4}},  # dead
            {"source": 0, "target": 2, "op": "eca", "params": {}}]}], "probabilities": {}})
    for genotype in (searched, with_stage(searched, "s3", width=8, blocks=[True, False]),
                     two_node, resnet):
        assert network_cost(genotype) == _built_cost(genotype)
        bp, bf = backbone_cost(genotype)
        cp, cf = total_cost(cell_costs(genotype))
        params, flops = network_cost(genotype)
        assert params == bp + cp + bnneck_parameters(genotype) and flops == bf + cf
    arch = searched.backbone.mobile
    assert backbone_cost(searched)[1] == arch_flops(arch, searched.input_size, 1)
    assert bnneck_parameters(searched) == 2 * arch.out_channels
    assert bnneck_parameters(resnet) == 2 * 128
    narrow, wide = (backbone_cost(with_stage(searched, "s3", width=w)) for w in (8, 16))
    assert narrow[0] < wide[0] and narrow[1] < wide[1]


# ------------------------------------------------------------------------------ the diff


def test_diff_shows_backbone_differences_stage_by_stage(searched):
    other_width = 8 if searched.backbone.mobile.stages[2].width == 16 else 16
    narrower = with_stage(searched, "s3", width=other_width)
    diff = diff_genotypes(searched, narrower)
    assert not diff.identical
    changed = {s.name: s.changes for s in diff.stages if s.status == "changed"}
    width = searched.backbone.mobile.stages[2].width
    assert changed == {"s3": [("width", str(width), str(other_width))]}
    text = format_diff(diff)
    assert f"s3  changed: width {width} -> {other_width}" in text
    assert "backbone stages (mobilenetv2 (searched); A -> B):" in text
    assert "\nbackbone: " in text and "\nnetwork (backbone, cells, BNNeck; no classifier): " in text
    assert diff_genotypes(searched, searched).identical

    vs_resnet = diff_genotypes(searched, tiny_genotype())
    assert {s.status for s in vs_resnet.stages} == {"only_a"}
    assert "mobilenetv2 (searched) vs resnet_tiny (fixed)" in format_diff(vs_resnet)
    assert diff_genotypes(tiny_genotype(), tiny_genotype()).stages == []


# ------------------------------------------------------------------------------ the plots


def _assert_texts_apart(fig: Figure) -> None:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if t.get_text()]
        for (ta, a), (tb, b) in combinations(boxes, 2):
            assert not a.overlaps(b), (ta, tb)


def test_plot_writes_the_backbone_figures_and_skips_them_for_a_resnet(run_dir, searched,
                                                                       tmp_path):
    written, skipped = viz.write_genotype_figures(run_dir, tmp_path / "out", formats=["png"])
    assert skipped == {}
    names = {p.name for p in written}
    assert {f"{stem}.png" for stem in BACKBONE_FIGURES} <= names
    assert (tmp_path / "out/backbone.png").read_bytes()[:4] == b"\x89PNG"

    fig = plot_backbone(run_dir)
    texts = _texts(fig)
    for st in backbone_stages(searched):
        assert f"{st.width}/{st.widest}\nk{st.kernel} e{st.expansion}\nx{st.depth}/" \
               f"{len(st.blocks)}" in texts
    assert {"stem", "layer1", "layer2", "layer3", "layer4"} <= set(texts.split(" | "))
    for cell in searched.cells:
        assert cell.edges[0].op in texts  # the cell positions, marked with their ops
    _assert_texts_apart(fig)
    assert "no searched backbone" in _texts(plot_backbone(tiny_genotype()))
    assert "no backbone probabilities" in _texts(plot_backbone_probabilities(
        with_stage(searched, "s3")))
    probs = plot_backbone_probabilities(searched)
    labels = [t.get_text() for t in probs.axes[0].get_yticklabels()]
    assert labels == [f"{s}  {p}" if not p.startswith("b") else f"{s}  {p} skip"
                      for s, p in (split_choice_key(k, WIDEST)
                                   for k in searched.backbone_probabilities)]

    resnet = tiny_genotype().save(tmp_path / "resnet_tiny.json")
    written, skipped = viz.write_genotype_figures(resnet, tmp_path / "r", formats=["png"])
    assert BACKBONE_FIGURES <= set(skipped)
    assert "fixed resnet_tiny backbone" in skipped["backbone"]
    assert not any(p.stem in BACKBONE_FIGURES for p in written)


def test_search_plots_show_backbone_probabilities_and_cost_over_epochs(run_dir, searched):
    src = load_source(run_dir)
    hist = backbone_probability_history(src)
    assert hist.epochs == [1, 2]
    assert list(hist.choices) == list(searched.backbone_probabilities)
    for key, choice in hist.choices.items():
        for i, record in enumerate(src.metrics):
            assert choice.values[i] == record["backbone_probs"][key]
        stage = next(s for s in backbone_stages(searched) if s.name == choice.stage)
        assert choice.options[choice.chosen] == stage.chosen(choice.part)

    fig = plot_backbone_evolution(src)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    panels = sum(len({p if p in ("width", "kernel", "expansion") else "blocks" for p in st.options})
                 for st in backbone_stages(searched))
    assert len(titles) == panels
    s3 = searched.backbone.mobile.stages[2]
    assert f"s3 width: {s3.width}" in titles and "s3 blocks: " + (
        "all kept" if s3.blocks[1] else "b1 skipped") in titles
    assert "8" in _legend_labels(fig) and "16" in _legend_labels(fig)

    costs = cost_history(src)
    assert costs.epochs == [1, 2] and costs.form == "additive" and costs.target == 0.5
    assert costs.achieved == [r["cost"]["achieved"] for r in src.metrics]
    assert math.isclose(costs.achieved[-1] * 1e6, network_cost(searched)[1], abs_tol=1)
    labels = _legend_labels(plot_cost(src))
    assert {"achieved (genotype)", "expected (probabilities)", "target 0.5"} <= set(labels)

    assert "fixed backbone" in _texts(plot_backbone_evolution("rga_sc"))
    assert "reference genotype" in _texts(plot_cost("rga_sc"))
