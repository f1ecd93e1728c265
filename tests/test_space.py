import copy
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from nas_reid.errors import UserError
from nas_reid.ops import build_op
from nas_reid.space import (
    BackboneError,
    MixedOp,
    ResNetBackbone,
    SearchCell,
    SearchSpace,
    SpaceError,
    Supernet,
    cell_edges,
    gumbel_hard_sample,
    load_space,
    stage_shapes,
)
from nas_reid.space.config import OpSpec

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


def small(**changes):
    """A tiny valid space as a dict (ResNet-18, 64x32, cells after layer3/layer4)."""
    d = {
        "name": "tiny",
        "input": {"height": 64, "width": 32},
        "backbone": {"name": "resnet18", "last_stride": 1},
        "cells": {"positions": ["layer3", "layer4"], "nodes": 1, "edges_per_node": 1},
        "ops": ["identity", {"name": "se", "params": {"reduction": 8}},
                {"name": "rga_s", "params": {"s_ratio": 2, "d_ratio": 2}}],
        "sampling": {"strategy": "gumbel", "tau": {"start": 5.0, "end": 0.5}},
    }
    for key, value in changes.items():
        d[key] = value
    return d


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------ the shipped spaces


def test_cpu_small_loads_and_runs_forward_backward():
    space = load_space(SPACES / "cpu_small.yaml")
    assert space.source.endswith("cpu_small.yaml")
    assert space.backbone.name == "resnet18" and space.backbone.last_stride == 1
    assert space.sampling.strategy == "zero_cost" and space.num_subnets() == 49
    # every cell position sees at least 32 positions (8x4), the pretrained backbone is named
    assert space.position_shapes() == {"layer3": (256, 8, 4), "layer4": (512, 8, 4)}
    assert space.backbone.weights == "synthetic"
    torch.manual_seed(0)
    gumbel = load_space({**yaml.safe_load((SPACES / "cpu_small.yaml").read_text()),
                         "sampling": {"strategy": "gumbel"}})  # the DNAS search it also runs
    net = Supernet(gumbel, num_classes=5)  # "synthetic" names no file: nothing is loaded here
    out = net(torch.randn(4, 3, 128, 64))
    assert set(out) == {"feat", "feat_bn", "logits"}
    (out["logits"].sum() + out["feat"].sum()).backward()
    assert all(p.grad is not None for p in net.arch_parameters())


def test_rga_dcs_ca_loads_and_builds():
    space = load_space(SPACES / "rga_dcs_ca.yaml")
    assert space.backbone.name == "resnet50"
    assert space.cells.positions == ["layer1", "layer2", "layer3", "layer4"]
    assert [op.name for op in space.ops] == [
        "identity", "rga_s", "rga_c", "rga_sc", "dcs", "se", "eca", "cbam_c"]
    # the official RGA model's four places (rga_branches.py) at 256x128 with last stride 1
    assert space.position_shapes() == {"layer1": (256, 64, 32), "layer2": (512, 32, 16),
                                       "layer3": (1024, 16, 8), "layer4": (2048, 16, 8)}
    net = Supernet(space, num_classes=3)
    for position, cell in net.cells.items():
        assert cell.shape == space.position_shapes()[position]
        assert net.arch[position].shape == (1, 8)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 256, 128))
    assert out["feat_bn"].shape == (1, 2048) and "logits" not in out


# ------------------------------------------------------------------------------ validation errors


