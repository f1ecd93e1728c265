import copy
import json

import networkx as nx
import pytest
import torch
from torch import nn

from nas_reid import __version__
from nas_reid.errors import UserError
from nas_reid.space.genotype import (
    Genotype,
    GenotypeError,
    derive_genotype,
    load_genotype,
    save_genotype,
)
from nas_reid.space import Supernet, build_model, inherit_weights, load_space

OPS = ["zero", "identity", {"name": "se", "params": {"reduction": 8}}, "eca",
       {"name": "rga_c", "params": {"s_ratio": 2, "d_ratio": 2}}]
ZERO, IDENTITY, SE, ECA, RGA_C = range(5)


def space_dict(nodes=1, edges_per_node=1, strategy="gumbel", positions=("layer3", "layer4"),
               skip_cap=None):
    return {
        "name": "tiny",
        "input": {"height": 64, "width": 32},
        "backbone": {"name": "resnet18", "last_stride": 1},
        "cells": {"positions": list(positions), "nodes": nodes, "edges_per_node": edges_per_node},
        "ops": copy.deepcopy(OPS),
        "sampling": {"strategy": strategy},
        "schedule": {"skip_cap": skip_cap},
    }


def supernet(**kwargs):
    torch.manual_seed(0)
    return Supernet(load_space(space_dict(**kwargs)), num_classes=5)


def set_alpha(net, position, rows):
    with torch.no_grad():
        net.arch[position].copy_(torch.tensor(rows, dtype=torch.float32))


def row(**logits):
    """A logit row over OPS: row(se=3, zero=5) -> [5, 0, 3, 0, 0]."""
    names = ["zero", "identity", "se", "eca", "rga_c"]
    return [float(logits.get(n, 0.0)) for n in names]


@pytest.fixture(scope="module")
def derived():
    """A 2-node genotype: layer3 keeps 0->2 (node 1 dead), layer4 keeps 1->2 (all live)."""
    net = supernet(nodes=2, edges_per_node=1)
    # edges (0,1), (0,2), (1,2)
    set_alpha(net, "layer3", [row(eca=2), row(se=4, zero=1), row(zero=6, rga_c=1)])
    set_alpha(net, "layer4", [row(rga_c=3), row(zero=6, identity=1), row(se=5)])
    g = derive_genotype(net, provenance={"seed": 3, "epoch": 7, "search_run": "runs/t"})
    return net, g


# ------------------------------------------------------------------------------ derivation


def test_derivation_picks_strongest_nonzero_op_and_top_edges(derived):
    net, g = derived
    layer3 = g.cell("layer3")
    # 0->2: zero is ignored, se is the best other op; node 2 keeps one edge: 0->2 (se, large
    # probability) beats 1->2 (whose best non-zero op, rga_c, has a small one)
    assert [(e.source, e.target, e.op) for e in layer3.edges] == [(0, 1, "eca"), (0, 2, "se")]
    assert layer3.edges[1].params == {"reduction": 8}
    assert [(e.source, e.target) for e in layer3.live_edges()] == [(0, 2)]
    layer4 = g.cell("layer4")
    assert [(e.source, e.target, e.op) for e in layer4.edges] == [(0, 1, "rga_c"), (1, 2, "se")]
    assert layer4.edges[0].params == {"c_ratio": 8, "checkpoint": False, "d_ratio": 2, "s_ratio": 2}
    assert g.op_counts() == {"rga_c": 1, "se": 2}
    assert g.summary() == "layer3: 0->1 eca, 0->2 se | layer4: 0->1 rga_c, 1->2 se"
    assert g.space.hash == net.space.canonical_hash() and g.space.name == "tiny"
    assert g.backbone.name == "resnet18" and g.backbone.choices == {}
    assert g.provenance.seed == 3 and g.provenance.epoch == 7
    assert g.provenance.package_version == __version__
    probs = g.probabilities["layer3"]
    assert probs.ops == ["zero", "identity", "se", "eca", "rga_c"]
    assert probs.edges == [[0, 1], [0, 2], [1, 2]]
    assert probs.values[1] == [round(v, 6) for v in torch.softmax(torch.tensor(row(se=4, zero=1)), 0).tolist()]


