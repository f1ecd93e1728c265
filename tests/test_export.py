"""Export of model checkpoints to ONNX and TorchScript (nas_reid.train.export).

Genotypes on the ``resnet_tiny`` backbone at 64x32 cover every op family; BatchNorm statistics
and DCS mask weights are randomised so that no op is the identity it is at initialisation. Each
(genotype, format) pair is exported once per module and reused by the tests.
"""

import io
import json
import os
import sys

import pytest
import torch

from nas_reid import __version__
from nas_reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype
from nas_reid.ops.dcs import DCSAttention, DCSWindowAttention, dcs_keep_ratios
from nas_reid.space.discrete import build_model
from nas_reid.train import export as export_module
from nas_reid.train.checkpoint import (
    ModelCheckpointError,
    load_model,
    model_state,
    save_model_checkpoint,
)
from nas_reid.train.export import (
    ExportError,
    ExportResult,
    export_model,
    read_export_metadata,
)

# torch.jit (load, script, save) is deprecated in torch 2.14 and says so on every call
pytestmark = [pytest.mark.filterwarnings(r"ignore:`torch\.jit\.:FutureWarning"),
              pytest.mark.usefixtures("one_torch_thread")]

H, W = 64, 32
BACKBONE, FEATURES = "resnet_tiny", 128  # the backbone and its layer4 channels: the feature size
RGA = {"c_ratio": 8, "s_ratio": 2, "d_ratio": 2}


def edge(source, target, op, **params):
    return {"source": source, "target": target, "op": op, "params": params}


def cell(position, nodes, *edges):
    return {"position": position, "nodes": nodes, "edges": list(edges)}


GENOTYPES = {
    "baseline": [],
    "rga": [cell("layer3", 2, edge(0, 1, "rga_s", **RGA), edge(1, 2, "rga_c", **RGA)),
            cell("layer4", 1, edge(0, 1, "rga_sc", **RGA))],
    "dcs": [cell("layer3", 1, edge(0, 1, "dcs", variant="mask")),
            cell("layer4", 1, edge(0, 1, "dcs", variant="window"))],
    "channel": [cell("layer1", 2, edge(0, 1, "conv_bn_relu"), edge(0, 2, "identity"),
                     edge(1, 2, "mbconv", expansion=3)),
                cell("layer2", 2, edge(0, 1, "se", reduction=8), edge(1, 2, "sep_conv")),
                cell("layer3", 1, edge(0, 1, "eca")),
                cell("layer4", 1, edge(0, 1, "cbam_c", reduction=8))],
}
FORMATS = ["onnx", "torchscript"]


def genotype(name):
    return Genotype.from_dict({
        "schema": "nas-reid/genotype", "version": 1,
        "space": {"name": None, "hash": None},
        "input": {"height": H, "width": W},
        "backbone": {"name": BACKBONE, "last_stride": 1, "choices": {}},
        "cells": GENOTYPES[name],
    })


@torch.no_grad()
def randomise(model, seed):
    """Non-trivial BatchNorm statistics and affine parameters everywhere (DCS's BN starts at
    gamma = 0, i.e. the op is the identity), and DCS mask weights that drop some channels."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t, low, high):
        t.copy_(low + (high - low) * torch.rand(t.shape, generator=g))

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            uniform(module.running_mean, -0.1, 0.1)
            uniform(module.running_var, 0.5, 1.5)
            uniform(module.weight, 0.5, 1.5)
            uniform(module.bias, -0.1, 0.1)
        if isinstance(module, DCSAttention):
            module.mask_fc.weight.copy_(0.2 * torch.randn(module.mask_fc.weight.shape, generator=g))
        if isinstance(module, DCSWindowAttention):
            module.set_window(start=3.4, length=0.6 * module.channels + 0.3)


def save_checkpoint(path, name, seed=0):
    torch.manual_seed(seed)
    model = build_model(genotype(name), num_classes=7).eval()
    randomise(model, seed)
    state = model_state(model, num_classes=7, epoch=3, data={"name": "synth", "root": "x"},
                        metrics={"mAP": 0.5, "R1": 0.6})
    return save_model_checkpoint(path, state)


def leftovers(folder):
    """Hidden or temporary files (what an interrupted atomic write would leave)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def batch(n, seed):
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


def close(got, expected, rtol=1e-4):
    got = torch.as_tensor(got)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= rtol * expected.abs().max() + 1e-5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    return {name: save_checkpoint(folder / f"{name}.pt", name, seed=i)
            for i, name in enumerate(GENOTYPES)}


