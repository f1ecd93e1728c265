import math

import pytest
import torch
import torch.nn.functional as F

from nas_reid.errors import UserError
from nas_reid.losses import (
    CenterLoss,
    CrossEntropyLabelSmooth,
    RIBLoss,
    TripletLoss,
    kmeans,
    mutual_information,
)

# ----------------------------------------------------------------------------- label smoothing


def test_label_smoothing_ce_matches_hand_computation():
    # softmax of log([1, 2, 1]) is [0.25, 0.5, 0.25]
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]))
    targets = torch.tensor([1, 0])
    eps, k = 0.1, 3
    on, off = 1 - eps + eps / k, eps / k  # 0.9333.., 0.0333..
    loss_1 = -(off * math.log(0.25) + on * math.log(0.5) + off * math.log(0.25))
    loss_0 = -(on * math.log(0.25) + off * math.log(0.5) + off * math.log(0.25))
    expected = (loss_0 + loss_1) / 2  # (1.36319 + 0.73936) / 2
    got = CrossEntropyLabelSmooth(3, epsilon=0.1)(logits, targets)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(1.05127, abs=1e-4)


def test_label_smoothing_zero_epsilon_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 7), torch.randint(0, 7, (5,))
    got = CrossEntropyLabelSmooth(7, epsilon=0.0)(logits, targets)
    assert got.item() == pytest.approx(F.cross_entropy(logits, targets).item(), abs=1e-6)


def test_label_smoothing_rejects_label_outside_num_classes():
    with pytest.raises(UserError, match="num_classes"):
        CrossEntropyLabelSmooth(3)(torch.zeros(2, 3), torch.tensor([0, 3]))


# ----------------------------------------------------------------------------- triplet

# Points on a line t * (0.6, 0.8) + (1, -2), so distances are |t_i - t_j|.
# ids 0: t = 0, 2; ids 1: t = 1, 4; ids 2: t = 10, 10.5
_T = [0.0, 2.0, 1.0, 4.0, 10.0, 10.5]
_IDS = torch.tensor([0, 0, 1, 1, 2, 2])
# hardest (d_ap, d_an) per anchor, worked out by hand:
#   t=0:   pos 2,   neg min(1, 4, 10, 10.5) = 1
#   t=2:   pos 2,   neg min(1, 2, 8, 8.5) = 1
#   t=1:   pos 3,   neg min(1, 1, 9, 9.5) = 1
#   t=4:   pos 3,   neg min(4, 2, 6, 6.5) = 2
#   t=10:  pos 0.5, neg min(10, 8, 9, 6) = 6
#   t=10.5 pos 0.5, neg min(10.5, 8.5, 9.5, 6.5) = 6.5
_HARD = [(2, 1), (2, 1), (3, 1), (3, 2), (0.5, 6), (0.5, 6.5)]


def _line_features():
    t = torch.tensor(_T, dtype=torch.float64).unsqueeze(1)
    return t * torch.tensor([[0.6, 0.8]], dtype=torch.float64) + torch.tensor([[1.0, -2.0]], dtype=torch.float64)


def test_triplet_hard_margin_matches_hand_computation():
    # hinges: 1.3, 1.3, 2.3, 1.3, 0, 0 -> 6.2 / 6
    loss, frac = TripletLoss(margin=0.3)(_line_features(), _IDS, return_fraction=True)
    assert loss.item() == pytest.approx(6.2 / 6, abs=1e-9)
    assert frac.item() == pytest.approx(2 / 6)
    assert TripletLoss(margin=0.3)(_line_features(), _IDS).item() == pytest.approx(6.2 / 6, abs=1e-9)


def test_triplet_soft_margin_matches_hand_computation():
    diffs = [1, 1, 2, 1, -5.5, -6]  # d_ap - d_an
    expected = sum(math.log(1 + math.exp(d)) for d in diffs) / 6
    loss = TripletLoss(soft_margin=True)(_line_features(), _IDS)
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(1.01221, abs=1e-4)  # (3 * 1.31326 + 2.12693 + 0.00408 + 0.00248) / 6


