"""Spherical (cosine) k-means in plain torch, on the tensor's own device.

Used by :class:`nas_reid.losses.rib.RIBLoss` for its input and feature clusters, in place of the
faiss k-means of the authors' group code (Statistical-Deep-Learning/LTM, ``train.py`` and
``timm/utils/kmeans.py``), so that nothing outside torch is needed.

Points and centroids are L2-normalised; a point goes to the centroid of highest cosine
similarity, and a centroid is the normalised mean of its points. Runs are deterministic for a
seed: all random draws come from a CPU ``torch.Generator`` (k-means++ samples through a float64
cumulative sum on the CPU), and the centroid update is a one-hot matrix product rather than an
atomic scatter, so the same data and seed give the same clusters on every run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError

_CHUNK = 16384  # rows per block in the assignment step, to bound the (N, k) similarity memory


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best centroid per row of ``x`` and its cosine similarity (both normalised)."""
    best_sim, best = [], []
    for start in range(0, x.shape[0], _CHUNK):
        sim = x[start:start + _CHUNK] @ centroids.T
        s, i = sim.max(dim=1)  # ties: the lowest index
        best_sim.append(s)
        best.append(i)
    return torch.cat(best_sim), torch.cat(best)


def _cluster_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums of the rows of ``x`` and counts, via one-hot products (deterministic)."""
    sums = x.new_zeros(k, x.shape[1])
    counts = x.new_zeros(k)
    for start in range(0, x.shape[0], _CHUNK):
        onehot = F.one_hot(labels[start:start + _CHUNK], k).to(x.dtype)
        sums += onehot.T @ x[start:start + _CHUNK]
        counts += onehot.sum(dim=0)
    return sums, counts


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding with D^2 = min squared chord distance 2 - 2 cos to the chosen seeds."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen).item())
    chosen = [first]
    d2 = (2.0 - 2.0 * (x @ x[first])).clamp_min(0.0)
    for _ in range(1, k):
        w = d2.double().cpu()
        w[chosen] = 0.0
        total = float(w.sum())
        u = float(torch.rand(1, generator=gen, dtype=torch.float64).item())
        if total > 0.0 and math.isfinite(total):
            cum = torch.cumsum(w, 0)
            idx = int(torch.searchsorted(cum, torch.tensor([u * total], dtype=torch.float64)).item())
            idx = min(idx, n - 1)
            while w[idx] == 0.0:  # u * total fell on a zero-weight boundary: step to the next
                idx = (idx + 1) % n
        else:  # every remaining point coincides with a seed: pick uniformly among the unchosen
            free = torch.ones(n, dtype=torch.bool)
            free[chosen] = False
            candidates = free.nonzero().flatten()
            idx = int(candidates[min(int(u * len(candidates)), len(candidates) - 1)])
        chosen.append(idx)
        d2 = torch.minimum(d2, (2.0 - 2.0 * (x @ x[idx])).clamp_min(0.0))
    return x[torch.tensor(chosen, device=x.device)].clone()


def _lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    k = centroids.shape[0]
    labels = None
    for _ in range(iters):
        sim, new_labels = _assign(x, centroids)
        sums, counts = _cluster_sums(x, new_labels, k)
        empty = (counts == 0).nonzero().flatten()
        if len(empty) > 0:
            # re-seed each empty cluster from the points farthest from their own centroid
            order = torch.sort(sim, stable=True).indices[: len(empty)]
            sums[empty] = x[order]
            counts[empty] = 1.0
            # keep the donors' old clusters consistent: remove them from their sums
            donors_old = new_labels[order]
            sums.index_put_((donors_old,), -x[order], accumulate=True)
            counts.index_put_((donors_old,), -torch.ones_like(sim[order]), accumulate=True)
            new_labels = new_labels.clone()
            new_labels[order] = empty
        new_centroids = F.normalize(sums, dim=1)
        # a cluster emptied by donating keeps its previous centroid
        lost = counts <= 0
        if bool(lost.any()):
            new_centroids[lost] = centroids[lost]
        # stop when nothing moves (with empty clusters re-seeded the same way twice, as when k
        # exceeds the number of distinct points, re-seeding cannot help either)
        converged = (labels is not None and torch.equal(new_labels, labels)
                     and torch.equal(new_centroids, centroids))
        centroids, labels = new_centroids, new_labels
        if converged:
            break
    sim, labels = _assign(x, centroids)
    return centroids, labels, float(sim.double().sum())


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 60,
    seed: int = 0,
    init: str | torch.Tensor = "k-means++",
    n_init: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means of the rows of ``x`` (N, D), run on ``x.device``.

    Args:
        x: points, one per row; they are L2-normalised first (a zero row stays zero).
        k: number of clusters, ``1 <= k <= N``.
        iters: maximum Lloyd iterations; stops early once no assignment changes.
        seed: seeds the CPU generator behind every random choice.
        init: ``"k-means++"`` (D^2 sampling with D^2 = 2 - 2 cos), ``"random"`` (k distinct points),
            or a (k, D) tensor of initial centroids.
        n_init: independent restarts (seeds ``seed, seed+1, ...``); the run with the highest total
            cosine similarity of points to their centroid is kept (faiss' ``nredo``).

    Empty clusters are re-seeded with the points farthest (lowest cosine) from their own
    centroid, one point per empty cluster.

    Returns:
        ``(centroids, labels)``: (k, D) unit-norm centroids in ``x``'s float dtype (at least
        float32) and the (N,) long cluster index of every point.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise UserError("kmeans: x must be a 2-D tensor (N points, D dims)")
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise UserError(f"kmeans: k must be an integer in [1, N={n}], got {k!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise UserError(f"kmeans: iters must be an integer >= 1, got {iters!r}")
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise UserError(f"kmeans: n_init must be an integer >= 1, got {n_init!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"kmeans: seed must be an integer, got {seed!r}")
    if isinstance(init, torch.Tensor):
        if init.shape != (k, x.shape[1]):
            raise UserError(f"kmeans: init tensor must have shape (k={k}, D={x.shape[1]}), "
                            f"got {tuple(init.shape)}")
    elif init not in ("k-means++", "random"):
        raise UserError(f"kmeans: init must be 'k-means++', 'random' or a (k, D) tensor, got {init!r}")

    dtype = torch.promote_types(x.dtype, torch.float32)
    xn = F.normalize(x.detach().to(dtype), dim=1)
    if not bool(torch.isfinite(xn).all()):
        raise UserError("kmeans: x contains NaN or infinite values")

    best = None
    for run in range(n_init):
        gen = torch.Generator().manual_seed(seed + run)
        if isinstance(init, torch.Tensor):
            c0 = F.normalize(init.detach().to(device=x.device, dtype=dtype), dim=1)
        elif init == "random":
            c0 = xn[torch.randperm(n, generator=gen)[:k].to(x.device)].clone()
        else:
            c0 = _kmeans_pp(xn, k, gen)
        result = _lloyd(xn, c0, iters)
        if best is None or result[2] > best[2]:
            best = result
        if isinstance(init, torch.Tensor):
            break  # restarts from the same given centroids would repeat the same run
    return best[0], best[1]
