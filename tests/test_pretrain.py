"""The synthetic pretraining set and the pretrained backbone: determinism, disjointness, the
hash-checked caches, the torchvision key layout, and search / retrain starting from it."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
import yaml

import nas_reid.train.pretrain as pretrain_mod
from nas_reid.data.pretrain_set import PRETRAIN_CONFIG, check_disjoint, ensure_pretrain_set
from nas_reid.data.synthreid import SynthConfig, content_digest, generate_synthreid
from nas_reid.errors import DatasetError, UserError
from nas_reid.train.pretrain import find_pretrained, pretrain, resolve_backbone_weights
from tests.tiny import PRETRAIN_SET, tiny_genotype, tiny_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FROZEN = {"optimizer": {"lr": 1e-12}}  # one step leaves the weights where they started
RESNET18 = tiny_genotype(backbone="resnet18")  # what `nas-reid pretrain` pretrains by default


@pytest.fixture
def tiny_pretraining(tmp_path, monkeypatch):
    """A fresh cache (the session's tiny pretraining set and recipe, conftest.py)."""
    monkeypatch.setenv("NAS_REID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrain_mod, "cache_root", lambda: tmp_path / "cache" / "pretrained")


def _conv_weights(state: dict, prefix: str = "") -> dict:
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix) and "conv" in k and k.endswith("weight")}


def test_the_pretraining_set_is_deterministic(tmp_path):
    a = generate_synthreid(tmp_path / "a", PRETRAIN_SET, workers=1, progress=False)
    b = generate_synthreid(tmp_path / "b", PRETRAIN_SET, workers=2, progress=False)
    assert content_digest(a) == content_digest(b)
    info = json.loads((a / "synthreid.json").read_text())
    assert info["content_sha256"] == content_digest(a)


def test_the_shipped_pretraining_set_shares_no_look_with_the_benchmark():
    check_disjoint(PRETRAIN_CONFIG)  # every identity and distractor of both, all splits
    assert PRETRAIN_CONFIG.seed != SynthConfig().seed
    # the check can fail: the benchmark's own seed draws the benchmark's people
    with pytest.raises(DatasetError, match="not disjoint.*pid"):
        check_disjoint(SynthConfig(ids=40, train_ids=30))