def test_triplet_soft_margin_is_stable_for_large_distances():
    f = torch.tensor([[0.0], [1e4], [1.0], [2.0]])
    loss = TripletLoss(soft_margin=True)(f, torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(loss)


def test_triplet_leaves_out_anchors_without_positive():
    f = torch.cat([_line_features(), torch.tensor([[100.0, 100.0]], dtype=torch.float64)])
    ids = torch.cat([_IDS, torch.tensor([7])])
    assert TripletLoss(margin=0.3)(f, ids).item() == pytest.approx(6.2 / 6, abs=1e-9)


@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [5, 5, 5, 5]])
def test_triplet_needs_a_pk_batch(ids):
    with pytest.raises(UserError, match="K >= 2"):
        TripletLoss()(torch.randn(4, 3), torch.tensor(ids))


# ----------------------------------------------------------------------------- center


def test_center_loss_matches_hand_computation():
    loss_fn = CenterLoss(num_classes=2, feat_dim=2)
    with torch.no_grad():
        loss_fn.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    f = torch.tensor([[3.0, 4.0], [1.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    # squared distances 25, 1, 0 (clamped to 1e-12); mean over the batch of 3
    loss = loss_fn(f, y)
    assert loss.item() == pytest.approx(26 / 3, abs=1e-5)
    loss.backward()
    # d/dc_0 = 2 (c_0 - f_0) / 3, d/dc_1 = 2 ((c_1 - f_1) + (c_1 - f_2)) / 3
    assert torch.allclose(loss_fn.centers.grad, torch.tensor([[-2.0, -8 / 3], [0.0, -2 / 3]]), atol=1e-6)


# ----------------------------------------------------------------------------- k-means


def _blobs(seed=0, per=10, k=3, d=8, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.eye(d)[:k] * 5.0
    labels = torch.arange(k).repeat_interleave(per)
    x = dirs[labels] + noise * torch.randn(k * per, d, generator=g)
    perm = torch.randperm(k * per, generator=g)
    return x[perm], labels[perm]


def _same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_kmeans_finds_separated_clusters_exactly(init):
    x, truth = _blobs()
    centroids, labels = kmeans(x, 3, seed=1, init=init, n_init=2)
    assert _same_partition(labels, truth)
    assert torch.allclose(centroids.norm(dim=1), torch.ones(3), atol=1e-5)
    # each centroid is the normalised mean of its points
    for a in range(3):
        mean = F.normalize(F.normalize(x[labels == a], dim=1).mean(0), dim=0)
        assert torch.allclose(centroids[a], mean, atol=1e-5)


def test_kmeans_is_deterministic_for_a_seed():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 5, generator=g)  # no cluster structure: the seed matters
    c1, l1 = kmeans(x, 6, seed=7)
    c2, l2 = kmeans(x, 6, seed=7)
    assert torch.equal(l1, l2) and torch.equal(c1, c2)
    _, l3 = kmeans(x, 6, seed=8)
    assert not torch.equal(l1, l3)


def test_kmeans_reseeds_an_empty_cluster_from_the_farthest_points():
    x, truth = _blobs()
    # two seeds in blob 0 and one pointing away from all data: it gets no point at first
    init = torch.zeros(3, 8)
    init[0, 0] = 1.0
    init[1, 0], init[1, 1] = 1.0, 0.1
    init[2, :3] = -1.0  # cosine -0.58 with every point
    centroids, labels = kmeans(x, 3, init=init)
    assert _same_partition(labels, truth)
    assert torch.isfinite(centroids).all()


def test_kmeans_more_clusters_than_distinct_points_stays_finite():
    x = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    centroids, labels = kmeans(x, 4, seed=0)
    assert torch.isfinite(centroids).all() and labels.shape == (8,)
    # every point is exactly on its centroid
    assert torch.allclose((F.normalize(x) * centroids[labels]).sum(1), torch.ones(8), atol=1e-6)


# ----------------------------------------------------------------------------- RIB

C, PER, D = 4, 8, 16


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(PER)
    means = F.normalize(torch.randn(C, D, generator=g), dim=1) * 3.0
    clustered = means[labels] + 0.2 * torch.randn(C * PER, D, generator=g)
    random = torch.randn(C * PER, D, generator=g)
    images = torch.rand(C * PER, 3, 8, 4, generator=g)
    return labels, random, clustered, images


def _fitted(q="p_a_given_y", **kw):
    labels, random, clustered, images = _toy()
    rib = RIBLoss(C, q=q, kmeans_n_init=1, **kw)
    rib.fit_input_clusters(images, size=(4, 2))
    return rib, labels, random, clustered, torch.arange(C * PER)


def test_ibb_matches_hand_computation():
    rib = RIBLoss(2, beta=1.0)
    rib.feature_centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rib.q_table = torch.tensor([[0.8, 0.3], [0.2, 0.7]])  # Q[a, y]
    f = torch.tensor([[2.0, 0.0]])  # unit (1, 0): squared distances 0 and 2
    phi_f = [1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2))]
    phi_x = torch.tensor([[0.25, 0.75]])
    first = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)  # sum_a phi_f(a) = 1
    second = phi_f[0] * math.log(0.3) + phi_f[1] * math.log(0.7)  # label 1
    got = rib(f, torch.tensor([1]), phi_x)
    assert got.item() == pytest.approx(first - second, abs=1e-6)
    # without inputs the constant first term is left out
    assert rib(f, torch.tensor([1])).item() == pytest.approx(-second, abs=1e-6)


