import copy
import math

import pytest
import torch
from torch import nn

from nas_reid.errors import UserError
from nas_reid.ops import available_ops, build_op, op_cost, op_params, register_op
from nas_reid.ops import registry
from nas_reid.ops.channel import eca_kernel_size
from nas_reid.ops.registry import OpCost, OpError

# the ops defined in basic.py, channel.py and rga.py (other op files register more)
OWN_OPS = ["cbam_c", "conv_bn_relu", "eca", "identity", "mbconv", "rga_c", "rga_s", "rga_sc",
           "se", "sep_conv", "zero"]
SMALL_SIZES = [(2, 16, 8, 4), (2, 32, 16, 8)]
# (channels, height, width) after layer1..layer4 of a last-stride-1 ResNet-50 at 256x128
RESNET50_POSITIONS = [(256, 64, 32), (512, 32, 16), (1024, 16, 8), (2048, 16, 8)]
# non-default parameters that must also build and keep the shape
VARIANTS = {
    "conv_bn_relu": [{"kernel": 1}, {"kernel": 5}],
    "sep_conv": [{"kernel": 5}],
    "mbconv": [{"kernel": 5, "expansion": 3}],
    "eca": [{"kernel": 5}],
    "se": [{"reduction": 4}],
    "cbam_c": [{"reduction": 4}],
    "rga_s": [{"c_ratio": 2, "s_ratio": 2, "d_ratio": 2}, {"checkpoint": True}],
    "rga_c": [{"c_ratio": 2, "s_ratio": 2, "d_ratio": 2}, {"checkpoint": True}],
    "rga_sc": [{"c_ratio": 2, "s_ratio": 2, "d_ratio": 2}, {"checkpoint": True}],
}
# parameters under which every weight of the op has a non-zero gradient (see the test)
GRAD_PARAMS = {"rga_s": {"c_ratio": 2, "s_ratio": 2, "d_ratio": 2},
               "rga_c": {"c_ratio": 2, "s_ratio": 2, "d_ratio": 2},
               "rga_sc": {"c_ratio": 2, "s_ratio": 2, "d_ratio": 2},
               "se": {"reduction": 4}, "cbam_c": {"reduction": 4},
               # DCS starts as the identity through a zero-initialised BN scale, which blocks
               # every gradient upstream of it; test_dcs.py covers the zero-init case itself.
               "dcs": {"zero_init": False}}


def _nonzero_input(*shape, seed=0):
    """Random values bounded away from 0, so that y / x is well defined."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
    return sign * (0.5 + torch.rand(shape, generator=g))


def _saved_floats(module, x):
    """Floats per distinct storage saved for backward, except x's, parameters' and buffers'."""
    own = {t.untyped_storage().data_ptr() for t in [x, *module.parameters(), *module.buffers()]}
    sizes = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            sizes[ptr] = t.untyped_storage().nbytes() // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sizes


# ----------------------------------------------------------------------------- registry


def test_all_expected_ops_are_registered_and_sorted():
    names = available_ops()
    assert names == sorted(names)
    assert set(OWN_OPS) <= set(names)


def test_unknown_op_lists_known_names():
    with pytest.raises(OpError, match="unknown op 'rga_x'") as err:
        build_op("rga_x", 16, 8, 4)
    assert "rga_s" in str(err.value) and "mbconv" in str(err.value)
    assert isinstance(err.value, UserError)


@pytest.mark.parametrize("name,params,bad", [
    ("se", {"ratio": 4}, "ratio"),                      # unknown name
    ("identity", {"kernel": 3}, "kernel"),              # op without parameters
    ("sep_conv", {"kernel": 4}, "kernel"),              # even kernel
    ("mbconv", {"expansion": 0}, "expansion"),
    ("conv_bn_relu", {"kernel": "3"}, "kernel"),        # wrong type
    ("rga_s", {"s_ratio": 0}, "s_ratio"),
    ("rga_sc", {"checkpoint": 1}, "checkpoint"),        # int where a bool is expected
    ("eca", {"kernel": 2}, "kernel"),
    ("cbam_c", {"reduction": 1.5}, "reduction"),
])
def test_bad_parameter_names_op_and_parameter(name, params, bad):
    with pytest.raises(OpError) as err:
        build_op(name, 16, 8, 4, **params)
    assert repr(name) in str(err.value) and repr(bad) in str(err.value)


