"""The searchable mobile backbone (issue 6): its YAML, the masked supernet against the narrow
networks it stands for, the genotype's backbone choices, the cost-aware loss, and a search +
retrain of a tiny mobile space end to end."""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype, GenotypeError, derive_genotype
from nas_reid.search import search
from nas_reid.search.cost import CostModel
from nas_reid.space import SpaceError, Supernet, build_model, inherit_weights, load_space
from nas_reid.space.mobile import (
    LAYERS,
    MobileArch,
    MobileBackbone,
    MobileConfig,
    arch_flops,
    make_divisible,
    mobile_stage_shapes,
    narrow_state_dict,
)
from nas_reid.space.mobile_supernet import MobileSupernetBackbone
from tests.tiny import tiny_mobile_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def space(**changes):
    doc = tiny_mobile_space()
    for path, value in changes.items():
        node = doc
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value
    return doc


def randomise_norms(module: nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affine parameters away from their initial values, so that a
    wrong channel in a comparison shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


def set_logits(net: Supernet, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(3 * torch.randn(p.shape, generator=g))


def expected_params(arch: MobileArch) -> int:
    """Parameters of a MobileArch counted from the MobileNetV2 block definition (conv weights,
    BN weight + bias), independently of the module code."""
    total = 3 * arch.stem * 9 + 2 * arch.stem
    cin = arch.stem
    for stage in arch.stages:
        for j, kept in enumerate(stage.blocks):
            if not kept:
                continue
            a = cin if j == 0 else stage.width
            hidden = stage.expansion * a
            if stage.expansion != 1:
                total += a * hidden + 2 * hidden
            total += hidden * stage.kernel ** 2 + 2 * hidden
            total += hidden * stage.width + 2 * stage.width
        cin = stage.width
    if arch.head:
        total += cin * arch.head + 2 * arch.head
    return total


# ------------------------------------------------------------------------------ the YAML


def test_the_default_table_is_mobilenetv2_with_the_same_parameters_and_flops():
    arch = MobileConfig().widest(last_stride=2)  # widths 1.0, kernel 3, expansion 6, all blocks
    assert [(s.name, s.width, s.depth, s.stride) for s in arch.stages] == [
        ("s1", 16, 1, 1), ("s2", 24, 2, 2), ("s3", 32, 3, 2), ("s4", 64, 4, 2), ("s5", 96, 3, 1),
        ("s6", 160, 3, 2), ("s7", 320, 1, 1)]
    net = MobileBackbone(arch, last_stride=2)
    reference = torchvision.models.mobilenet_v2(weights=None).features
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in reference.parameters())
    x = torch.zeros(1, 3, 224, 224)
    counts = []
    for model in (net.eval(), reference.eval()):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == arch_flops(arch, (224, 224), 2)
    assert 590e6 < counts[0] < 620e6  # MobileNetV2's ~300M multiply-adds


def test_last_stride_one_keeps_layer4_at_layer3_resolution():
    arch = MobileConfig().widest(last_stride=1)
    shapes = mobile_stage_shapes(arch, (256, 128), last_stride=1)
    assert shapes == {"layer1": (24, 64, 32), "layer2": (32, 32, 16), "layer3": (96, 16, 8),
                      "layer4": (320, 16, 8)}
    out = MobileBackbone(arch, last_stride=1).eval()(torch.zeros(1, 3, 256, 128))
    assert out.shape == (1, 1280, 16, 8)


def test_widths_round_like_make_divisible_and_collisions_are_errors():
    assert [make_divisible(v, 8) for v in (12, 18, 24, 36)] == [16, 24, 24, 40]
    s = load_space(tiny_mobile_space())
    assert s.backbone.mobile.widths(s.backbone.mobile.stages[2]) == [8, 16]
    assert s.position_shape_options() == {"layer3": [(8, 4, 2), (16, 4, 2)],
                                          "layer4": [(12, 4, 2), (24, 4, 2)]}
    with pytest.raises(SpaceError, match=r"stages\[1\]: widths \[0.5, 0.55, 1.0\] of 16 channels "
                                         r"round to \[8, 8, 16\] \(divisor 4\); two options give 8"):
        load_space(space(backbone__mobile__choices__width=[0.5, 0.55, 1.0]))


@pytest.mark.parametrize("changes, message", [
    ({"backbone__mobile__choices__width": [0.0, 1.0]}, r"backbone.mobile.choices.width\[0\]: a width is a fraction"),
    ({"backbone__mobile__choices__expansion": [1, 6]}, r"expansion 1 \(no expansion conv\)"),
    ({"backbone__mobile__choices__kernel": [3, 4]}, r"backbone.mobile.choices.kernel.1"),
    ({"backbone__mobile__stages__1__layer": "layer4"}, r"stages\[2\].layer: 'layer3' comes after 'layer4'"),
    ({"backbone__mobile__stages__3__layer": "layer3"}, r"no stage in layer4"),
    ({"backbone__mobile__stages__2__width": [2.0]}, r"stages\[2\].width\[0\]: a width is a fraction"),
    ({"backbone__mobile__stages__2__bogus": 1}, r"stages\[2\].bogus: unknown field \(allowed: name, layer, channels, blocks, stride, width"),
    ({"backbone__weights": "x.pth"}, r"backbone.weights: mobilenetv2 is searched and trained from scratch"),
])
def test_bad_mobile_fields_are_named(changes, message):
    with pytest.raises(SpaceError, match=message):
        load_space(space(**changes))


def test_a_resnet_takes_no_mobile_section_and_existing_hashes_do_not_move():
    doc = space(backbone={"name": "resnet18", "mobile": {"stem": 8}})
    with pytest.raises(SpaceError, match="backbone.mobile: only a searchable backbone"):
        load_space(doc)
    # the hash of a ResNet space is that of genotypes written before the mobile backbones came
    # (cpu_small as shipped then: ResNet-18 at 64x32); the weights are no part of it
    old_cpu_small = yaml.safe_load(open("search_spaces/cpu_small.yaml"))
    old_cpu_small["input"] = {"height": 64, "width": 32}
    assert load_space(old_cpu_small).canonical_hash() == "08296036666e4d5f"
    old_cpu_small["backbone"]["weights"] = "none"
    assert load_space(old_cpu_small).canonical_hash() == "08296036666e4d5f"
    a, b = load_space(tiny_mobile_space()), load_space(space(backbone__mobile__choices__skip=False))
    assert a.canonical_hash() != b.canonical_hash()


# ------------------------------------------------------------------------------ supernet vs narrow nets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_masked_supernet_in_eval_equals_the_derived_narrow_net_with_copied_weights(seed):
    s = load_space(tiny_mobile_space())
    torch.manual_seed(seed)
    net = Supernet(s, num_classes=4)
    randomise_norms(net, seed)
    set_logits(net, seed)
    genotype = derive_genotype(net)
    arch = genotype.backbone.mobile
    # the derived choices are the argmax of every choice (a block kept unless skip is likelier)
    probs = net.backbone_probabilities()
    for stage in arch.stages:
        opts = net.backbone.options[stage.name]
        for kind in ("width", "kernel", "expansion"):
            key = f"{stage.name}_{kind}"
            if key in probs:
                assert getattr(stage, kind) == opts[kind][int(probs[key].argmax())]
        for j in range(1, len(stage.blocks)):
            p = probs[f"{stage.name}_b{j}_skip"]
            assert stage.blocks[j] == bool(p[0] >= p[1])
    narrow = MobileBackbone(arch, last_stride=1)
    narrow.load_state_dict(narrow_state_dict(net.backbone.state_dict(), narrow.state_dict()))
    bb = net.backbone.eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        draws = bb.draw(net.arch_backbone, 1.0, "gumbel")
        y = x
        for layer in LAYERS:
            y, _ = bb.run_layer(layer, y, draws)
        y = bb.finish(y)
        z = narrow.eval()(x)
    assert y.shape == z.shape
    torch.testing.assert_close(y, z, rtol=1e-5, atol=1e-5)


def test_masking_the_widest_net_to_each_width_matches_the_narrow_net_in_training_mode_too():
    """In training the sampled forward is one narrow network (batch statistics included)."""
    s = load_space(tiny_mobile_space())
    torch.manual_seed(5)
    net = Supernet(s, num_classes=4)
    bb = net.backbone.train()
    x = torch.randn(4, 3, 64, 32)
    for trial in range(3):
        draws = bb.draw(net.arch_backbone, 1.0, "gumbel")
        probs = {k: torch.nn.functional.one_hot(torch.tensor(k_), h.numel()).float()
                 for k, (k_, h) in draws.items()}
        arch = bb.derive_arch(probs)
        narrow = MobileBackbone(arch, last_stride=1).train()
        narrow.load_state_dict(narrow_state_dict(bb.state_dict(), narrow.state_dict()))
        y = x
        for layer in LAYERS:
            y, _ = bb.run_layer(layer, y, draws)
        torch.testing.assert_close(bb.finish(y), narrow(x), rtol=1e-4, atol=1e-5)


def test_inherit_weights_gives_the_supernet_eval_features_when_cells_sit_at_full_width():
    s = load_space(tiny_mobile_space())
    torch.manual_seed(0)
    net = Supernet(s, num_classes=4)
    randomise_norms(net)
    set_logits(net, 11)
    with torch.no_grad():  # the stages before the cells at their widest
        for stage in ("s3", "s4"):
            net.arch_backbone[f"{stage}_width"].copy_(torch.tensor([0.0, 5.0]))
    genotype = derive_genotype(net)
    model = build_model(genotype, num_classes=4)
    inherit_weights(model, net)
    net.eval(), model.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x)["feat_bn"], model(x)["feat_bn"], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        net.arch_backbone["s4_width"].copy_(torch.tensor([5.0, 0.0]))
    narrower = build_model(derive_genotype(net), num_classes=4)
    with pytest.raises(GenotypeError, match="the cell at layer4 is built for 12 channels"):
        inherit_weights(narrower, net)