def test_ibb_decreases_as_features_cluster_by_label():
    rib, labels, random, clustered, idx = _fitted()
    rib.start_epoch(random, labels, idx)
    before = rib(random, labels, idx).item()
    rib.start_epoch(clustered, labels, idx)
    after = rib(clustered, labels, idx).item()
    assert after < before - 0.2


def test_ibb_is_invariant_to_feature_scale():
    rib, labels, _, clustered, idx = _fitted()
    rib.start_epoch(clustered, labels, idx)
    value = rib(clustered, labels, idx).item()
    est = rib.estimates()
    rib.start_epoch(10.0 * clustered, labels, idx)
    assert rib(10.0 * clustered, labels, idx).item() == pytest.approx(value, abs=1e-5)
    assert rib.estimates()["I_FY"] == pytest.approx(est["I_FY"], abs=1e-6)


def test_warmup_gives_weight_zero_for_the_first_30_percent_of_epochs():
    rib = RIBLoss(10)
    weights = [rib.weight_at(e, 10) for e in range(10)]
    assert weights == [0.0] * 3 + [0.1] * 7
    assert [rib.weight_at(e, 120) for e in (0, 35, 36, 119)] == [0.0, 0.0, 0.1, 0.1]
    assert RIBLoss(10, weight=2.0, warmup_ratio=0.0).weight_at(0, 50) == 2.0
    assert RIBLoss(10, warmup_ratio=1.0).weight_at(49, 50) == 0.0


def test_i_fy_rises_as_features_cluster_and_is_at_most_log_c():
    rib, labels, random, clustered, idx = _fitted()
    low = rib.start_epoch(random, labels, idx)
    high = rib.start_epoch(clustered, labels, idx)
    assert high["I_FY"] > low["I_FY"] + 0.2
    assert 0.0 <= low["I_FY"] and high["I_FY"] <= math.log(C) + 1e-9
    assert high["I_XF"] >= 0.0 and high["IB"] == pytest.approx(high["I_XF"] - high["I_FY"])
    # a sharper assignment (larger beta) carries more information about the label
    sharp, *_ = _fitted(beta=20.0)
    top = sharp.start_epoch(clustered, labels, idx)
    assert high["I_FY"] < top["I_FY"] <= math.log(C) + 1e-9


def test_mutual_information_hand_values():
    assert mutual_information(torch.tensor([[0.5, 0.0], [0.0, 0.5]])) == pytest.approx(math.log(2))
    assert mutual_information(torch.tensor([[0.1, 0.3], [0.15, 0.45]])) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("q, axis", [("p_a_given_y", 0), ("q_y_given_a", 1)])
def test_q_normalisations_are_distributions_along_their_axis(q, axis):
    rib, labels, _, clustered, idx = _fitted(q=q)
    rib.start_epoch(clustered, labels, idx)
    table = rib.q_table  # (K_f, C)
    assert table.shape == (C, C) and (table > 0).all()
    assert torch.allclose(table.sum(dim=axis), torch.ones(C), atol=1e-5)
    assert not torch.allclose(table.sum(dim=1 - axis), torch.ones(C), atol=1e-3)