BAD = [
    # (change to the tiny dict, the path the error must name, a word of the message)
    ({"ops": ["identity", "no_such_op"]}, "ops[1].name", "unknown op 'no_such_op'"),
    ({"ops": ["identity", {"name": "rga_s", "params": {"c_ratio": 0}}]},
     "ops[1].params.c_ratio", ">= 1"),
    ({"ops": ["identity", {"name": "se", "params": {"ratio": 4}}]},
     "ops[1].params.ratio", "no parameter 'ratio'"),
    ({"ops": ["identity", {"name": "se", "params": {"reduction": "four"}}]},
     "ops[1].params.reduction", "integer"),
    ({"ops": ["identity", {"name": "se", "params": {"reduction": [4]}}]},
     "ops[1].params.reduction", "number, bool or string"),
    ({"ops": ["identity", {"name": "se", "colour": "red"}]}, "ops[1].colour", "unknown field"),
    ({"ops": ["identity"]}, "ops", "at least 2"),
    ({"ops": ["zero", {"name": "zero", "label": "z2"}]}, "ops", "other than 'zero'"),
    ({"ops": ["identity", "se", {"name": "se", "params": {"reduction": 16}, "label": "se16"}]},
     "ops[2]", "same op and parameters as ops[1]"),
    ({"ops": ["identity", "se", {"name": "se", "params": {"reduction": 4}}]},
     "ops[2].name", "unique label"),
    ({"cells": {"positions": ["layer5"]}}, "cells.positions[0]", "layer1"),
    ({"cells": {"positions": ["layer3", "layer3"]}}, "cells.positions[1]", "listed twice"),
    ({"cells": {"positions": ["layer4", "layer3"]}}, "cells.positions", "network order"),
    ({"cells": {"positions": ["layer3"], "nodes": 2, "edges_per_node": 3}},
     "cells.edges_per_node", "more than cells.nodes"),
    ({"cells": {"positions": ["layer3"], "nodes": "2"}}, "cells.nodes", "integer"),
    ({"backbone": {"name": "resnet34"}}, "backbone.name", "resnet34"),
    ({"backbone": {"name": "resnet18", "last_stride": 3}}, "backbone.last_stride", "3"),
    ({"input": {"height": 64}}, "input.width", "missing"),
    ({"input": {"height": 63, "width": 32}}, "input", "63x32 is not divisible by 16"),
    ({"input": {"height": 48, "width": 32}, "backbone": {"name": "resnet18", "last_stride": 2}},
     "input", "48x32 is not divisible by 32, the total stride of resnet18 with last_stride 2"),
    ({"sampling": {"strategy": "dirichlet"}}, "sampling.strategy", "dirichlet"),
    ({"sampling": {"tau": {"start": -1.0}}}, "sampling.tau.start", "greater than 0"),
    ({"schedule": {"epochs": 3, "warmup_epochs": 3}}, "schedule.warmup_epochs", "no architecture epoch"),
    ({"schedule": {"arch": {"betas": [0.5]}}}, "schedule.arch.betas", "at least 2"),
    ({"schedule": {"heldout_fraction": 1.5}}, "schedule.heldout_fraction", "less than 1"),
    ({"schedule": {"loss": {"rib_beta": 0}}}, "schedule.loss.rib_beta", "greater than 0"),
    ({"sampeling": {"strategy": "gumbel"}}, "sampeling",
     "unknown field; did you mean 'sampling'? (allowed: name, input"),
]


@pytest.mark.parametrize("change,path,words", BAD, ids=[b[1] + ":" + b[2][:12] for b in BAD])
def test_validation_error_names_the_field_and_file(tmp_path, change, path, words):
    data = small(**change)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpaceError) as info:
        load_space(file)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert str(file) in message
    assert f"{path}:" in message or f"{path} " in message, message
    assert words in message, message


def test_missing_required_top_level_field():
    data = small()
    del data["backbone"]
    with pytest.raises(SpaceError, match=r"<dict>: backbone: required field is missing"):
        load_space(data)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, """\
        name: broken
        input: {height: 64, width: 32
        backbone: {name: resnet18}
        """)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(path) in str(info.value) and "not valid YAML at line" in str(info.value)


@pytest.mark.parametrize("text,words", [("", "an empty file"), ("- a\n- b\n", "a list")])
def test_yaml_that_is_not_a_mapping(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError, match=words):
        load_space(path)


def test_missing_file(tmp_path):
    with pytest.raises(SpaceError, match="no such file"):
        load_space(tmp_path / "nope.yaml")


def test_several_errors_are_all_listed():
    data = small(backbone={"name": "resnet34"}, sampling={"strategy": "x"})
    with pytest.raises(SpaceError) as info:
        load_space(data)
    assert "backbone.name" in str(info.value) and "sampling.strategy" in str(info.value)