@pytest.mark.parametrize("size", [(0, 8, 4), (16, -1, 4), (16, 8, 2.0)])
def test_bad_size_is_rejected(size):
    with pytest.raises(OpError, match="must be a positive integer"):
        build_op("se", *size)


def test_op_params_lists_keyword_defaults():
    assert op_params("mbconv") == {"kernel": 3, "expansion": 6}
    assert op_params("rga_sc") == {"c_ratio": 8, "s_ratio": 8, "d_ratio": 8, "checkpoint": False}
    assert op_params("zero") == {}


def test_register_op_checks_the_factory_signature_and_duplicates():
    with pytest.raises(TypeError, match="keyword-only"):
        register_op("_test_bad")(lambda channels, height, width, k=3: nn.Identity())
    with pytest.raises(TypeError, match="channels, height, width"):
        register_op("_test_bad")(lambda c, h, w: nn.Identity())
    with pytest.raises(ValueError, match="registered twice"):
        register_op("identity")(lambda channels, height, width: nn.Identity())
    assert "_test_bad" not in available_ops()


def test_register_op_adds_a_buildable_op():
    def scaled(channels, height, width, *, factor: float = 2.0):
        return nn.Identity() if factor == 1 else _Scale(factor)

    try:
        register_op("_test_scale")(scaled)
        op = build_op("_test_scale", 4, 2, 2, factor=3)
        assert torch.equal(op(torch.ones(1, 4, 2, 2)), torch.full((1, 4, 2, 2), 3.0))
    finally:
        registry._REGISTRY.pop("_test_scale", None)


class _Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


# ----------------------------------------------------------------------------- every op


@pytest.mark.parametrize("size", SMALL_SIZES)
@pytest.mark.parametrize("name", available_ops())  # every op registered at collection time
def test_every_op_preserves_shape(name, size):
    b, c, h, w = size
    for params in [{}] + VARIANTS.get(name, []):
        op = build_op(name, c, h, w, **params)
        for mode in (op.train, op.eval):
            mode()
            y = op(torch.randn(size))
            assert y.shape == size, (name, params)
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", available_ops())
def test_gradients_reach_every_parameter(name):
    # RGA and the MLP gates are built with small ratios here: with the defaults at this size
    # the score net's hidden width is 1, and a single scalar weight feeding a training-mode
    # BatchNorm gets a zero gradient (BN(w * h) does not depend on w > 0, up to eps); see
    # test_scalar_weight_before_batchnorm_has_zero_gradient.
    torch.manual_seed(0)
    op = build_op(name, 16, 8, 4, **GRAD_PARAMS.get(name, {}))
    op.train()
    x = torch.randn(2, 16, 8, 4, requires_grad=True)
    y = op(x)
    if name == "zero":  # constant output: no gradient path at all
        assert not y.requires_grad and not y.any()
    else:
        (y * torch.randn_like(y)).sum().backward()  # random weights: no symmetric cancellation
        assert x.grad.abs().max() > 1e-6
    for pname, p in op.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().max() > 1e-6, pname


def test_scalar_weight_before_batchnorm_has_zero_gradient():
    # Why GRAD_PARAMS exists: at (16, 8, 4) with the defaults RGA-C's score net has hidden width
    # (1 + 32 // 8) // 8 -> clamped to 1, so its last conv is one scalar w feeding BatchNorm(1).
    # In training mode BN(w * h) = (h - mean h) / sqrt(var h + eps / w^2): d/dw is zero but for
    # BN's eps term, which is proportional to eps (float64: 3.3e-3 at eps 1e-5, 3.3e-10 at 1e-12).
    # The test runs in float64: in float32 the computed value is rounding, about one float32 eps
    # (1.2e-7) times theta's gradient (~27), i.e. 7e-7 on one CPU and 2.9e-6 on another, so an
    # absolute float32 bound measured the machine. In float64 the rounding is ~1e-16 x 27 and the
    # eps term 3.3e-10: the bound 1e-8 holds with 30x room on any CPU, and the control at BN's
    # default eps (3.3e-3) shows that the same bound fails where the gradient is not zero.
    def grads(eps: float) -> tuple[float, float]:
        torch.manual_seed(0)
        op = build_op("rga_c", 16, 8, 4).double()
        assert op.score[3].weight.numel() == 1
        op.score[4].eps = eps  # (eps must be > 0 in training)
        x = torch.randn(2, 16, 8, 4, dtype=torch.float64)
        y = op(x)
        (y * torch.randn_like(y)).sum().backward()
        return (op.score[3].weight.grad.abs().max().item(),
                op.theta[0].weight.grad.abs().max().item())

    w_grad, theta_grad = grads(1e-12)
    assert w_grad < 1e-8 and theta_grad > 1.0
    assert grads(1e-5)[0] > 1e-4  # with BN's default eps the eps term is what GRAD_PARAMS avoids