def test_gradients_flow_from_ibb_to_the_features():
    rib, labels, random, _, idx = _fitted()
    rib.start_epoch(random, labels, idx)
    f = random.clone().requires_grad_(True)
    rib(f, labels, idx).backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_input_assignment_forms_agree():
    rib, labels, _, clustered, idx = _fitted()
    _, _, _, images = _toy()
    rib.start_epoch(clustered, labels)  # rows in dataset order
    pick = torch.tensor([30, 3, 17, 8, 25, 12])
    f, y = clustered[pick], labels[pick]
    by_index = rib(f, y, idx[pick])
    by_assign = rib(f, y, rib.input_assign[pick])
    by_image = rib(f, y, images[pick])
    assert by_index.item() == pytest.approx(by_assign.item(), abs=1e-6)
    assert by_index.item() == pytest.approx(by_image.item(), abs=1e-5)
    assert torch.allclose(rib.input_assign.sum(1), torch.ones(C * PER), atol=1e-5)


def test_fit_input_clusters_from_a_shuffled_loader_with_indices():
    rib, *_ = _fitted()
    _, _, _, images = _toy()
    perm = torch.randperm(C * PER, generator=torch.Generator().manual_seed(5))
    batches = [(images[perm[s:s + 5]], torch.zeros(5), perm[s:s + 5]) for s in range(0, C * PER, 5)]
    other = RIBLoss(C, kmeans_n_init=1)
    other.fit_input_clusters(batches, size=(4, 2))
    assert torch.allclose(other.input_assign, rib.input_assign, atol=1e-6)
    with pytest.raises(UserError, match="no image for dataset indices"):
        RIBLoss(C).fit_input_clusters(batches[:-1], size=(4, 2), num_images=C * PER)


def test_state_dict_round_trip_restores_the_clusters():
    rib, labels, _, clustered, idx = _fitted(q="q_y_given_a")
    rib.start_epoch(clustered, labels, idx)
    fresh = RIBLoss(C, q="q_y_given_a")
    fresh.load_state_dict(rib.state_dict())
    assert fresh(clustered, labels, idx).item() == pytest.approx(rib(clustered, labels, idx).item(), abs=1e-7)
    assert fresh.estimates() == rib.estimates()


def test_forward_before_start_epoch_is_an_error():
    with pytest.raises(RuntimeError, match="start_epoch"):
        RIBLoss(3)(torch.randn(2, 4), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize("make, name", [
    (lambda: CrossEntropyLabelSmooth(0), "num_classes"),
    (lambda: CrossEntropyLabelSmooth(5, epsilon=1.0), "epsilon"),
    (lambda: TripletLoss(margin=-0.1), "margin"),
    (lambda: TripletLoss(margin=float("nan")), "margin"),
    (lambda: CenterLoss(10, 0), "feat_dim"),
    (lambda: RIBLoss(0), "num_classes"),
    (lambda: RIBLoss(5, weight=-1.0), "weight"),
    (lambda: RIBLoss(5, warmup_ratio=1.5), "warmup_ratio"),
    (lambda: RIBLoss(5, beta=0.0), "beta"),
    (lambda: RIBLoss(5, q="q_a"), "q must"),
    (lambda: RIBLoss(5, num_clusters=0), "num_clusters"),
    (lambda: RIBLoss(5).weight_at(-1, 10), "epoch"),
    (lambda: RIBLoss(5).weight_at(0, 0), "total_epochs"),
    (lambda: RIBLoss(5, num_clusters=9).start_epoch(torch.randn(6, 3), torch.zeros(6, dtype=torch.long)),
     "num_clusters"),
    (lambda: RIBLoss(5).fit_input_clusters(torch.rand(6, 3, 4, 4), size=(0, 2)), "size"),
    (lambda: kmeans(torch.randn(5, 2), 6), "k must"),
    (lambda: kmeans(torch.randn(5, 2), 2, init="farthest"), "init"),
    (lambda: kmeans(torch.randn(5, 2), 2, iters=0), "iters"),
])
def test_bad_parameters_raise_user_error_naming_them(make, name):
    with pytest.raises(UserError, match=name):
        make()