def test_a_modified_pretraining_set_is_rendered_again(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_REID_CACHE", str(tmp_path))
    root = ensure_pretrain_set(PRETRAIN_SET, progress=False)
    image = sorted((root / "bounding_box_train").glob("*.jpg"))[0]
    original = image.read_bytes()
    image.write_bytes(original[:-10])
    again = ensure_pretrain_set(PRETRAIN_SET, progress=False)
    assert again == root and image.read_bytes() == original


def test_pretrain_caches_a_torchvision_state_dict(tiny_pretraining, monkeypatch):
    first = pretrain("resnet18", (64, 32), progress=False)
    state = torch.load(first.path, weights_only=True)
    reference = torchvision.models.resnet18(weights=None)
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    assert first.info["sha256"] == pretrain_mod.file_sha256(first.path)
    assert 0 <= first.info["heldout"]["mAP"] <= 1 and first.info["train_seconds"] > 0
    assert not first.path.parent.with_name(first.path.parent.name + ".run").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached backbone was trained again")

    monkeypatch.setattr("nas_reid.train.loop.retrain", no_training)
    assert pretrain("resnet18", (64, 32), progress=False).path == first.path
    assert find_pretrained("resnet18", (64, 32)).path == first.path
    assert find_pretrained("resnet18", (64, 32), overrides=["seed=1"]) is None  # another key
    with open(first.path, "ab") as handle:  # a modified file is not the pretrained backbone
        handle.write(b"\0")
    assert find_pretrained("resnet18", (64, 32)) is None


def test_retrain_and_search_start_from_the_synthetic_backbone(tiny_pretraining, tmp_path, dataset):
    from nas_reid.search import search
    from nas_reid.train.loop import retrain

    weights = resolve_backbone_weights("synthetic", "resnet18", (64, 32), progress=False)
    expected = _conv_weights(torch.load(weights, weights_only=True))

    retrain(RESNET18, dataset, recipe="synthetic", out_dir=tmp_path / "r",
            overrides={**FROZEN, "epochs": 2, "batch": {"p": 2, "k": 4},
                       "lr_schedule": {"warmup_epochs": 0}},
            max_steps=1, progress=False)
    model = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["model"]
    got = _conv_weights(model, "backbone.")
    assert got.keys() == expected.keys()
    assert all(torch.allclose(got[k], expected[k], atol=1e-9) for k in expected)
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert config["recipe"]["backbone"]["weights"] == "synthetic"
    assert config["train"]["backbone_weights"]["sha256"] == pretrain_mod.file_sha256(weights)

    space = tiny_space(backbone="resnet18", weights={"lr": 1e-12})
    space["backbone"]["weights"] = "synthetic"
    search(space, dataset, out_dir=tmp_path / "s", max_steps=1, progress=False)
    config = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert config["search"]["backbone_weights"]["sha256"] == pretrain_mod.file_sha256(weights)
    ckpt = torch.load(tmp_path / "s" / "checkpoints" / "last.pt", weights_only=True)
    got = _conv_weights(ckpt["model"], "backbone.")
    assert all(torch.allclose(got[k], expected[k], atol=1e-9) for k in expected)


def test_retrain_takes_a_torchvision_file_and_none(tiny_pretraining, tmp_path, dataset, monkeypatch):
    from nas_reid.train.loop import retrain

    torch.manual_seed(11)
    state = torchvision.models.resnet18(weights=None).state_dict()  # with fc, as torchvision saves
    path = tmp_path / "resnet18-imagenet-layout.pth"
    torch.save(state, path)
    common = dict(overrides={**FROZEN, "epochs": 2, "batch": {"p": 2, "k": 4},
                             "lr_schedule": {"warmup_epochs": 0}}, max_steps=1, progress=False)
    retrain(RESNET18, dataset, recipe="synthetic", out_dir=tmp_path / "file",
            backbone_weights=path, **common)
    got = _conv_weights(torch.load(tmp_path / "file" / "checkpoints" / "last.pt",
                                   weights_only=True)["model"], "backbone.")
    expected = _conv_weights(state)
    assert all(torch.allclose(got[k], expected[k], atol=1e-9) for k in expected)

    def no_pretraining(*args, **kwargs):
        raise AssertionError("'none' pretrained a backbone")

    monkeypatch.setattr(pretrain_mod, "pretrain", no_pretraining)
    retrain(RESNET18, dataset, recipe="synthetic", out_dir=tmp_path / "none",
            backbone_weights="none", **common)
    config = yaml.safe_load((tmp_path / "none" / "config.yaml").read_text())
    assert config["train"]["backbone_weights"] == {"spec": "none", "file": None, "sha256": None}


def test_resnet_tiny_is_pretrained_like_any_resnet(tiny_pretraining):
    """The test backbone has no published weights, but ``weights: synthetic`` pretrains it as
    it does ResNet-18, and the file loads into it."""
    from nas_reid.space.backbone import ResNetBackbone

    done = pretrain("resnet_tiny", (64, 32), progress=False)
    loaded = ResNetBackbone("resnet_tiny", 1, weights=done.path)  # raises on another layout
    state = torch.load(done.path, weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    found = resolve_backbone_weights("synthetic", "resnet_tiny", (64, 32), may_train=False)
    assert found == done.path


def test_a_distributed_run_does_not_pretrain(tiny_pretraining):
    with pytest.raises(UserError, match="nas-reid pretrain --backbone resnet18 --size 64x32"):
        resolve_backbone_weights("synthetic", "resnet18", (64, 32), may_train=False)
    assert resolve_backbone_weights(None, "resnet18", (64, 32)) is None
    assert resolve_backbone_weights("none", "resnet18", (64, 32)) is None


def test_the_pretrain_command(tiny_pretraining, run):
    done = run("pretrain", "--size", "64x32", "--threads", "1")
    assert done.exit_code == 0, done.output
    assert "pretraining resnet18 at 64x32" in done.output and "pretrained: " in done.output
    again = run("pretrain", "--size", "64x32")
    assert again.exit_code == 0 and "already pretrained: " in again.output
    assert "pretraining resnet18" not in again.output
    for args, message in ((["--size", "64"], "--size must look like HxW"),
                          (["--size", "20x10"], "too small"),
                          (["--backbone", "mobilenetv2"], "Invalid value for '--backbone'"),
                          *([(["--device", "cuda"], "CUDA is not available")]
                            if not torch.cuda.is_available() else [])):
        bad = run("pretrain", *args)
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output


def test_new_modules_can_train_faster_than_the_pretrained_backbone(tmp_path, dataset):
    from nas_reid.train.loop import retrain

    common = dict(recipe={"name": "t", "epochs": 2, "batch": {"p": 2, "k": 4},
                          "lr_schedule": {"warmup_epochs": 0, "milestones": []}},
                  max_steps=1, progress=False)
    retrain(tiny_genotype(), dataset, out_dir=tmp_path / "one", **common)
    retrain(tiny_genotype(), dataset, out_dir=tmp_path / "mult",
            overrides={"optimizer": {"new_lr_mult": 10.0}}, **common)
    one, mult = (torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)
                 for name in ("one", "mult"))
    groups = mult["training"]["optimizer"]["param_groups"]
    assert len(one["training"]["optimizer"]["param_groups"]) == 1 and len(groups) == 2
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    backbone = sum(1 for k in mult["model"] if k.startswith("backbone.") and "running" not in k
                   and "num_batches" not in k)
    assert len(groups[0]["params"]) == backbone  # the backbone's parameters, and only those