def test_edges_per_node_two_keeps_the_two_strongest():
    net = supernet(nodes=3, edges_per_node=2, positions=("layer4",))
    # edges: (0,1) (0,2) (1,2) (0,3) (1,3) (2,3)
    set_alpha(net, "layer4", [row(se=1), row(eca=1), row(eca=2),
                              row(se=3), row(zero=9, identity=0.5), row(rga_c=2)])
    g = derive_genotype(net)
    assert [(e.source, e.target, e.op) for e in g.cell("layer4").edges] == [
        (0, 1, "se"), (0, 2, "eca"), (1, 2, "eca"), (0, 3, "se"), (2, 3, "rga_c")]


def test_skip_cap():
    net = supernet(nodes=2, edges_per_node=2, positions=("layer3",), skip_cap=1)
    set_alpha(net, "layer3", [row(identity=3, eca=1), row(identity=4, se=2), row(identity=2, rga_c=1.5)])
    capped = derive_genotype(net)  # the space's cap: keep the strongest identity (0->2)
    assert [e.op for e in capped.cell("layer3").edges] == ["eca", "identity", "rga_c"]
    assert [e.op for e in derive_genotype(net, skip_cap=None).cell("layer3").edges] == ["identity"] * 3
    assert [e.op for e in derive_genotype(net, skip_cap=0).cell("layer3").edges] == ["eca", "se", "rga_c"]


# ------------------------------------------------------------------------------ JSON


def test_round_trip_is_byte_identical(derived, tmp_path):
    _, g = derived
    text = g.to_json()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert list(json.loads(text)) == ["schema", "version", "space", "input", "backbone", "cells",
                                      "probabilities", "provenance"]
    assert json.loads(text)["schema"] == "nas-reid/genotype" and json.loads(text)["version"] == 1
    assert '\n  "input": {"height": 64, "width": 32},\n' in text  # indent 2, short objects inline
    assert '"edges": [\n        {"source": 0, "target": 1, "op": "eca", "params": {' in text
    again = Genotype.from_json(text)
    assert again == g and again.to_json() == text
    path = save_genotype(g, tmp_path / "sub" / "genotype.json")
    assert path.read_text() == text
    assert load_genotype(path, space=load_space(space_dict(nodes=2))).to_json() == text
    assert Genotype.from_json(str(path)).to_json() == text


def doc(derived):
    return json.loads(derived[1].to_json())


def _edit(d, change):
    change(d)
    return json.dumps(d)


def _cycle(d):
    d["cells"][0]["edges"] = [{"source": 0, "target": 1, "op": "se", "params": {}},
                              {"source": 1, "target": 2, "op": "se", "params": {}},
                              {"source": 2, "target": 1, "op": "se", "params": {}}]