@pytest.fixture(scope="module")
def exported(checkpoints):
    """(genotype, format) -> ExportResult, each exported on first use (check on)."""
    cache = {}

    def get(name, fmt):
        if fmt == "onnx":
            pytest.importorskip("onnxruntime")
        if (name, fmt) not in cache:
            cache[name, fmt] = export_model(checkpoints[name], fmt)
        return cache[name, fmt]

    return get


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(GENOTYPES))
def test_exported_features_match_pytorch(exported, checkpoints, name, fmt):
    result = exported(name, fmt)
    ckpt = checkpoints[name]
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    assert isinstance(result, ExportResult)
    assert result.path == ckpt.with_name(ckpt.stem + suffix) and result.path.is_file()
    assert result.format == fmt and result.input_size == (H, W) and result.feature_dim == FEATURES
    assert result.checked_batches == (3, 1)
    assert result.max_abs_diff >= 0.0 and result.seconds > 0  # within tolerance, or it raised
    assert result.opset == (17 if fmt == "onnx" else None)
    assert leftovers(ckpt.parent) == []

    model = load_model(ckpt).model
    for n in (1, 3):
        images = batch(n, seed=10 + n)
        with torch.no_grad():
            expected = model(images)["feat_bn"]
        if fmt == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
            (inp,), (out,) = session.get_inputs(), session.get_outputs()
            assert (inp.name, out.name) == ("images", "features")
            assert inp.shape == ["batch", 3, H, W] and out.shape == ["batch", FEATURES]
            got = session.run(None, {"images": images.numpy()})[0]
        else:
            ts = torch.jit.load(str(result.path), map_location="cpu")
            with torch.no_grad():
                got = ts(images)
        close(got, expected)