# ----------------------------------------------------------------------------- RGA


def _reference_rga_s(m, x):
    """RGA-S written as in the official code: G and [G^T; G] materialised, y concatenated."""
    b, c, h, w = x.shape
    n = h * w
    theta = m.theta(x).view(b, -1, n).permute(0, 2, 1)
    phi = m.phi(x).view(b, -1, n)
    g = torch.bmm(theta, phi)  # (b, n, n)
    joint = torch.cat([g.permute(0, 2, 1).reshape(b, n, h, w), g.reshape(b, n, h, w)], dim=1)
    rel = m.relation(joint)
    unary = m.unary(x).mean(dim=1, keepdim=True)
    score = m.score(torch.cat([unary, rel], dim=1))
    return torch.sigmoid(score.expand_as(x)) * x


def _reference_rga_c(m, x):
    b, c, h, w = x.shape
    xc = x.view(b, c, -1).permute(0, 2, 1).unsqueeze(-1)  # (b, hw, c, 1)
    theta = m.theta(xc).squeeze(-1).permute(0, 2, 1)  # (b, c, e)
    phi = m.phi(xc).squeeze(-1)  # (b, e, c)
    g = torch.bmm(theta, phi)  # (b, c, c)
    joint = torch.cat([g.permute(0, 2, 1).unsqueeze(-1), g.unsqueeze(-1)], dim=1)
    rel = m.relation(joint)
    unary = m.unary(xc).mean(dim=1, keepdim=True)
    score = m.score(torch.cat([unary, rel], dim=1)).transpose(1, 2)  # (b, c, 1, 1)
    return torch.sigmoid(score) * x


@pytest.mark.parametrize("name,reference", [("rga_s", _reference_rga_s),
                                            ("rga_c", _reference_rga_c)])
@pytest.mark.parametrize("train", [True, False])
def test_rga_matches_the_official_formulation(name, reference, train):
    torch.manual_seed(1)
    m = build_op(name, 32, 8, 8, c_ratio=4, s_ratio=4, d_ratio=2)
    for p in m.parameters():  # move off the default init so every term matters
        p.data.normal_(0.0, 0.3)
    ref = copy.deepcopy(m)
    m.train(train)
    ref.train(train)
    x = torch.randn(3, 32, 8, 8)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = m(x1), reference(ref, x2)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (k, p), p_ref in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-5, msg=k)
    for (k, buf), buf_ref in zip(m.named_buffers(), ref.buffers()):  # BN running statistics
        torch.testing.assert_close(buf, buf_ref, rtol=1e-4, atol=1e-5, msg=k)


def test_rga_s_weights_each_position_identically_across_channels():
    m = build_op("rga_s", 16, 8, 4)
    x = _nonzero_input(2, 16, 8, 4)
    ratio = m(x) / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)
    assert (ratio > 0).all() and (ratio < 1).all()
    assert ratio[:, 0].std() > 1e-3  # the weight varies over positions
    torch.testing.assert_close(ratio[:, :1], m.attention(x))


def test_rga_c_weights_each_channel_identically_across_positions():
    m = build_op("rga_c", 16, 8, 4)
    x = _nonzero_input(2, 16, 8, 4, seed=1)
    ratio = m(x) / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-6)
    assert (ratio > 0).all() and (ratio < 1).all()
    assert ratio[:, :, 0, 0].std() > 1e-3  # the weight varies over channels
    torch.testing.assert_close(ratio[:, :, :1, :1], m.attention(x))