BAD = [
    (lambda d: d.update(schema="other/thing"), "schema is 'other/thing'"),
    (lambda d: d.update(version=3), "version 3 is not supported"),
    (lambda d: d.pop("version"), "version None is not supported"),
    (lambda d: d["cells"][0]["edges"][0].update(op="conv9"), "cells[0].edges[0].op: unknown op 'conv9'"),
    (lambda d: d["cells"][0]["edges"][1]["params"].update(reduction=0),
     "cells[0].edges[1].params.reduction: op 'se'"),
    (lambda d: d["cells"][0]["edges"][1]["params"].update(bogus=1),
     "cells[0].edges[1].params.bogus: op 'se' has no parameter"),
    (_cycle, "cells[0].edges: not a DAG, there is a cycle 1 -> 2 -> 1"),
    (lambda d: d["cells"][0].update(edges=[{"source": 0, "target": 1, "op": "se", "params": {}}]),
     "cells[0]: node 2 has no incoming edge"),
    (lambda d: d["cells"][0]["edges"].append({"source": 2, "target": 1, "op": "se", "params": {}}),
     "goes backwards"),
    (lambda d: d["cells"][0]["edges"].append({"source": 1, "target": 0, "op": "se", "params": {}}),
     "node 0 is the cell input"),
    (lambda d: d["cells"][0]["edges"].append({"source": 2, "target": 2, "op": "se", "params": {}}),
     "self-loop on node 2"),
    (lambda d: d["cells"][0]["edges"].append({"source": 0, "target": 3, "op": "se", "params": {}}),
     "cells[0].edges[2].target: node 3 does not exist"),
    (lambda d: d["cells"][0]["edges"].append(dict(d["cells"][0]["edges"][0])), "is already"),
    (lambda d: d["cells"][1].update(position="layer3"), "cells[1].position: 'layer3' has two cells"),
    (lambda d: d["cells"][0].update(position="layer9"), "cells[0].position"),
    (lambda d: d.update(extra=1), "extra: unknown field (allowed: space, input"),
    (lambda d: d["backbone"].update(choices={"depth": 50}), "backbone.choices"),
    (lambda d: d["backbone"].update(name="vgg"), "backbone.name"),
    (lambda d: d["probabilities"]["layer3"]["values"].pop(), "probabilities.layer3.values: 2 rows for 3 edges"),
    (lambda d: d["probabilities"]["layer3"]["values"][0].__setitem__(0, 1.5), "probabilities must be in [0, 1]"),
    (lambda d: d["space"].update(hash="XYZ"), "space.hash"),
    (lambda d: d["input"].update(height=8), "input.height"),
    (lambda d: d["input"].update(height=63), "input: 63x32 is not divisible by 16, the total stride "
     "of resnet18 with last_stride 1; use multiples of 16 (e.g. 64x32)"),
]


@pytest.mark.parametrize("change,words", BAD, ids=[b[1][:30] for b in BAD])
def test_from_json_validation_errors(derived, change, words):
    text = _edit(doc(derived), change)
    with pytest.raises(GenotypeError) as info:
        Genotype.from_json(text)
    assert isinstance(info.value, UserError)
    assert words in str(info.value), str(info.value)


def test_from_json_file_errors(tmp_path, derived):
    with pytest.raises(GenotypeError, match="no such file"):
        Genotype.from_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "nas-reid/genotype",\n "version": 1,,}')
    with pytest.raises(GenotypeError, match=r"bad.json: not valid JSON at line 2"):
        Genotype.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(GenotypeError, match="expected a JSON object"):
        Genotype.from_json(bad)
    d = doc(derived)
    d["cells"][0]["edges"][0]["op"] = "nope"
    bad.write_text(json.dumps(d))
    with pytest.raises(GenotypeError, match=r"genotype .*bad.json: cells\[0\]\.edges\[0\]\.op"):
        Genotype.from_json(bad)


def test_space_hash_is_checked(derived):
    text = derived[1].to_json()
    Genotype.from_json(text, space=load_space(space_dict(nodes=2)))  # the same space: fine
    other = space_dict(nodes=2)
    other["ops"][2]["params"]["reduction"] = 4
    with pytest.raises(GenotypeError, match="has changed"):
        Genotype.from_json(text, space=load_space(other))
    d = json.loads(text)
    d["space"]["hash"] = None
    with pytest.raises(GenotypeError, match="has no space hash"):
        Genotype.from_json(json.dumps(d), space=load_space(space_dict(nodes=2)))
    # only the schedule changed: the genotype is still valid for it
    sched = space_dict(nodes=2)
    sched["schedule"] = {"epochs": 3, "warmup_epochs": 1}
    Genotype.from_json(text, space=load_space(sched))