def test_a_net_built_from_a_genotype_has_exactly_the_expected_parameters_and_is_smaller():
    s = load_space(tiny_mobile_space())
    net = Supernet(s, num_classes=4)
    set_logits(net, 3)
    genotype = derive_genotype(net)
    model = build_model(genotype, num_classes=4)
    arch = genotype.backbone.mobile
    assert sum(p.numel() for p in model.backbone.parameters()) == expected_params(arch)
    widest = s.backbone.mobile.widest(1)
    assert expected_params(arch) < expected_params(widest) == sum(
        p.numel() for p in net.backbone.parameters())
    assert arch_flops(arch, (64, 32), 1) < arch_flops(widest, (64, 32), 1)
    for cell in genotype.cells:  # the cells are built at the chosen widths
        c = genotype.position_shapes()[cell.position][0]
        assert c == next(st.width for st in reversed(arch.stages) if st.layer == cell.position)
    assert model(torch.randn(2, 3, 64, 32))["logits"].shape == (2, 4)


# ------------------------------------------------------------------------------ cost


def test_expected_flops_is_exact_for_one_hot_choices_and_differentiable():
    s = load_space(tiny_mobile_space())
    net = Supernet(s, num_classes=4)
    bb = net.backbone
    set_logits(net, 4)
    probs = {k: torch.nn.functional.one_hot(p.argmax(), p.numel()).double()
             for k, p in net.backbone_probabilities().items()}
    arch = bb.derive_arch({k: v.float() for k, v in probs.items()})
    assert float(bb.expected_flops(probs)) == arch_flops(arch, (64, 32), 1)
    model = CostModel(net, s.schedule.cost)
    cost = model.expected(net)
    cost.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_backbone.values())
    assert all(net.arch[pos].grad.abs().sum() > 0 for pos in ("layer3", "layer4"))
    genotype = derive_genotype(net)
    built = build_model(genotype, num_classes=4).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        built.backbone(torch.zeros(1, 3, 64, 32))
    cells = sum(model.achieved(genotype) for _ in [0]) * 1e6 - counter.get_total_flops()
    assert cells >= 0  # achieved = backbone (FlopCounterMode's count) + cells
    assert model.minimum(net) * 1e6 <= arch_flops(arch, (64, 32), 1) + cells