@pytest.mark.parametrize("train", [True, False])
def test_rga_sc_is_rga_c_applied_to_rga_s_output(train):
    torch.manual_seed(2)
    sc = build_op("rga_sc", 16, 8, 4, c_ratio=2, s_ratio=2, d_ratio=2)
    s = build_op("rga_s", 16, 8, 4, c_ratio=2, s_ratio=2, d_ratio=2)
    c = build_op("rga_c", 16, 8, 4, c_ratio=2, s_ratio=2, d_ratio=2)
    for p in sc.parameters():
        p.data.normal_(0.0, 0.3)
    s.load_state_dict(sc.spatial.state_dict())
    c.load_state_dict(sc.channel.state_dict())
    for mod in (sc, s, c):
        mod.train(train)
    x = torch.randn(2, 16, 8, 4)
    y = sc(x)
    torch.testing.assert_close(y, c(s(x)))
    assert not torch.allclose(y, s(c(x)), atol=1e-4)  # the order matters
    assert sum(p.numel() for p in sc.parameters()) == (
        sum(p.numel() for p in s.parameters()) + sum(p.numel() for p in c.parameters()))


@pytest.mark.parametrize("name", ["rga_s", "rga_c", "rga_sc"])
def test_rga_rejects_another_input_size(name):
    m = build_op(name, 16, 8, 4)
    with pytest.raises(OpError) as err:
        m(torch.randn(2, 16, 4, 8))
    msg = str(err.value)
    assert "(16, 8, 4)" in msg and "(2, 16, 4, 8)" in msg and name in msg
    with pytest.raises(OpError, match=r"\(2, 8, 8, 4\)"):
        m(torch.randn(2, 8, 8, 4))