def test_shorthand_labels_and_defaults():
    space = load_space(small())
    assert space.labels == ["identity", "se", "rga_s"]
    assert space.ops[1].full_params() == {"reduction": 8}
    assert space.schedule.arch.lr == 3e-4 and space.schedule.arch.betas == [0.5, 0.999]
    assert space.schedule.arch.weight_decay == 1e-3 and space.schedule.heldout_fraction == 0.5
    assert space.cells.edges_per_node == 1 and space.backbone.weights is None
    resolved = space.resolved()
    assert load_space(resolved).canonical_hash() == space.canonical_hash()
    assert isinstance(space, SearchSpace) and load_space(space) is space


# ------------------------------------------------------------------------------ canonical hash


def test_hash_stable_under_key_order_and_formatting(tmp_path):
    flow = write(tmp_path, """\
        # a comment
        name: tiny
        input: {height: 64, width: 32}
        backbone: {name: resnet18, last_stride: 1}
        cells: {positions: [layer3, layer4], nodes: 1, edges_per_node: 1}
        ops: [identity, {name: se, params: {reduction: 8}}, {name: rga_s, params: {s_ratio: 2, d_ratio: 2}}]
        sampling: {strategy: gumbel, tau: {start: 5.0, end: 0.5}}
        """, "flow.yaml")
    block = write(tmp_path, """\
        sampling:
          tau:
            end: 0.5
            start: 5.0
          strategy: gumbel
        ops:
          - name: identity
          - params:
              reduction: 8
            name: se
          - name: rga_s
            params: {d_ratio: 2, s_ratio: 2, c_ratio: 8}   # c_ratio 8 is the default
        cells:
          positions:
            - layer3
            - layer4
        backbone:
          name: resnet18
        input:
          width: 32
          height: 64
        name: tiny
        """, "block.yaml")
    h = load_space(flow).canonical_hash()
    assert len(h) == 16 and int(h, 16) >= 0
    assert load_space(block).canonical_hash() == h == load_space(small()).canonical_hash()


def test_hash_changes_with_the_architecture_space():
    base = load_space(small()).canonical_hash()
    ops = small()["ops"]
    changed = [
        small(ops=[ops[0], {"name": "se", "params": {"reduction": 4}}, ops[2]]),
        small(ops=[ops[1], ops[0], ops[2]]),
        small(ops=ops + ["eca"]),
        small(input={"height": 128, "width": 64}),
        small(backbone={"name": "resnet18", "last_stride": 2}),
        small(cells={"positions": ["layer4"]}),
        small(cells={"positions": ["layer3", "layer4"], "nodes": 2}),
    ]
    hashes = [load_space(d).canonical_hash() for d in changed]
    assert base not in hashes and len(set(hashes)) == len(hashes)


def test_hash_ignores_schedule_sampling_name_labels_and_weights():
    base = load_space(small()).canonical_hash()
    ops = copy.deepcopy(small()["ops"])
    ops[1]["label"] = "se8"
    same = [
        small(schedule={"epochs": 7, "warmup_epochs": 1, "seed": 3, "skip_cap": 0}),
        small(sampling={"strategy": "softmax"}),
        small(name="renamed"),
        small(ops=ops),
        small(backbone={"name": "resnet18", "weights": "/somewhere/r18.pth"}),
    ]
    assert all(load_space(d).canonical_hash() == base for d in same)



def test_the_space_file_is_two_schemas_the_architecture_hashed_and_the_strategy_not():
    """Every top-level field of a space is architecture (``canonical()`` covers it; ``name``
    only names it) or strategy (``sampling`` / ``schedule``, typed by nas_reid.space.strategy);
    the loss, optimizer and batch settings are the ones a retrain's recipe subclasses."""
    from nas_reid.engine import schema
    from nas_reid.space import strategy
    from nas_reid.space.config import SearchSpace
    from nas_reid.train.recipe import Recipe

    fields = SearchSpace.model_fields
    hashed = set(load_space(small()).canonical()) - {"hash_version"}
    strategy_fields = {k for k, f in fields.items() if f.annotation.__module__ == strategy.__name__}
    assert strategy_fields == {"sampling", "schedule"}
    assert set(fields) == hashed | strategy_fields | {"name"}
    schedule = strategy.ScheduleConfig.model_fields
    recipe = Recipe.model_fields
    for key, base in (("loss", schema.LossConfig), ("batch", schema.BatchConfig)):
        assert issubclass(schedule[key].annotation, base) and issubclass(recipe[key].annotation, base)
    assert issubclass(schedule["weights"].annotation, schema.OptimizerConfig)
    assert issubclass(recipe["optimizer"].annotation, schema.OptimizerConfig)