def test_test_models_exercise_their_ops(checkpoints):
    """The DCS mask keeps some channels and drops others, and every cell changes the output."""
    model = load_model(checkpoints["dcs"]).model
    with torch.no_grad():
        model(batch(2, seed=0))
    ratios = dcs_keep_ratios(model)
    mask_ratio = ratios["cells.layer3.ops.e0_1"]
    assert 0.05 < mask_ratio < 0.95
    for name in ("rga", "dcs", "channel"):
        net = load_model(checkpoints[name]).model
        state = {k: v for k, v in net.state_dict().items() if not k.startswith("cells.")}
        plain = build_model(genotype("baseline"), 7).eval()
        plain.load_state_dict(state)
        images = batch(2, seed=1)
        with torch.no_grad():
            assert not torch.allclose(net(images)["feat_bn"], plain(images)["feat_bn"], atol=1e-3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_carries_genotype_and_preprocessing(exported, checkpoints, fmt):
    result = exported("rga", fmt)
    meta = read_export_metadata(result.path)
    assert meta == result.metadata
    assert Genotype.from_json(meta["nas_reid.genotype"]) == genotype("rga")
    assert meta["nas_reid.format"] == fmt
    assert meta["nas_reid.version"] == __version__
    assert meta["nas_reid.export_version"] == "1"
    assert (meta["nas_reid.input_height"], meta["nas_reid.input_width"]) == (str(H), str(W))
    assert json.loads(meta["nas_reid.mean"]) == list(IMAGENET_MEAN)
    assert json.loads(meta["nas_reid.std"]) == list(IMAGENET_STD)
    assert meta["nas_reid.feature"] == "feat_bn" and meta["nas_reid.feature_dim"] == str(FEATURES)
    assert (meta["nas_reid.input_name"], meta["nas_reid.output_name"]) == ("images", "features")
    # the same values through each format's own reader
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
        assert props["nas_reid.genotype"] == genotype("rga").to_json()
    else:
        extra = {"nas_reid.genotype": ""}
        torch.jit.load(str(result.path), map_location="cpu", _extra_files=extra)
        assert extra["nas_reid.genotype"].decode() == genotype("rga").to_json()


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_model_rejects_other_image_sizes(exported, fmt):
    path = exported("baseline", fmt).path
    wrong = torch.randn(1, 3, H // 2, W).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with pytest.raises(Exception, match="(?i)dimension"):
            session.run(None, {"images": wrong})
    else:
        ts = torch.jit.load(str(path), map_location="cpu")
        with pytest.raises(Exception, match=rf"\(N, 3, {H}, {W}\)"):
            ts(torch.from_numpy(wrong))


def test_run_folder_default_output_folder_out_and_opset(tmp_path):
    pytest.importorskip("onnx")
    run = tmp_path / "run"
    last = save_checkpoint(run / "checkpoints" / "last.pt", "baseline")
    os.link(last, run / "checkpoints" / "best.pt")  # whichever of the two a run folder stands for
    result = export_model(run, "torchscript", check=False)
    stem = result.path.name.split(".")[0]
    assert result.path == run / "checkpoints" / f"{stem}.torchscript.pt" and stem in ("last", "best")
    assert result.max_abs_diff is None and result.checked_batches == ()
    out = tmp_path / "exports"
    out.mkdir()
    logging = getattr(torch._C, "_jit_is_onnx_log_enabled", lambda: False)
    was_logging = logging()
    result = export_model(run, "onnx", out, opset=13, check=False)
    assert result.path == out / f"{stem}.onnx" and result.opset == 13
    assert logging() == was_logging  # torch's exporter switches its C++ log on; put back
    import onnx

    model = onnx.load(str(result.path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("content", ["garbage", "foreign"])
def test_not_a_model_checkpoint(tmp_path, content):
    path = tmp_path / "x.pt"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"kind": "something/else", "version": 1}, path)
    with pytest.raises(ModelCheckpointError) as info:
        export_model(path, "torchscript")
    assert isinstance(info.value, UserError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]
    with pytest.raises(ModelCheckpointError, match="no checkpoint"):
        export_model(tmp_path / "missing.pt", "torchscript")


@pytest.mark.parametrize("change, words", [
    ("genotype", "missing: cells.layer3.ops.e0_1.theta.0.weight, cells.layer3.ops.e0_1.theta.1.weight, "
                 "cells.layer3.ops.e0_1.theta.1.bias and 141 more)"),
    ("num_classes", f"other shape: head.classifier.weight [7, {FEATURES}] (the network's: "
                    f"[9, {FEATURES}])"),
    ("extra", "unexpected: extra.weight"),
])
def test_weights_that_do_not_fit_the_genotype_name_the_first_keys(tmp_path, change, words):
    from nas_reid.train.checkpoint import load_model

    path = save_checkpoint(tmp_path / "m.pt", "baseline")
    state = torch.load(path, weights_only=True)
    if change == "genotype":
        state["genotype"] = genotype("rga").to_json()
    elif change == "num_classes":
        state["num_classes"] = 9
    else:
        state["model"]["extra.weight"] = torch.zeros(2)
    torch.save(state, path)
    with pytest.raises(ModelCheckpointError, match="its weights do not fit its genotype") as info:
        load_model(path)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("fmt, opset, message", [
    ("tflite", None, "unknown export format 'tflite'"),
    ("ONNX", None, "unknown export format"),
    ("onnx", 12, "opset must be an integer from 13 to 20"),
    ("onnx", 21, "opset must be an integer from 13 to 20"),
    ("onnx", "17", "opset must be an integer"),
    ("torchscript", 17, "onnx format only"),
])
def test_bad_format_or_opset(checkpoints, tmp_path, fmt, opset, message):
    with pytest.raises(ExportError, match=message):
        export_model(checkpoints["baseline"], fmt, tmp_path / "m.out", opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(checkpoints, tmp_path):
    out = tmp_path / "model.torchscript.pt"
    out.write_bytes(b"old")
    with pytest.raises(ExportError, match="already exists; add --overwrite to replace it$"):
        export_model(checkpoints["baseline"], "torchscript", out, check=False)
    assert out.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    result = export_model(checkpoints["baseline"], "torchscript", out, check=False, overwrite=True)
    assert result.path == out and out.read_bytes()[:2] == b"PK"
    assert leftovers(tmp_path) == []


def test_never_overwrites_the_checkpoint(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.pt", "baseline")
    before = ckpt.read_bytes()
    with pytest.raises(ExportError, match="checkpoint itself"):
        export_model(ckpt, "torchscript", ckpt, overwrite=True, check=False)
    assert ckpt.read_bytes() == before


def test_failed_check_writes_nothing(checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "old.torchscript.pt"
    out.write_bytes(b"old")
    monkeypatch.setattr(export_module, "CHECK_RTOL", -1.0)  # nothing can pass
    monkeypatch.setattr(export_module, "CHECK_ATOL", -1.0)
    with pytest.raises(ExportError, match="differ from PyTorch's.*nothing was written"):
        export_model(checkpoints["baseline"], "torchscript", out, overwrite=True)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.torchscript.pt"]  # no temp file


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_missing_onnx_packages(checkpoints, tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    with pytest.raises(ExportError, match=rf"'{missing}'.*pip install 'nas-reid\[export\]'"):
        export_model(checkpoints["baseline"], "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_read_export_metadata_of_other_files(checkpoints, tmp_path):
    with pytest.raises(ExportError, match="no nas-reid export metadata"):
        read_export_metadata(checkpoints["baseline"])  # a zip, but a checkpoint
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), buffer)
    (tmp_path / "plain.pt").write_bytes(buffer.getvalue())
    with pytest.raises(ExportError, match="no nas-reid export metadata"):
        read_export_metadata(tmp_path / "plain.pt")
    with pytest.raises(ExportError, match="no exported model"):
        read_export_metadata(tmp_path / "missing.onnx")
    pytest.importorskip("onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe junk")
    with pytest.raises(ExportError):
        read_export_metadata(tmp_path / "junk.onnx")