@pytest.mark.parametrize("name", ["rga_s", "rga_c", "rga_sc"])
def test_rga_checkpoint_gives_the_same_outputs_gradients_and_statistics(name):
    torch.manual_seed(3)
    plain = build_op(name, 16, 8, 4, c_ratio=2, s_ratio=2, d_ratio=2)
    ckpt = build_op(name, 16, 8, 4, c_ratio=2, s_ratio=2, d_ratio=2, checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 16, 8, 4)
    grads = []
    for m in (plain, ckpt):
        xx = x.clone().requires_grad_()
        y = m(xx)
        (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
        grads.append((y.detach(), xx.grad, [p.grad for p in m.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    for g0, g1 in zip(grads[0][2], grads[1][2]):
        torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)
    # running statistics were updated once, by the forward, not again by the recomputation
    for (k, b0), b1 in zip(plain.state_dict().items(), ckpt.state_dict().values()):
        torch.testing.assert_close(b0, b1, msg=k)
        if k.endswith("num_batches_tracked"):
            assert b1.item() == 1


def test_rga_s_never_stores_the_relation_matrix():
    # n = 512 positions: the official code stores the (2n x n) concatenation for backward
    c, h, w = 8, 32, 16
    n = h * w
    x = torch.randn(1, c, h, w, requires_grad=True)
    sizes = _saved_floats(build_op("rga_s", c, h, w), x)
    assert max(sizes.values()) < n * n / 4
    assert sum(sizes.values()) < n * n / 2
    ckpt = _saved_floats(build_op("rga_s", c, h, w, checkpoint=True), x)
    assert sum(ckpt.values()) <= n  # only the (1, 1, h, w) gate


# ----------------------------------------------------------------------------- RGA parameter counts


def _embed_params(cin, cout):
    return cin * cout + 2 * cout  # 1x1 conv without bias + BN weight and bias


def _branch_params(feat, nodes, emb, rel, hidden=None, d_ratio=8):
    hidden = (1 + rel) // d_ratio if hidden is None else hidden
    score = (1 + rel) * hidden + 2 * hidden + hidden * 1 + 2  # conv, BN, conv (no bias), BN(1)
    return 3 * _embed_params(feat, emb) + _embed_params(2 * nodes, rel) + score


def _official_rga_params(c, h, w, spatial, channel, ratio=8):
    n = h * w
    total = 0
    if spatial:  # theta/phi/gx: C -> C/8; gg: 2N -> N/8; W: 1 + N/8 -> (1 + N/8)//8 -> 1
        total += _branch_params(c, n, c // ratio, n // ratio)
    if channel:  # theta/phi/gx: N -> N/8; gg: 2C -> C/8; W: 1 + C/8 -> (1 + C/8)//8 -> 1
        total += _branch_params(n, c, n // ratio, c // ratio)
    return total


@pytest.fixture(scope="module")
def resnet50_rga_modules():
    torch.manual_seed(0)
    return {name: [build_op(name, *pos) for pos in RESNET50_POSITIONS]
            for name in ("rga_s", "rga_c", "rga_sc")}


@pytest.mark.parametrize("name,spatial,channel,approx", [
    ("rga_s", True, False, 3.22), ("rga_c", False, True, 3.09), ("rga_sc", True, True, 6.31)])
def test_rga_parameter_totals_match_the_official_resnet50_model(
        resnet50_rga_modules, name, spatial, channel, approx):
    expected = [_official_rga_params(*pos, spatial, channel) for pos in RESNET50_POSITIONS]
    got = [sum(p.numel() for p in m.parameters()) for m in resnet50_rga_modules[name]]
    assert got == expected
    assert round(sum(expected) / 1e6, 2) == approx  # from the official rga_modules.py's shapes
    assert sum(got) == {"rga_s": 3_223_800, "rga_c": 3_090_296, "rga_sc": 6_314_096}[name]


def test_rga_layer1_shapes_match_the_official_module(resnet50_rga_modules):
    m = resnet50_rga_modules["rga_s"][0]  # C = 256, N = 2048
    assert m.relation[0].weight.shape == (256, 4096, 1, 1)
    assert m.theta[0].weight.shape == (32, 256, 1, 1)
    assert m.score[0].weight.shape == (32, 257, 1, 1)
    assert m.score[3].weight.shape == (1, 32, 1, 1)
    c = resnet50_rga_modules["rga_c"][3]  # C = 2048, N = 128
    assert c.theta[0].weight.shape == (16, 128, 1, 1)
    assert c.relation[0].weight.shape == (256, 4096, 1, 1)
    assert c.score[0].weight.shape == (32, 257, 1, 1)
    for mod in resnet50_rga_modules["rga_sc"][0].modules():
        if isinstance(mod, nn.Conv2d):
            assert mod.bias is None


# ----------------------------------------------------------------------------- channel attention


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def _channel_means_and_maxes(x):
    flat = [[float(v) for v in x[0, ch].flatten()] for ch in range(x.shape[1])]
    return [sum(vals) / len(vals) for vals in flat], [max(vals) for vals in flat]


def _hand_mlp(w1, b1, w2, b2, v):
    hid = [max(0.0, sum(wi * vi for wi, vi in zip(row, v)) + b) for row, b in zip(w1, b1)]
    return [sum(wi * hi for wi, hi in zip(row, hid)) + b for row, b in zip(w2, b2)]


W1 = [[0.5, -1.0, 0.25, 2.0], [-0.5, 0.75, 1.0, -0.25]]
B1 = [0.1, -0.2]
W2 = [[1.0, -0.5], [0.3, 0.8], [-1.2, 0.4], [0.0, 2.0]]
B2 = [0.05, -0.1, 0.2, 0.0]
X = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]], [[0.0, 1.0], [2.0, -1.0]],
                   [[-3.0, 0.5], [1.5, 1.0]], [[2.0, 2.0], [-0.5, 0.0]]]])


def _set_mlp(mlp):
    with torch.no_grad():
        mlp[0].weight.copy_(torch.tensor(W1))
        mlp[0].bias.copy_(torch.tensor(B1))
        mlp[2].weight.copy_(torch.tensor(W2))
        mlp[2].bias.copy_(torch.tensor(B2))


def _scale(x, weights):
    return torch.stack([x[0, ch] * weights[ch] for ch in range(x.shape[1])])[None]


def test_se_matches_a_hand_computed_case():
    op = build_op("se", 4, 2, 2, reduction=2)
    _set_mlp(op.mlp)
    means, _ = _channel_means_and_maxes(X)
    weights = [_sigmoid(v) for v in _hand_mlp(W1, B1, W2, B2, means)]
    torch.testing.assert_close(op(X), _scale(X, weights))


def test_cbam_channel_matches_a_hand_computed_case():
    op = build_op("cbam_c", 4, 2, 2, reduction=2)
    _set_mlp(op.mlp)
    means, maxes = _channel_means_and_maxes(X)
    a, m = _hand_mlp(W1, B1, W2, B2, means), _hand_mlp(W1, B1, W2, B2, maxes)
    weights = [_sigmoid(u + v) for u, v in zip(a, m)]  # the second-layer bias counts twice
    torch.testing.assert_close(op(X), _scale(X, weights))