def test_hand_written_genotype_without_cells_builds_a_baseline():
    text = json.dumps({
        "schema": "nas-reid/genotype", "version": 1,
        "space": {"name": None, "hash": None}, "input": {"height": 64, "width": 32},
        "backbone": {"name": "resnet18", "last_stride": 1, "choices": {}},
        "cells": [], "probabilities": {},
        "provenance": {"seed": None, "epoch": None, "search_run": None, "package_version": "0.1.0"},
    })
    g = Genotype.from_json(text)
    model = build_model(g, num_classes=4)
    assert len(model.cells) == 0 and g.summary() == "no cells"
    assert model(torch.randn(2, 3, 64, 32))["logits"].shape == (2, 4)


# ------------------------------------------------------------------------------ networkx


def test_networkx_view(derived):
    graphs = derived[1].to_networkx()
    assert list(graphs) == ["layer3", "layer4"]
    g3 = graphs["layer3"]
    assert nx.is_directed_acyclic_graph(g3)
    assert sorted(g3.edges) == [(0, 1), (0, 2)]
    assert g3.edges[0, 2]["op"] == "se" and g3.edges[0, 2]["params"] == {"reduction": 8}
    assert g3.edges[0, 2]["live"] and not g3.edges[0, 1]["live"]
    assert g3.nodes[0]["kind"] == "input" and g3.nodes[2]["label"] == "output"
    assert not g3.nodes[1]["live"] and g3.graph["position"] == "layer3"
    assert sorted(graphs["layer4"].edges) == [(0, 1), (1, 2)]


# ------------------------------------------------------------------------------ build_model


def _scramble_bn_stats(net):
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_build_model_matches_the_supernet(derived):
    net, g = derived
    model = build_model(g, num_classes=5)
    for position in ("layer3", "layer4"):
        cell = model.cells[position]
        sup = net.cells[position]
        live = g.cell(position).live_edges()
        assert sorted(cell.ops) == sorted(f"e{e.source}_{e.target}" for e in live)
        for e in live:
            k = [op.name for op in net.space.ops].index(e.op)
            chosen = sup.edges[sup.edge_list.index((e.source, e.target))].candidates[k]
            mine = cell.ops[f"e{e.source}_{e.target}"]
            assert type(mine) is type(chosen)
            assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in chosen.parameters())
    assert sum(p.numel() for p in model.backbone.parameters()) == sum(
        p.numel() for p in net.backbone.parameters())

    _scramble_bn_stats(net)
    inherit_weights(model, net)
    net.eval()
    model.eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        expected = net(x)  # gumbel in eval: argmax per edge (layer3's 1->2 argmax is zero)
        got = model(x)
    assert torch.allclose(got["feat"], expected["feat"], atol=1e-5)
    assert torch.allclose(got["feat_bn"], expected["feat_bn"], atol=1e-5)
    assert not torch.allclose(got["feat"], build_model(g, 5).eval()(x)["feat"], atol=1e-3)
    with pytest.raises(UserError, match="3x64x32"):
        model(torch.randn(1, 3, 32, 32))
    model.train()
    assert model(x)["logits"].shape == (3, 5)


def test_build_model_matches_softmax_supernet_with_one_hot_alphas():
    net = supernet(nodes=2, edges_per_node=2, strategy="softmax", positions=("layer3",))
    set_alpha(net, "layer3", [row(rga_c=200), row(se=200), row(identity=200)])
    g = derive_genotype(net)
    assert [e.op for e in g.cell("layer3").edges] == ["rga_c", "se", "identity"]
    model = build_model(g, num_classes=5)
    _scramble_bn_stats(net)
    inherit_weights(model, net)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x)["feat_bn"], net.eval()(x)["feat_bn"], atol=1e-5)
    other = supernet(nodes=1, strategy="softmax", positions=("layer3",))
    with pytest.raises(GenotypeError, match="space hash"):
        inherit_weights(model, other)
