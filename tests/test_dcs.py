import math

import pytest
import torch
from torch import nn

import nas_reid.ops.dcs  # noqa: F401  (registers "dcs")
from nas_reid.ops.dcs import (
    DCSAttention,
    DCSWindowAttention,
    binary_gumbel_sigmoid,
    dcs_keep_ratios,
    dcs_modules,
    set_dcs_temperature,
)
from nas_reid.ops.registry import OpError, available_ops, build_op, op_params

WINDOW = {"variant": "window"}


def _perturb(m, seed=0):
    """Move BN gamma (and the mask layer's weight) off their identity-making initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.bn.weight.copy_(1.0 + 0.1 * torch.randn(m.bn.weight.shape, generator=g))
        m.bn.bias.copy_(0.1 * torch.randn(m.bn.bias.shape, generator=g))
        if isinstance(m, DCSAttention):
            m.mask_fc.weight.copy_(0.5 * torch.randn(m.mask_fc.weight.shape, generator=g))
    return m


# ----------------------------------------------------------------------------- registry, params


def test_registered_with_its_parameters():
    assert "dcs" in available_ops()
    assert op_params("dcs") == {
        "variant": "mask", "tau": 1.0, "mask_init_bias": 0.9, "scale": True, "key_stride": 1,
        "window_start": 0.0, "window_length": 0.5, "zero_init": True}
    assert type(build_op("dcs", 16, 8, 4)) is DCSAttention
    assert type(build_op("dcs", 16, 8, 4, variant="window")) is DCSWindowAttention


@pytest.mark.parametrize("params,bad", [
    ({"variant": "gumbel"}, "variant"),
    ({"tau": 0.0}, "tau"),
    ({"tau": -1.0}, "tau"),
    ({"tau": math.inf}, "tau"),
    ({"tau": "1"}, "tau"),
    ({"mask_init_bias": 0.0}, "mask_init_bias"),
    ({"mask_init_bias": 1.0}, "mask_init_bias"),
    ({"key_stride": 0}, "key_stride"),
    ({"scale": 1}, "scale"),
    ({"window_start": 0.5}, "window_start"),            # window parameter with the mask variant
    ({"variant": "window", "tau": 0.5}, "tau"),         # mask parameter with the window variant
    ({"variant": "window", "scale": False}, "scale"),
    ({"variant": "window", "window_start": 1.0}, "window_start"),
    ({"variant": "window", "window_start": -0.1}, "window_start"),
    ({"variant": "window", "window_length": 0.2}, "window_length"),
    ({"variant": "window", "window_length": 1.5}, "window_length"),
    ({"variant": "window", "key_stride": -2}, "key_stride"),
])
def test_bad_parameters_raise_op_error_naming_them(params, bad):
    with pytest.raises(OpError) as err:
        build_op("dcs", 16, 8, 4, **params)
    assert "'dcs'" in str(err.value) and repr(bad) in str(err.value)


def test_window_needs_two_channels_and_modules_check_their_input():
    with pytest.raises(OpError, match="'channels'"):
        build_op("dcs", 1, 4, 4, variant="window")
    build_op("dcs", 1, 4, 4)  # the mask variant works with one channel
    for params in ({}, WINDOW):
        with pytest.raises(OpError, match=r"\(2, 8, 4, 4\)"):
            build_op("dcs", 16, 4, 4, **params)(torch.randn(2, 8, 4, 4))


def test_set_temperature_validates():
    m = build_op("dcs", 8, 4, 4)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(OpError, match="'tau'"):
            m.set_temperature(bad)
        with pytest.raises(OpError, match="'tau'"):
            set_dcs_temperature(m, bad)
    assert float(m.tau) == 1.0


# ----------------------------------------------------------------------------- shape, identity


@pytest.mark.parametrize("size", [(2, 16, 8, 4), (1, 32, 16, 8), (3, 5, 3, 7), (2, 8, 1, 1)])
@pytest.mark.parametrize("params", [{}, {"key_stride": 2}, {"scale": False, "tau": 0.3},
                                    WINDOW, {"variant": "window", "key_stride": 3}])
def test_shape_is_preserved(size, params):
    b, c, h, w = size
    m = _perturb(build_op("dcs", c, h, w, **params))
    for mode in (m.train, m.eval):
        mode()
        y = m(torch.randn(size))
        assert y.shape == size and torch.isfinite(y).all()


@pytest.mark.parametrize("params", [{}, {"key_stride": 2}, {"mask_init_bias": 0.2},
                                    WINDOW, {"variant": "window", "window_start": 0.3,
                                             "window_length": 0.7, "key_stride": 2}])
def test_starts_as_the_identity_exactly(params):
    torch.manual_seed(0)
    m = build_op("dcs", 16, 8, 4, **params)
    x = torch.randn(2, 16, 8, 4) * 3
    for mode in (m.train, m.eval):
        mode()
        assert torch.equal(m(x), x)
    assert torch.equal(m.bn.weight, torch.zeros(16))
    # not trivially: without the zero-initialised BN the op changes its input
    m2 = build_op("dcs", 16, 8, 4, zero_init=False, **params).train()
    assert torch.equal(m2.bn.weight, torch.ones(16))
    assert (m2(x) - x).abs().max() > 1e-2


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("params", [{}, {"key_stride": 2}, {"zero_init": False},
                                    WINDOW, {"variant": "window", "key_stride": 2}])
def test_gradients_reach_every_parameter(params):
    torch.manual_seed(0)
    m = build_op("dcs", 16, 8, 4, **params).train()
    if params.get("zero_init", True):
        with torch.no_grad():
            m.bn.weight.fill_(1.0)
    if isinstance(m, DCSWindowAttention):
        m.set_window(2.3, 6.6)  # fractional start and length
    x = torch.randn(2, 16, 8, 4, requires_grad=True)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    names = [n for n, _ in m.named_parameters()]
    expected = ({"mask_fc.weight", "mask_fc.bias", "value.weight", "bn.weight", "bn.bias"}
                if isinstance(m, DCSAttention)
                else {"start", "length", "dwconv.weight", "bn.weight", "bn.bias"})
    assert set(names) == expected
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().max() > 1e-6, name
    assert x.grad.abs().max() > 1e-6


def test_mask_layer_gradient_is_the_straight_through_soft_gradient():
    # forward: the hard mask exactly; backward: d(soft)/d(logits), from the same noise
    logits = torch.randn(64, 8, requires_grad=True)
    w = torch.randn(64, 8)
    torch.manual_seed(5)
    hard = binary_gumbel_sigmoid(logits, 0.7)
    (hard * w).sum().backward()
    g_hard = logits.grad.clone()
    logits.grad = None
    torch.manual_seed(5)
    soft = binary_gumbel_sigmoid(logits, 0.7, hard=False)
    (soft * w).sum().backward()
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.detach(), (soft.detach() > 0.5).float())
    torch.testing.assert_close(g_hard, logits.grad)
    assert g_hard.abs().min() > 0


# ----------------------------------------------------------------------------- Gumbel, temperature


LOGITS = torch.tensor([-2.0, -0.5, 0.5, 2.0])


def _samples(tau, hard, n=40_000, seed=0):
    torch.manual_seed(seed)
    return binary_gumbel_sigmoid(LOGITS.expand(n, 4), tau, hard=hard)


def test_hard_mask_keeps_with_probability_sigmoid_logit_at_every_temperature():
    # P(logit + logistic noise > 0) = sigmoid(logit): tau does not change the hard sample's law
    for tau in (0.05, 1.0, 10.0):
        mean = _samples(tau, hard=True).mean(0)
        torch.testing.assert_close(mean, torch.sigmoid(LOGITS), atol=0.01, rtol=0)


def test_soft_relaxation_follows_the_temperature():
    soft = {tau: _samples(tau, hard=False) for tau in (0.05, 1.0, 10.0)}
    for tau, s in soft.items():
        # sigmoid((l + n) / tau) is monotone in n and the logistic noise has median 0
        torch.testing.assert_close(s.median(0).values, torch.sigmoid(LOGITS / tau),
                                   atol=0.01, rtol=0)
    # low tau: the relaxation is nearly binary and its mean is the hard keep probability
    low = soft[0.05]
    assert ((low < 0.01) | (low > 0.99)).float().mean() > 0.9
    torch.testing.assert_close(low.mean(0), torch.sigmoid(LOGITS), atol=0.01, rtol=0)
    # raising tau pulls every entry's expectation towards 1/2 and concentrates the samples
    dist = {tau: (s.mean(0) - 0.5).abs() for tau, s in soft.items()}
    assert (dist[0.05] > dist[1.0]).all() and (dist[1.0] > dist[10.0]).all()
    assert (dist[10.0] < 0.06).all()
    assert soft[10.0].std(0).max() < 0.05 < soft[1.0].std(0).min()


def test_keep_ratio_of_the_module_matches_the_keep_probability():
    x = torch.randn(4, 16, 8, 4)
    for p in (0.3, 0.8):
        m = build_op("dcs", 16, 8, 4, mask_init_bias=p).train()
        assert math.isnan(float(m.keep_ratio))
        for tau in (0.2, 5.0):  # the hard keep ratio does not depend on tau
            m.set_temperature(tau)
            torch.manual_seed(1)
            ratios = []
            for _ in range(20):
                m(x)
                ratios.append(float(m.keep_ratio))
            assert abs(sum(ratios) / len(ratios) - p) < 0.02
            assert not m.keep_ratio.requires_grad and m.keep_ratio.dim() == 0
        m.eval()
        m(x)  # eval: 1[logit > 0], the weight is still 0 so every entry follows the bias
        assert float(m.keep_ratio) == (1.0 if p > 0.5 else 0.0)


def test_module_mask_uses_its_temperature():
    # same noise: the same hard mask at every tau, but the gradient is that of sigmoid(./tau)
    m = _perturb(build_op("dcs", 8, 4, 4, mask_init_bias=0.5)).train()
    x = torch.randn(2, 8, 4, 4)
    w = torch.randn(2, 16, 8)
    masks, grads = [], []
    for tau in (0.3, 3.0):
        m.set_temperature(tau)
        m.zero_grad()
        torch.manual_seed(3)
        mask = m.mask(x)
        (mask * w).sum().backward()
        masks.append(mask.detach())
        grads.append(m.mask_fc.bias.grad.clone())
        logits = m.mask_fc(x.flatten(2).transpose(1, 2)).detach().requires_grad_()
        torch.manual_seed(3)
        (binary_gumbel_sigmoid(logits, tau) * w).sum().backward()
        torch.testing.assert_close(grads[-1], logits.grad.sum((0, 1)))
    assert torch.equal(masks[0], masks[1])
    assert (grads[0] - grads[1]).abs().max() > 1e-3


def test_temperature_is_a_buffer_set_for_every_mask_module():
    model = nn.Sequential(build_op("dcs", 8, 4, 4), nn.ReLU(),
                          nn.Sequential(build_op("dcs", 8, 4, 4, tau=2.0)),
                          build_op("dcs", 8, 4, 4, variant="window"))
    assert [n for n, _ in dcs_modules(model)] == ["0", "2.0", "3"]
    assert set_dcs_temperature(model, 0.25) == 2
    assert float(model[0].tau) == 0.25 and float(model[2][0].tau) == 0.25
    assert "0.tau" in model.state_dict()  # an annealed temperature survives a checkpoint
    fresh = build_op("dcs", 8, 4, 4)
    fresh.load_state_dict(model[0].state_dict())
    assert float(fresh.tau) == 0.25


def test_keep_ratios_are_collected_by_name():
    model = nn.Sequential(build_op("dcs", 8, 4, 4, mask_init_bias=0.7), nn.ReLU(),
                          build_op("dcs", 8, 4, 4, variant="window", window_length=0.75))
    ratios = dcs_keep_ratios(model)
    assert set(ratios) == {"0", "2"} and all(math.isnan(v) for v in ratios.values())
    model.train()
    model(torch.randn(2, 8, 4, 4))
    ratios = dcs_keep_ratios(model)
    assert ratios["0"] == float(model[0].keep_ratio) and 0.0 < ratios["0"] < 1.0
    assert ratios["2"] == pytest.approx(0.75)


# ----------------------------------------------------------------------------- mask variant


def test_eval_mode_is_deterministic_and_training_is_not():
    m = _perturb(build_op("dcs", 16, 8, 4, mask_init_bias=0.5))
    x = torch.randn(2, 16, 8, 4)
    m.eval()
    y1, y2 = m(x), m(x)
    assert torch.equal(y1, y2)
    logits = m.mask_fc(x.flatten(2).transpose(1, 2))
    assert torch.equal(m.mask(x), (logits > 0).float())
    m.train()
    assert not torch.equal(m.mask(x), m.mask(x))


@pytest.mark.parametrize("key_stride", [1, 2])
@pytest.mark.parametrize("train", [True, False])
def test_attention_rows_sum_to_one(key_stride, train):
    m = _perturb(build_op("dcs", 16, 8, 6, key_stride=key_stride)).train(train)
    a = m.attention(torch.randn(3, 16, 8, 6))
    n_keys = 48 if key_stride == 1 else 4 * 3
    assert a.shape == (3, 48, n_keys)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 48))
    assert a.std() > 1e-3  # not uniform


def test_all_masked_gives_uniform_attention():
    m = build_op("dcs", 8, 4, 4, mask_init_bias=0.1).eval()  # eval mask: all zeros
    a = m.attention(torch.randn(2, 8, 4, 4))
    torch.testing.assert_close(a, torch.full((2, 16, 16), 1 / 16))


@pytest.mark.parametrize("key_stride", [1, 2])
@pytest.mark.parametrize("scale", [True, False])
def test_forward_is_attention_applied_to_the_value_projection(key_stride, scale):
    m = _perturb(build_op("dcs", 16, 8, 4, key_stride=key_stride, scale=scale)).eval()
    x = torch.randn(2, 16, 8, 4)
    a = m.attention(x)
    tokens = x.flatten(2).transpose(1, 2)
    q = tokens * m.mask(x)
    k = q.reshape(2, 8, 4, 16)[:, ::key_stride, ::key_stride].reshape(2, -1, 16)
    expected_a = torch.softmax(q @ k.transpose(1, 2) / (4.0 if scale else 1.0), dim=-1)
    torch.testing.assert_close(a, expected_a)
    v = m.value(x[:, :, ::key_stride, ::key_stride]).flatten(2).transpose(1, 2)
    expected = x + m.bn((a @ v).transpose(1, 2).reshape(2, 16, 8, 4))
    torch.testing.assert_close(m(x), expected)
    # the fused kernel used on CUDA computes the same thing
    q, k, v = m._qkv(x)
    torch.testing.assert_close(m._attend(q, k, v, fused=True), m._attend(q, k, v, fused=False))


@pytest.mark.parametrize("train", [True, False])
def test_masked_channels_do_not_influence_the_attention(train):
    c, dropped = 8, 3
    m = _perturb(build_op("dcs", c, 4, 4)).train(train)
    with torch.no_grad():  # logits independent of x[:, dropped]; that channel always masked
        m.mask_fc.weight[:, dropped] = 0.0
        m.mask_fc.weight[dropped, :] = 0.0
        m.mask_fc.bias[dropped] = -50.0
    x = torch.randn(2, c, 4, 4)
    changed = x.clone()
    changed[:, dropped] = torch.randn(2, 4, 4) * 10
    other = x.clone()
    other[:, 0] = torch.randn(2, 4, 4) * 10
    masks, attns = [], []
    for inp in (x, changed, other):
        torch.manual_seed(7)  # the same noise for each input
        masks.append(m.mask(inp))
        torch.manual_seed(7)
        attns.append(m.attention(inp))
    (m0, m1, _), (a0, a1, a2) = masks, attns
    assert not m0[..., dropped].any() and torch.equal(m0, m1)
    assert m0[..., 0].any()
    torch.testing.assert_close(a0, a1, rtol=0, atol=1e-7)
    assert (a0 - a2).abs().max() > 1e-3  # a kept channel does change A


# ----------------------------------------------------------------------------- window variant


def _window_module(c=16, start=2.0, length=4.0, h=4, w=4, **params):
    m = build_op("dcs", c, h, w, variant="window", **params)
    m.set_window(start, length)
    return m


def test_integer_window_is_a_channel_slice():
    x = torch.randn(2, 16, 4, 4)
    theta = _window_module(start=2.0, length=4.0).window(x)
    assert theta.shape == (2, 5, 4, 4)
    assert torch.equal(theta[:, :4], x[:, 2:6]) and not theta[:, 4].any()


def test_fractional_start_interpolates_between_integer_windows():
    x = torch.randn(2, 16, 4, 4)
    t2, t25, t3 = (_window_module(start=s).window(x) for s in (2.0, 2.5, 3.0))
    torch.testing.assert_close(t25, 0.5 * (t2 + t3))
    assert (t25 - t2).abs().max() > 1e-2 and (t25 - t3).abs().max() > 1e-2
    t225 = _window_module(start=2.25).window(x)
    torch.testing.assert_close(t225, 0.75 * t2 + 0.25 * t3)


def test_fractional_length_weights_the_last_channel():
    x = torch.randn(2, 16, 4, 4)
    theta = _window_module(start=2.0, length=4.5).window(x)
    assert theta.shape == (2, 5, 4, 4)
    assert torch.equal(theta[:, :4], x[:, 2:6])
    torch.testing.assert_close(theta[:, 4], 0.5 * x[:, 6])


def test_window_wraps_around_and_is_clamped():
    x = torch.randn(2, 16, 4, 4)
    theta = _window_module(start=14.0, length=4.0).window(x)
    assert torch.equal(theta[:, :4], x[:, [14, 15, 0, 1]])
    torch.testing.assert_close(_window_module(start=16 + 2.5).window(x),
                               _window_module(start=2.5).window(x))
    torch.testing.assert_close(_window_module(start=-0.5).window(x),
                               _window_module(start=15.5).window(x))
    m = _window_module(length=100.0)
    assert m.window(x).shape[1] == 16 and float(m.keep_ratio) == 15 / 16  # at most C - 1
    m = _window_module(length=1.0)
    assert m.window(x).shape[1] == 5 and float(m.keep_ratio) == 4 / 16  # at least C / 4


def test_window_defaults_and_initial_values():
    m = build_op("dcs", 16, 4, 4, variant="window", window_start=0.25, window_length=0.75)
    assert m.start.item() == 4.0 and m.length.item() == 12.0
    d = build_op("dcs", 16, 4, 4, variant="window")
    assert d.start.item() == 0.0 and d.length.item() == 8.0


@pytest.mark.parametrize("h,w,key_stride", [(2, 2, 1), (8, 8, 1), (8, 6, 2)])
def test_window_forward_is_the_unnormalised_product_divided_by_the_key_count(h, w, key_stride):
    # (2, 2): the (N x N_k) order is cheaper; (8, 8): the (C x window) order
    torch.manual_seed(0)
    m = _perturb(_window_module(start=3.5, length=6.25, h=h, w=w, key_stride=key_stride))
    x = torch.randn(2, 16, h, w)
    theta = m.window(x).flatten(2)
    phi = m.window(x[:, :, ::key_stride, ::key_stride]).flatten(2)
    n_keys = phi.shape[-1]
    a = m.attention(x)
    torch.testing.assert_close(a, theta.transpose(1, 2) @ phi / n_keys)
    if key_stride == 1:
        assert n_keys == h * w
    g = x[:, :, ::key_stride, ::key_stride].flatten(2)
    f = (g @ a.transpose(1, 2)).reshape(2, 16, h, w)
    for mode in (m.train, m.eval):
        mode()
        torch.testing.assert_close(m(x), x + m.bn(m.dwconv(f)), rtol=1e-4, atol=1e-5)