def test_eca_matches_a_hand_computed_case():
    op = build_op("eca", 4, 2, 2, kernel=3)
    k = [0.5, -1.0, 2.0]
    with torch.no_grad():
        op.conv.weight.copy_(torch.tensor(k).view(1, 1, 3))
    means, _ = _channel_means_and_maxes(X)
    padded = [0.0] + means + [0.0]  # zero padding at both ends of the channel axis
    logits = [sum(k[j] * padded[ch + j] for j in range(3)) for ch in range(4)]
    torch.testing.assert_close(op(X), _scale(X, [_sigmoid(v) for v in logits]))


@pytest.mark.parametrize("channels,expected", [
    (64, 3), (256, 5), (512, 5), (2048, 7), (24, 3), (32, 3), (128, 5), (1024, 5), (4, 1)])
def test_eca_adaptive_kernel_size(channels, expected):
    # psi(C) = |log2(C)/gamma + b/gamma|_odd with gamma = 2, b = 1: the odd number among
    # floor(t) and floor(t) + 1, t = (log2 C + 1) / 2
    t = (math.log2(channels) + 1) / 2
    assert 2 * math.floor(t / 2) + 1 == expected
    assert eca_kernel_size(channels) == expected
    assert build_op("eca", channels, 2, 2).conv.kernel_size == (expected,)


def test_channel_attention_parameter_counts_and_biases():
    se = build_op("se", 64, 4, 4)
    assert [tuple(p.shape) for p in se.parameters()] == [(4, 64), (4,), (64, 4), (64,)]
    eca = build_op("eca", 64, 4, 4)
    assert eca.conv.bias is None and sum(p.numel() for p in eca.parameters()) == 3
    cbam = build_op("cbam_c", 64, 4, 4)
    assert sum(p.numel() for p in cbam.parameters()) == 64 * 4 + 4 + 4 * 64 + 64
    # fewer channels than the reduction: the hidden width is clamped to 1
    assert build_op("se", 8, 2, 2).mlp[0].out_features == 1


# ----------------------------------------------------------------------------- op_cost


def test_op_cost_counts_parameters_and_flops_analytically():
    c, h, w = 16, 8, 4
    hw = h * w
    assert op_cost("conv_bn_relu", c, h, w) == OpCost(c * c * 9 + 2 * c, 2 * c * c * 9 * hw)
    assert op_cost("sep_conv", c, h, w, kernel=5) == OpCost(
        c * 25 + 2 * c + c * c + 2 * c, 2 * (c * 25 + c * c) * hw)
    t = 6 * c
    assert op_cost("mbconv", c, h, w) == OpCost(
        c * t + 2 * t + t * 9 + 2 * t + t * c + 2 * c, 2 * (c * t + t * 9 + t * c) * hw)
    assert op_cost("se", 64, h, w) == OpCost(64 * 4 + 4 + 4 * 64 + 64, 2 * (64 * 4 + 4 * 64))
    assert op_cost("eca", 64, h, w) == OpCost(3, 2 * 3 * 64)
    assert op_cost("identity", c, h, w) == OpCost(0, 0)
    # RGA-S at (16, 8, 4), defaults: E = 2, R = 4, hidden = 1. MACs: three embeddings
    # 3*E*C*n, factorised relation 4*R*E*n, score (1 + R)*hidden*n + hidden*n
    e, r, hid = 2, 4, 1
    macs = 3 * e * c * hw + 4 * r * e * hw + (1 + r) * hid * hw + hid * hw
    params = _branch_params(c, hw, e, r, hidden=hid)
    assert op_cost("rga_s", c, h, w) == OpCost(params, 2 * macs)


def test_op_cost_accepts_a_module_and_keeps_its_mode():
    op = build_op("rga_sc", 16, 8, 4)
    op.train()
    cost = op_cost(op, 16, 8, 4)
    assert op.training
    assert cost == op_cost("rga_sc", 16, 8, 4)
    with pytest.raises(OpError):
        op_cost(op, 16, 8, 4, c_ratio=2)