def test_tau_schedules():
    space = load_space(small(sampling={"tau": {"start": 8.0, "end": 0.5, "schedule": "linear"}}))
    tau = space.sampling.tau
    assert tau.at(0) == 8.0 and tau.at(1) == 0.5 and tau.at(0.5) == pytest.approx(4.25)
    assert tau.at(2) == 0.5 and tau.at(-1) == 8.0
    exp = load_space(small(sampling={"tau": {"start": 8.0, "end": 0.5, "schedule": "exponential"}}))
    assert exp.sampling.tau.at(0.5) == pytest.approx(2.0) and exp.sampling.tau.at(1) == pytest.approx(0.5)
    const = load_space(small(sampling={"tau": {"start": 2.0, "schedule": "constant"}}))
    assert const.sampling.tau.at(0.7) == 2.0
    # by epoch: start through the warm-up and in the first architecture epoch, end in the last
    assert [tau.at_epoch(e, 12, 2) for e in range(12)] == pytest.approx(
        [8.0, 8.0] + [8.0 - 7.5 * k / 9 for k in range(10)])  # 9 steps from epoch 2 to 11
    assert tau.at_epoch(11, 12, 2) == 0.5 and tau.at_epoch(0, 1) == 0.5  # one epoch: the last
    assert [tau.at_epoch(e, 3, 2) for e in range(3)] == [8.0, 8.0, 0.5]


# ------------------------------------------------------------------------------ backbone


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet_tiny"])
@pytest.mark.parametrize("hw", [(64, 32), (256, 128)])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_stage_shapes_match_a_forward(name, hw, last_stride):
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        backbone = ResNetBackbone(name, last_stride).eval()
        x = torch.zeros(1, 3, *hw)
    shapes = backbone.stage_shapes(hw)
    with torch.no_grad():
        x = backbone.stem(x)
        for position in ("layer1", "layer2", "layer3", "layer4"):
            x = backbone.stage(position)(x)
            assert tuple(x.shape[1:]) == shapes[position], (position, x.shape)
    h, w = hw
    last = (h // 16, w // 16) if last_stride == 1 else (h // 32, w // 32)
    assert shapes["layer4"][1:] == last
    assert shapes["layer1"][1:] == (h // 4, w // 4)


def test_stage_shapes_table():
    assert stage_shapes("resnet18", (64, 32), 1) == {
        "layer1": (64, 16, 8), "layer2": (128, 8, 4), "layer3": (256, 4, 2), "layer4": (512, 4, 2)}
    assert stage_shapes("resnet50", (256, 128), 2)["layer4"] == (2048, 8, 4)
    assert stage_shapes("resnet18", (70, 30), 1)["layer3"] == (256, 5, 2)  # ceil halving
    with pytest.raises(BackboneError, match="unknown backbone"):
        stage_shapes("vgg16", (64, 32))


def test_resnet_tiny_is_resnet18_with_one_block_per_stage_a_quarter_as_wide(tmp_path):
    """The test backbone: ResNet-18's module names, strides and stage sizes (one block per
    stage), a quarter of its channels; its state_dicts load back; spaces and genotypes name it."""
    assert stage_shapes("resnet_tiny", (64, 32), 1) == {
        "layer1": (16, 16, 8), "layer2": (32, 8, 4), "layer3": (64, 4, 2), "layer4": (128, 4, 2)}
    tiny, r18 = ResNetBackbone("resnet_tiny", 1), ResNetBackbone("resnet18", 1)
    first_blocks = {k: v for k, v in r18.state_dict().items() if k.split(".")[1:2] != ["1"]}
    assert tiny.state_dict().keys() == first_blocks.keys()
    for key, value in tiny.state_dict().items():
        quarter = [n if i >= 2 or n == 3 else n // 4  # channels out / in, but RGB and kernels
                   for i, n in enumerate(first_blocks[key].shape)]
        assert list(value.shape) == quarter, key
    assert tiny.out_channels == 128 and tiny.layer4[0].conv1.stride == (1, 1)
    assert ResNetBackbone("resnet_tiny", 2).layer4[0].downsample[0].stride == (2, 2)
    size = {net: sum(p.numel() for p in net.parameters()) for net in (tiny, r18)}
    assert size[tiny] < 0.03 * size[r18]

    torch.save(tiny.state_dict(), tmp_path / "tiny.pth")
    loaded = ResNetBackbone("resnet_tiny", 1, weights=tmp_path / "tiny.pth")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tiny.state_dict().items())
    with pytest.raises(BackboneError, match="does not match a torchvision resnet18"):
        ResNetBackbone("resnet18", 1, weights=tmp_path / "tiny.pth")

    space = load_space(small(backbone={"name": "resnet_tiny"}))  # ops checked at 64, 128 channels
    assert space.canonical_hash() != load_space(small()).canonical_hash()
    out = Supernet(space, num_classes=3)(torch.randn(4, 3, 64, 32))
    assert out["feat"].shape == (4, 128) and out["logits"].shape == (4, 3)


def _torchvision_state(name, seed=0):
    import torchvision

    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).state_dict()


