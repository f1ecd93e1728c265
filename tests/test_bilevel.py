"""The bilevel step (nas_reid.search.bilevel) on a toy supernet, without a run folder."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_reid.losses import TripletLoss
from nas_reid.search.bilevel import Bilevel, NonFiniteLoss


class Toy(nn.Module):
    """One edge, two candidates: ``keep`` passes the input (whose identity means differ),
    ``blank`` replaces it by zeros, which tells no identity from another."""

    def __init__(self, ids: int = 4, dim: int = 8) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(2))
        self.proj = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, ids)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def forward(self, x: torch.Tensor) -> dict:
        w = F.softmax(self.alpha, dim=0)
        feat = self.proj(w[0] * x + w[1] * torch.zeros_like(x))
        return {"feat": feat, "feat_bn": feat, "logits": self.classifier(feat)}


def _batch(gen: torch.Generator, means: torch.Tensor, k: int = 4):
    pids = torch.arange(len(means)).repeat_interleave(k)
    x = means[pids] + 0.5 * torch.randn(len(pids), means.shape[1], generator=gen)
    return x, pids, torch.zeros_like(pids), torch.arange(len(pids))


def _bilevel(net: Toy, weight_loss=None) -> Bilevel:
    triplet = TripletLoss(0.3)

    def default_weight_loss(out, pids, index):
        ce = F.cross_entropy(out["logits"], pids)
        return ce, {"id": ce}

    def arch_loss(out, pids):
        task = triplet(F.normalize(out["feat_bn"], dim=1), pids)
        return task, task

    weights = [p for n, p in net.named_parameters() if n != "alpha"]
    return Bilevel(net, torch.optim.SGD(weights, lr=0.05),
                   torch.optim.Adam(net.arch_parameters(), lr=0.05),
                   weight_loss or default_weight_loss, arch_loss, device=torch.device("cpu"))


def test_architecture_steps_raise_the_probability_of_the_candidate_that_helps():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(4, 8, generator=gen)
    net = Toy()
    bilevel = _bilevel(net)
    for _ in range(20):  # warm-up: weights only, as the search's warmup_epochs
        bilevel.weight_step(_batch(gen, means))
    probs = []
    for _ in range(30):
        bilevel.weight_step(_batch(gen, means))
        bilevel.arch_step(_batch(gen, means))
        probs.append(F.softmax(net.alpha.detach(), dim=0)[0].item())
    assert probs[0] > 0.5 and probs[-1] > 0.75, probs
    assert probs[-1] > probs[len(probs) // 2] > probs[0]


def test_each_step_moves_only_its_own_parameters():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    means = torch.randn(4, 8, generator=gen)
    net = Toy()
    bilevel = _bilevel(net)
    alpha, weights = net.alpha.detach().clone(), net.proj.weight.detach().clone()
    losses = bilevel.weight_step(_batch(gen, means))
    assert set(losses) == {"total", "id"} and math.isfinite(losses["total"])
    assert torch.equal(net.alpha, alpha) and net.alpha.grad is None
    assert not torch.equal(net.proj.weight, weights)
    weights = net.proj.weight.detach().clone()
    losses = bilevel.arch_step(_batch(gen, means))
    assert set(losses) == {"triplet", "total"}
    assert not torch.equal(net.alpha, alpha) and torch.equal(net.proj.weight, weights)
    assert all(p.requires_grad for p in net.parameters())  # unfrozen after the step


def test_a_non_finite_weight_loss_changes_nothing():
    net = Toy()
    bilevel = _bilevel(net, weight_loss=lambda out, pids, index: (
        out["feat"].sum() * float("nan"), {}))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    gen = torch.Generator().manual_seed(2)
    with pytest.raises(NonFiniteLoss):
        bilevel.weight_step(_batch(gen, torch.randn(4, 8, generator=gen)))
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())