def test_the_two_loss_forms():
    s = load_space(tiny_mobile_space(cost={"form": "multiplicative", "alpha": 0.2, "beta": 0.6,
                                           "unit": 0.001}))
    net = Supernet(s, num_classes=4)
    model = CostModel(net, s.schedule.cost)
    task, cost = torch.tensor(0.5), torch.tensor(2.0)
    assert float(model.loss(task, cost)) == pytest.approx(0.5 * 0.2 * math.log(2000) ** 0.6)
    additive = CostModel(net, load_space(tiny_mobile_space()).schedule.cost)  # target 0.5, weight 1
    assert float(additive.loss(task, torch.tensor(0.4))) == pytest.approx(0.5)
    assert float(additive.loss(task, torch.tensor(1.0))) == pytest.approx(1.5)
    with pytest.raises(UserError, match=r"cheapest network of this space costs .* lower schedule.cost.unit"):
        CostModel(net, load_space(tiny_mobile_space(cost={"form": "multiplicative"})).schedule.cost).check(net)
    with pytest.raises(SpaceError, match="schedule.cost.target: the additive form"):
        load_space(tiny_mobile_space(cost={"form": "additive"}))


# ------------------------------------------------------------------------------ genotype


def test_genotype_version_2_round_trips_and_version_1_stays_for_resnets():
    s = load_space(tiny_mobile_space())
    net = Supernet(s, num_classes=4)
    set_logits(net, 7)
    genotype = derive_genotype(net)
    text = genotype.to_json()
    doc = json.loads(text)
    assert doc["version"] == 2 and doc["backbone"]["choices"]["stages"][1]["name"] == "s2"
    assert set(doc["backbone_probabilities"]) == {c.key for c in net.backbone.choices}
    assert Genotype.from_json(text, space=s).to_json() == text
    old = copy.deepcopy(doc)
    old["version"] = 1
    with pytest.raises(GenotypeError, match="version 1 has no backbone choices"):
        Genotype.from_dict(old)
    bad = copy.deepcopy(doc)
    bad["backbone"]["choices"]["stages"][1]["blocks"][0] = False
    with pytest.raises(GenotypeError, match=r"backbone.choices: stages\[1\].blocks\[0\]: the first block"):
        Genotype.from_dict(bad)
    resnet = Genotype.from_json("search_spaces/reference/rga_sc.json")
    assert json.loads(resnet.to_json())["version"] == 1
    assert "backbone_probabilities" not in resnet.to_json()
    with_probs = json.loads(resnet.to_json())
    with_probs["backbone_probabilities"] = doc["backbone_probabilities"]
    with pytest.raises(GenotypeError, match="resnet50 is a fixed backbone"):
        Genotype.from_dict(with_probs)


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_mobile_search_logs_cost_and_choices_and_its_genotype_retrains(dataset, tmp_path):
    from nas_reid.train.loop import retrain

    result = search(tiny_mobile_space(), dataset, out_dir=tmp_path / "search", progress=False)
    genotype = Genotype.from_json(result.genotype_path, space=load_space(tiny_mobile_space()))
    assert genotype.backbone.mobile is not None and genotype.version == 2
    epochs = [json.loads(line) for line in (tmp_path / "search" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in epochs if r["kind"] == "epoch"][-1]
    assert set(last["backbone_probs"]) == set(genotype.backbone_probabilities)
    assert last["cost"]["form"] == "additive" and last["cost"]["target"] == 0.5
    assert last["cost"]["achieved"] == pytest.approx(
        CostModel(Supernet(load_space(tiny_mobile_space()), 4), load_space(tiny_mobile_space()).schedule.cost
                  ).achieved(genotype), rel=1e-6)
    assert last["loss"]["arch"]["total"] >= last["loss"]["arch"]["triplet"]
    short = {"epochs": 2, "lr_schedule": {"warmup_epochs": 1}, "batch": {"p": 2, "k": 4}}
    with pytest.raises(UserError, match="searched mobilenetv2 backbone is trained from scratch"):
        retrain(genotype, dataset, recipe="synthetic", overrides=short,  # weights: synthetic
                out_dir=tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    trained = retrain(genotype, dataset, recipe="synthetic",
                      overrides={**short, "backbone": {"weights": "none"}},
                      out_dir=tmp_path / "retrain", progress=False)
    assert trained.results["plain"]["mAP"] > 0
    saved = Genotype.from_json(tmp_path / "retrain" / "genotype.json")
    assert saved.backbone.choices == genotype.backbone.choices