def test_local_weights_load(tmp_path):
    state = _torchvision_state("resnet18")  # includes fc.weight / fc.bias: ignored
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    backbone = ResNetBackbone("resnet18", 1, weights=path)
    own = backbone.state_dict()
    assert torch.equal(own["conv1.weight"], state["conv1.weight"])
    assert torch.equal(own["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    # old checkpoints have no num_batches_tracked buffers: tolerated
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    ResNetBackbone("resnet18", 1, weights=tmp_path / "old.pth")


def test_space_weights_path_is_relative_to_the_yaml(tmp_path):
    (tmp_path / "models").mkdir()
    state = _torchvision_state("resnet18", seed=3)
    torch.save(state, tmp_path / "models" / "r18.pth")
    data = small(backbone={"name": "resnet18", "weights": "models/r18.pth"})
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    space = load_space(path)
    assert space.backbone.weights == str(tmp_path / "models" / "r18.pth")
    net = Supernet(space, num_classes=3)
    assert torch.equal(net.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert not torch.equal(Supernet(space, 3, load_weights=False).backbone.conv1.weight,
                           state["conv1.weight"])


def test_bad_weights_files(tmp_path):
    torch.save(_torchvision_state("resnet50"), tmp_path / "r50.pth")
    with pytest.raises(BackboneError) as info:
        ResNetBackbone("resnet18", 1, weights=tmp_path / "r50.pth")
    message = str(info.value)
    assert "r50.pth" in message and "does not match a torchvision resnet18" in message
    assert "unexpected keys: layer1.0.bn3" in message and "shape mismatch" in message

    with pytest.raises(BackboneError, match="no such file"):
        ResNetBackbone("resnet18", 1, weights=tmp_path / "none.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(BackboneError, match="expected a state_dict"):
        ResNetBackbone("resnet18", 1, weights=tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(BackboneError, match="cannot be read as a torch state_dict"):
        ResNetBackbone("resnet18", 1, weights=tmp_path / "text.pth")
    partial = {k: v for k, v in _torchvision_state("resnet18").items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(BackboneError, match="missing keys: layer4"):
        ResNetBackbone("resnet18", 1, weights=tmp_path / "partial.pth")


# ------------------------------------------------------------------------------ mixed ops


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def _candidates(names=("identity", "se", "zero", "eca", "conv_bn_relu"), c=8, h=4, w=2):
    torch.manual_seed(0)
    return [Counting(build_op(n, c, h, w)) for n in names], list(names)


def test_softmax_mixed_op_is_the_weighted_sum():
    ops, names = _candidates()
    mixed = MixedOp(ops, names, "softmax")
    x = torch.randn(3, 8, 4, 2)
    alpha = torch.tensor([0.3, -1.0, 2.0, 0.5, 0.1], requires_grad=True)
    out = mixed(x, alpha)
    w = torch.softmax(alpha.detach(), 0)
    expected = sum(w[i] * ops[i].inner(x) for i in range(5) if names[i] != "zero")
    assert torch.allclose(out, expected, atol=1e-6)
    assert ops[2].calls == 0  # zero is skipped
    assert all(ops[i].calls >= 1 for i in (0, 1, 3, 4))
    out.sum().backward()
    assert alpha.grad is not None and torch.all(alpha.grad != 0)


def test_gumbel_mixed_op_runs_exactly_one_candidate_and_alpha_gets_gradient():
    names = ("identity", "se", "eca", "conv_bn_relu")
    ops, names = _candidates(names)
    mixed = MixedOp(ops, names, "gumbel").train()
    alpha = nn.Parameter(torch.tensor([0.2, 0.0, -0.3, 0.1]))
    x = torch.randn(3, 8, 4, 2)
    torch.manual_seed(1)
    picks = Counter()
    for _ in range(40):
        before = [op.calls for op in ops]
        out = mixed(x, alpha, tau=2.0)
        ran = [i for i, op in enumerate(ops) if op.calls != before[i]]
        assert ran == [mixed.last_choice] and ops[ran[0]].calls == before[ran[0]] + 1
        assert torch.equal(out, ops[ran[0]].inner(x))  # exactly the sampled op's output
        picks[ran[0]] += 1
        alpha.grad = None
        out.sum().backward()
        assert alpha.grad is not None and torch.isfinite(alpha.grad).all()
        if names[ran[0]] == "identity":  # the input stands in for the others: nothing to compare
            # zero in exact arithmetic; float32 rounding of the sums of x (measured <= 3e-8
            # here), bounded relative to their size: 8 eps32 sum|x| ~ 1.4e-4, 700x below the
            # ~0.1 of the other candidates' gradients
            assert alpha.grad.abs().max() <= 8 * torch.finfo(x.dtype).eps * x.abs().sum()
        else:
            assert torch.all(alpha.grad != 0)
    assert len(picks) >= 3  # it samples, not argmax


def test_gumbel_alpha_gradient_survives_a_scale_invariant_downstream():
    # After a cell come BatchNorms, which cancel any rescaling of its output. GDAS's single-term
    # form h_k * op_k(x) only carries the effect of such a rescaling, so alpha got ~1e-8 there;
    # with the input standing in for the candidates not run, it compares op_k(x) with x.
    ops, names = _candidates(("identity", "se", "conv_bn_relu"))
    mixed = MixedOp(ops, names, "gumbel").train()
    x = torch.randn(4, 8, 4, 2)
    target = torch.randn(4, 8 * 4 * 2)
    alpha = nn.Parameter(torch.tensor([-20.0, 0.0, 0.0]))  # identity never drawn
    torch.manual_seed(0)
    for _ in range(6):
        alpha.grad = None
        out = mixed(x, alpha, tau=1.0)
        loss = (F.normalize(out.flatten(1), dim=1) * target).sum()  # invariant to out's scale
        loss.backward()
        assert alpha.grad[1:].abs().max() > 1e-3
        # same draw in GDAS's form: the gradient is the scale effect only, i.e. zero
        chosen = ops[mixed.last_choice].inner(x)
        h = nn.Parameter(torch.ones(()))
        (F.normalize((h * chosen).flatten(1), dim=1) * target).sum().backward()
        # zero in exact arithmetic: float32 rounding (1.2e-7 measured), bounded by the size of
        # the terms it sums, 8 eps32 sum|target| ~ 2e-4
        assert abs(float(h.grad)) <= 8 * torch.finfo(x.dtype).eps * float(target.abs().sum())


def test_gumbel_eval_uses_argmax_and_zero_is_not_run():
    ops, names = _candidates(("identity", "se", "zero"))
    mixed = MixedOp(ops, names, "gumbel")
    x = torch.randn(2, 8, 4, 2)
    mixed.eval()
    out = mixed(x, torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(out, ops[1].inner(x)) and ops[0].calls == 0 and ops[2].calls == 0
    out = mixed(x, torch.tensor([0.0, 1.0, 3.0]))
    assert torch.equal(out, torch.zeros_like(x)) and ops[2].calls == 0
    mixed.train()
    alpha = nn.Parameter(torch.tensor([-30.0, -30.0, 30.0]))  # zero is (almost surely) sampled
    out = mixed(x, alpha)
    assert mixed.last_choice == 2 and ops[2].calls == 0 and torch.equal(out, torch.zeros_like(x))
    out.sum().backward()
    assert alpha.grad is not None  # still in the graph


def test_gumbel_samples_follow_softmax_alpha():
    alpha = torch.tensor([1.0, 0.0, -1.0])
    torch.manual_seed(0)
    counts = Counter(gumbel_hard_sample(alpha, 0.5)[0] for _ in range(3000))
    p = torch.softmax(alpha, 0)
    for k in range(3):
        assert abs(counts[k] / 3000 - float(p[k])) < 0.04
    k, hard = gumbel_hard_sample(alpha, 1.0)
    assert hard[k].item() == 1.0 and float(hard.sum()) == pytest.approx(1.0)


def test_cell_dag_matches_hand_computation():
    specs = [OpSpec(name="identity"), OpSpec(name="se", params={"reduction": 2}), OpSpec(name="zero")]
    torch.manual_seed(0)
    cell = SearchCell(specs, 8, 4, 2, nodes=2, strategy="softmax")
    assert cell.edge_list == cell_edges(2) == [(0, 1), (0, 2), (1, 2)]
    alpha = torch.randn(3, 3)
    x = torch.randn(2, 8, 4, 2)
    w = torch.softmax(alpha, -1)

    def edge(e, inp):
        return w[e, 0] * inp + w[e, 1] * cell.edges[e].candidates[1](inp)

    n1 = edge(0, x)
    n2 = edge(1, x) + edge(2, n1)
    assert torch.allclose(cell(x, alpha), n2, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        cell(x, torch.zeros(2, 3))


# ------------------------------------------------------------------------------ supernet


def test_arch_and_weight_parameters_are_disjoint_and_complete():
    torch.manual_seed(0)
    net = Supernet(load_space(small(cells={"positions": ["layer3", "layer4"], "nodes": 2})), 7)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    every = {id(p) for p in net.parameters()}
    assert arch and weights and not (arch & weights) and arch | weights == every
    assert [n for n, _ in net.named_arch_parameters()] == ["arch.layer3", "arch.layer4"]
    assert all(p.shape == (3, 3) for p in net.arch_parameters())  # 3 edges x 3 candidates
    assert all(p.abs().max() < 0.01 for p in net.arch_parameters())
    state = net.state_dict()
    assert "arch.layer3" in state and "tau" in state
    probs = net.arch_probabilities()
    assert set(probs) == {"layer3", "layer4"}
    assert torch.allclose(probs["layer3"].sum(-1), torch.ones(3))


def test_supernet_forward_head_and_input_check():
    torch.manual_seed(0)
    net = Supernet(load_space(small()), 6)
    out = net(torch.randn(4, 3, 64, 32))
    assert out["feat"].shape == (4, 512) and out["feat_bn"].shape == (4, 512)
    assert out["logits"].shape == (4, 6)
    head = net.head
    assert head.classifier.bias is None and not head.bottleneck.bias.requires_grad
    assert head.classifier.weight.std().item() == pytest.approx(0.001, rel=0.2)
    net.eval()
    assert set(net(torch.randn(2, 3, 64, 32))) == {"feat", "feat_bn"}
    with pytest.raises(SpaceError, match=r"built for input images of 3x64x32.*\(2, 3, 128, 64\)"):
        net(torch.randn(2, 3, 128, 64))


def test_temperature():
    net = Supernet(load_space(small()), 2)
    assert net.temperature == 5.0
    net.set_temperature(0.25)
    assert net.temperature == 0.25 and net.state_dict()["tau"].item() == 0.25
    for bad in (0, -1.0, float("nan"), "1"):
        with pytest.raises(SpaceError, match="temperature"):
            net.set_temperature(bad)


def test_yaml_reads_exponents_without_a_dot_and_int_for_float_params(tmp_path):
    path = write(tmp_path, """\
        name: tiny
        input: {height: 64, width: 32}
        backbone: {name: resnet18}
        cells: {positions: [layer4]}
        ops: [identity, {name: dcs, params: {tau: 1}}]
        schedule: {arch: {lr: 3e-4, weight_decay: 1E-3}}
        """)
    space = load_space(path)
    assert space.schedule.arch.lr == 3e-4 and space.schedule.arch.weight_decay == 1e-3
    assert space.ops[1].full_params()["tau"] == 1.0 and isinstance(space.ops[1].full_params()["tau"], float)
    other = write(tmp_path, path.read_text().replace("tau: 1}", "tau: 1.0}"), "other.yaml")
    assert "tau: 1.0}" in other.read_text()
    assert load_space(other).canonical_hash() == space.canonical_hash()
