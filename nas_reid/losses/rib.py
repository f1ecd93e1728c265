"""RIB: the information-bottleneck bound (IBB) loss of Wang, Jojic and Yang (arXiv 2505.08961,
2025), as reconstructed from the same group's released code (Statistical-Deep-Learning/LTM
``train.py`` and ``timm/loss/cross_entropy.py``; Statistical-Deep-Learning/DCS-Transformer's copy
of the latter), written anew in torch: the RIB paper could not be read.

Images X and features F are softly assigned to L2-normalised k-means centroids,
``phi(v, a) = softmax_a(-beta * ||v_hat - c_a||^2)``, beta = 1 by default: input clusters once
(:meth:`RIBLoss.fit_input_clusters`, stored per dataset index), feature clusters and the
variational Q at the start of every epoch (:meth:`RIBLoss.start_epoch`, on the whole training
set's features). The forward ``rib(feat, pid, index)`` returns the per-batch bound
``IBB = (1/B) sum_i [ -H(phi(X_i, .)) - sum_a phi(F_i, a) log Q(a, y_i) ]`` (only the second
term has a gradient). Total loss (group code): ``CE + weight * IBB``, weight 0.1, off for the first
``floor(warmup_ratio * total_epochs)`` epochs, warmup_ratio 0.3 (:meth:`RIBLoss.weight_at`).
:meth:`RIBLoss.estimates` gives I(X;F), I(F;Y) and IB per epoch, in nats. All state is in
buffers (``state_dict``). Not verified against the paper: the printed IBB equation, the Q
normalisation (p(a | y) by default, as the code; q(y | a) as an option), the re-ID weight and
schedule, beta. The bound term by term, the choices, the differences from the group code,
memory, DDP and a typical training loop: docs/training.md, section `nas_reid.losses.rib`.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .kmeans import kmeans

Q_MODES = ("p_a_given_y", "q_y_given_a")
_CHUNK = 16384


def soft_assign(x: torch.Tensor, centroids: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """phi(x_i, a) = softmax_a(-beta * ||x_i/||x_i|| - c_a||^2) with unit-norm centroids; (N, K)."""
    xn = F.normalize(x, dim=1)
    c = F.normalize(centroids.to(xn.dtype), dim=1)
    d2 = 2.0 - 2.0 * (xn @ c.T)
    return torch.softmax(-beta * d2, dim=1)


def mutual_information(joint: torch.Tensor) -> float:
    """I(A;B) in nats of a (A, B) joint histogram (normalised here), with 0 log 0 = 0."""
    p = joint.double()
    p = p / p.sum()
    pa = p.sum(dim=1, keepdim=True)
    pb = p.sum(dim=0, keepdim=True)
    ratio = p / (pa * pb)
    terms = torch.where(p > 0, p * torch.log(torch.where(p > 0, ratio, torch.ones_like(ratio))),
                        torch.zeros_like(p))
    return float(terms.sum())


def _check_int(cls: str, name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{cls}: {name} must be an integer >= {minimum}, got {value!r}")


def _check_number(cls: str, name: str, value, ok, what: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not ok(value)):
        raise UserError(f"{cls}: {name} must be {what}, got {value!r}")


def _image_vectors(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """(B, C, H, W) images -> (B, C*h*w) float vectors, area-downsampled to ``size`` first."""
    if images.dim() != 4:
        raise UserError(f"RIBLoss: images must have shape (B, C, H, W), got {tuple(images.shape)}")
    images = images.float()
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="area")
    return images.flatten(1)


class RIBLoss(nn.Module):
    """The IBB loss with its per-run input clusters and per-epoch feature clusters and Q.

    Args:
        num_classes: C, number of training identities.
        weight: weight of IBB in the total loss after the warm-up (>= 0); see :meth:`weight_at`.
        warmup_ratio: fraction of the epochs, in [0, 1], during which the weight is 0.
        beta: inverse temperature (> 0) of the soft cluster assignments.
        q: ``"p_a_given_y"`` (default, the group code) or ``"q_y_given_a"``; see the module doc.
        num_clusters: K_f, feature clusters; ``None`` = ``num_classes``.
        num_input_clusters: K_x, input clusters; ``None`` = ``num_classes``.
        kmeans_iters, kmeans_n_init, seed: passed to :func:`kmeans` (60 iterations and 3 restarts
            as the group code's faiss ``niter``/``nredo``).
        eps: floor of Q before its log.

    ``forward(features, labels, inputs)`` returns the unweighted batch bound IBB; multiply it by
    :meth:`weight_at`. ``inputs`` gives phi(X_i, .) and is one of: (B,) integer dataset indices
    (looked up in the assignments precomputed by :meth:`fit_input_clusters`), a (B, K_x) float
    tensor of input assignments, (B, C, H, W) images (assigned on the fly), or ``None`` (the
    constant first term is then left out: same gradient, value higher by the batch's mean input
    entropy).
    """

    _DYNAMIC = ("input_centroids", "input_assign", "feature_centroids", "q_table")

    def __init__(
        self,
        num_classes: int,
        weight: float = 0.1,
        warmup_ratio: float = 0.3,
        beta: float = 1.0,
        q: str = "p_a_given_y",
        num_clusters: int | None = None,
        num_input_clusters: int | None = None,
        *,
        kmeans_iters: int = 60,
        kmeans_n_init: int = 3,
        seed: int = 0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        cls = "RIBLoss"
        _check_int(cls, "num_classes", num_classes, 1)
        _check_number(cls, "weight", weight, lambda v: v >= 0, "a finite number >= 0")
        _check_number(cls, "warmup_ratio", warmup_ratio, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        _check_number(cls, "beta", beta, lambda v: v > 0, "a finite number > 0")
        if q not in Q_MODES:
            raise UserError(f"{cls}: q must be one of {', '.join(Q_MODES)}, got {q!r}")
        if num_clusters is not None:
            _check_int(cls, "num_clusters", num_clusters, 1)
        if num_input_clusters is not None:
            _check_int(cls, "num_input_clusters", num_input_clusters, 1)
        _check_int(cls, "kmeans_iters", kmeans_iters, 1)
        _check_int(cls, "kmeans_n_init", kmeans_n_init, 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"{cls}: seed must be an integer, got {seed!r}")
        _check_number(cls, "eps", eps, lambda v: 0 < v < 1, "a number in (0, 1)")
        self.num_classes = num_classes
        self.weight = float(weight)
        self.warmup_ratio = float(warmup_ratio)
        self.beta = float(beta)
        self.q = q
        self.num_clusters = num_clusters if num_clusters is not None else num_classes
        self.num_input_clusters = num_input_clusters if num_input_clusters is not None else num_classes
        self.kmeans_iters = kmeans_iters
        self.kmeans_n_init = kmeans_n_init
        self.seed = seed
        self.eps = float(eps)
        # (h, w) the images were downsampled to before clustering; (0, 0) = not downsampled
        self.register_buffer("input_size", torch.zeros(2, dtype=torch.long))
        self.register_buffer("input_centroids", torch.zeros(0, 0))   # (K_x, D_x)
        self.register_buffer("input_assign", torch.zeros(0, 0))      # (N, K_x): phi(X_i, .)
        self.register_buffer("feature_centroids", torch.zeros(0, 0))  # (K_f, D)
        self.register_buffer("q_table", torch.zeros(0, 0))           # (K_f, C)
        # I(X;F), I(F;Y), IB of the last start_epoch, NaN when unknown
        self.register_buffer("info", torch.full((3,), math.nan, dtype=torch.float64))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, weight={self.weight}, "
                f"warmup_ratio={self.warmup_ratio}, beta={self.beta}, q={self.q!r}, "
                f"num_clusters={self.num_clusters}, num_input_clusters={self.num_input_clusters}")

    # ------------------------------------------------------------------ schedule
    def warmup_epochs(self, total_epochs: int) -> int:
        """Number of leading epochs with weight 0: ``floor(warmup_ratio * total_epochs)``."""
        _check_int("RIBLoss.weight_at", "total_epochs", total_epochs, 1)
        return int(math.floor(self.warmup_ratio * total_epochs + 1e-9))

    def weight_at(self, epoch: int, total_epochs: int) -> float:
        """IBB weight at 0-based ``epoch``: 0 during the warm-up epochs, ``weight`` afterwards."""
        _check_int("RIBLoss.weight_at", "epoch", epoch, 0)
        return 0.0 if epoch < self.warmup_epochs(total_epochs) else self.weight

    # ------------------------------------------------------------------ input clusters
    @property
    def input_fitted(self) -> bool:
        return self.input_centroids.numel() > 0

    def _size(self) -> tuple[int, int] | None:
        h, w = (int(v) for v in self.input_size.tolist())
        return None if h == 0 else (h, w)

    def fit_on_images(self, items, input_size: tuple[int, int], *, batch_size: int,
                      num_workers: int = 0, device: torch.device | str | None = None) -> None:
        """:meth:`fit_input_clusters` on dataset ``items`` (``(path, pid, camid)``, in dataset
        order) read at ``input_size`` with the test-time transform and clustered at most at
        32x16, as the search and the retrain fit it before their first epoch."""
        from nas_reid.data.streams import plain_loader

        h, w = input_size
        self.fit_input_clusters(plain_loader(items, (h, w), batch_size=batch_size,
                                             num_workers=num_workers),
                                size=(min(32, h), min(16, w)), device=device)

    def fit_input_clusters(
        self,
        data: torch.Tensor | Iterable,
        *,
        size: tuple[int, int] | None = (32, 16),
        num_images: int | None = None,
        index_pos: int | None = -1,
        device: torch.device | str | None = None,
    ) -> None:
        """Cluster the training images once and store phi(X_i, .) for every dataset index i.

        Args:
            data: a (N, C, H, W) tensor of the training images in dataset order, or an iterable
                of batches (a DataLoader with a deterministic transform, no augmentation). A batch
                is an image tensor (indices then run on in order) or a tuple/list whose item 0
                holds the images and item ``index_pos`` the (B,) dataset indices (the last item
                of :class:`nas_reid.data.image_dataset.ImageDataset` batches); ``index_pos=None``
                takes the batches in dataset order.
            size: (h, w) the images are area-downsampled to before flattening; ``None`` keeps them.
            num_images: N; by default the largest index + 1. Every index in [0, N) must appear.
            device: where k-means runs; default the module's device.
        """
        cls = "RIBLoss.fit_input_clusters"
        if size is not None:
            if (not isinstance(size, (tuple, list)) or len(size) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
                raise UserError(f"{cls}: size must be None or two integers (h, w) >= 1, got {size!r}")
            size = (int(size[0]), int(size[1]))
        if num_images is not None:
            _check_int(cls, "num_images", num_images, 1)
        device = torch.device(device) if device is not None else self.info.device

        if isinstance(data, torch.Tensor):
            batches: Iterable = [data]
            index_pos = None
        else:
            batches = data
        parts, part_idx, next_idx = [], [], 0
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                images = batch[0]
                idx = batch[index_pos] if index_pos is not None else None
            else:
                images, idx = batch, None
            if not isinstance(images, torch.Tensor):
                raise UserError(f"{cls}: a batch holds no image tensor (got {type(images).__name__})")
            vec = _image_vectors(images.to(device), size)
            if idx is None:
                idx = torch.arange(next_idx, next_idx + len(vec))
            idx = torch.as_tensor(idx)
            if idx.dtype.is_floating_point or idx.shape != (len(vec),):
                raise UserError(f"{cls}: item index_pos={index_pos} of a batch is not a ({len(vec)},) "
                                f"integer tensor of dataset indices")
            next_idx += len(vec)
            parts.append(vec)
            part_idx.append(idx.long().to(device))
        if not parts:
            raise UserError(f"{cls}: data holds no images")
        vecs, idx = torch.cat(parts), torch.cat(part_idx)
        if int(idx.min()) < 0:
            raise UserError(f"{cls}: negative dataset index {int(idx.min())}")
        n = num_images if num_images is not None else int(idx.max()) + 1
        if int(idx.max()) >= n:
            raise UserError(f"{cls}: dataset index {int(idx.max())} >= num_images={n}")
        x = vecs.new_zeros(n, vecs.shape[1])
        seen = torch.zeros(n, dtype=torch.bool, device=device)
        x[idx] = vecs
        seen[idx] = True
        if not bool(seen.all()):
            missing = (~seen).nonzero().flatten()[:5].tolist()
            raise UserError(f"{cls}: no image for dataset indices {missing}... of {n}: the loader must "
                            f"visit every training image once (no sampler, no drop_last)")
        if self.num_input_clusters > n:
            raise UserError(f"{cls}: num_input_clusters={self.num_input_clusters} exceeds the "
                            f"{n} training images")
        centroids, _ = kmeans(x, self.num_input_clusters, iters=self.kmeans_iters, seed=self.seed,
                              n_init=self.kmeans_n_init)
        own = self.info.device
        self.input_size = torch.tensor(size if size is not None else (0, 0), dtype=torch.long, device=own)
        self.input_centroids = centroids.float().to(own)
        self.input_assign = self._chunked_assign(x, centroids).float().to(own)

    def _chunked_assign(self, x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([soft_assign(x[s:s + _CHUNK], centroids, self.beta)
                              for s in range(0, x.shape[0], _CHUNK)])

    def input_assignments(self, images: torch.Tensor) -> torch.Tensor:
        """phi(X, .) of a batch of images (B, C, H, W) against the fitted input clusters; (B, K_x)."""
        if not self.input_fitted:
            raise RuntimeError("RIBLoss: call fit_input_clusters() before assigning images")
        vec = _image_vectors(images, self._size())
        if vec.shape[1] != self.input_centroids.shape[1]:
            raise UserError(f"RIBLoss: images give {vec.shape[1]} values per image after resizing, "
                            f"the input clusters were fitted on {self.input_centroids.shape[1]}")
        with torch.no_grad():
            return soft_assign(vec, self.input_centroids.to(vec.device), self.beta)

    def _input_phi(self, inputs, n: int, where: str) -> torch.Tensor | None:
        """phi(X_i, .) for n samples from indices, assignments or images (see the class doc)."""
        if inputs is None:
            return None
        if not isinstance(inputs, torch.Tensor):
            inputs = torch.as_tensor(inputs)
        if not inputs.dtype.is_floating_point:
            if not self.input_fitted:
                raise RuntimeError(f"RIBLoss.{where}: dataset indices need fit_input_clusters() first")
            if inputs.shape != (n,):
                raise UserError(f"RIBLoss.{where}: indices must have shape ({n},), got {tuple(inputs.shape)}")
            if n and (int(inputs.min()) < 0 or int(inputs.max()) >= self.input_assign.shape[0]):
                raise UserError(f"RIBLoss.{where}: a dataset index is outside [0, "
                                f"{self.input_assign.shape[0]}), the images fit_input_clusters saw")
            return self.input_assign[inputs.long().to(self.input_assign.device)]
        if inputs.dim() == 2:
            if inputs.shape[0] != n:
                raise UserError(f"RIBLoss.{where}: input assignments must have {n} rows, "
                                f"got {tuple(inputs.shape)}")
            return inputs.detach()
        if inputs.dim() == 4:
            if inputs.shape[0] != n:
                raise UserError(f"RIBLoss.{where}: got {inputs.shape[0]} images for {n} features")
            return self.input_assignments(inputs)
        raise UserError(f"RIBLoss.{where}: inputs must be (B,) indices, (B, K_x) assignments or "
                        f"(B, C, H, W) images, got shape {tuple(inputs.shape)}")

    # ------------------------------------------------------------------ per epoch
    def _check_labels(self, labels: torch.Tensor, n: int, where: str) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            labels = torch.as_tensor(labels)
        if labels.shape != (n,) or labels.dtype.is_floating_point:
            raise UserError(f"RIBLoss.{where}: labels must be ({n},) integers, got "
                            f"{tuple(labels.shape)} {labels.dtype}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise UserError(f"RIBLoss.{where}: a label is outside [0, num_classes={self.num_classes})")
        return labels.long()

    def _label_hist(self, phi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """M[a, y] = sum_i phi[i, a] 1[labels_i = y], by one-hot products (deterministic)."""
        m = phi.new_zeros(phi.shape[1], self.num_classes)
        for s in range(0, phi.shape[0], _CHUNK):
            onehot = F.one_hot(labels[s:s + _CHUNK], self.num_classes).to(phi.dtype)
            m += phi[s:s + _CHUNK].T @ onehot
        return m

    def start_epoch(self, features: torch.Tensor, labels: torch.Tensor, inputs=None) -> dict[str, float]:
        """Refit the feature clusters and Q on the whole training set; update the estimates.

        Args:
            features: (N, D) features of all training images (the same feature the loss will be
                applied to, extracted without gradient, best in eval mode without augmentation).
            labels: (N,) identity labels.
            inputs: where each row's phi(X, .) comes from: (N,) dataset indices, (N, K_x)
                assignments, or ``None`` = row i is dataset index i (when the input clusters are
                fitted on exactly N images); without input clusters I(X;F) is NaN.

        Returns :meth:`estimates`.
        """
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise UserError("RIBLoss.start_epoch: features must be a (N, D) tensor")
        n = features.shape[0]
        labels = self._check_labels(labels, n, "start_epoch").to(features.device)
        if self.num_clusters > n:
            raise UserError(f"RIBLoss.start_epoch: num_clusters={self.num_clusters} exceeds the "
                            f"{n} training features")
        feats = features.detach().to(torch.promote_types(features.dtype, torch.float32))
        if not bool(torch.isfinite(feats).all()):
            raise UserError("RIBLoss.start_epoch: features contain NaN or infinite values")
        if inputs is None and self.input_fitted:
            if self.input_assign.shape[0] != n:
                raise UserError(f"RIBLoss.start_epoch: {n} features but input clusters were fitted on "
                                f"{self.input_assign.shape[0]} images: pass the dataset indices")
            phi_x = self.input_assign
        else:
            phi_x = self._input_phi(inputs, n, "start_epoch")
        with torch.no_grad():
            centroids, _ = kmeans(feats, self.num_clusters, iters=self.kmeans_iters, seed=self.seed,
                                  n_init=self.kmeans_n_init)
            phi_f = self._chunked_assign(feats, centroids)
            m = self._label_hist(phi_f, labels)  # (K_f, C)
            if self.q == "p_a_given_y":
                counts = torch.bincount(labels, minlength=self.num_classes).to(m.dtype)
                q_table = torch.where(counts > 0, m / counts.clamp_min(1), torch.full_like(m, 1.0 / m.shape[0]))
            else:
                q_table = m / m.sum(dim=1, keepdim=True).clamp_min(1e-30)
            i_fy = mutual_information(m)
            i_xf = math.nan
            if phi_x is not None:
                phi_x = phi_x.to(device=phi_f.device, dtype=phi_f.dtype)
                i_xf = mutual_information(phi_x.T @ phi_f)
        own = self.info.device
        self.feature_centroids = centroids.float().to(own)
        self.q_table = q_table.float().to(own)
        self.info = torch.tensor([i_xf, i_fy, i_xf - i_fy], dtype=torch.float64, device=own)
        return self.estimates()

    def estimates(self) -> dict[str, float]:
        """``{"I_XF", "I_FY", "IB"}`` in nats from the last :meth:`start_epoch` (NaN before)."""
        i_xf, i_fy, ib = (float(v) for v in self.info.tolist())
        return {"I_XF": i_xf, "I_FY": i_fy, "IB": ib}

    # ------------------------------------------------------------------ per batch
    def forward(self, features: torch.Tensor, labels: torch.Tensor, inputs=None) -> torch.Tensor:
        if self.feature_centroids.numel() == 0:
            raise RuntimeError("RIBLoss: call start_epoch() before computing the loss")
        if features.dim() != 2 or features.shape[1] != self.feature_centroids.shape[1]:
            raise UserError(f"RIBLoss: features must have shape (B, {self.feature_centroids.shape[1]}) "
                            f"like those given to start_epoch, got {tuple(features.shape)}")
        n = features.shape[0]
        labels = self._check_labels(labels, n, "forward").to(features.device)
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        phi_f = soft_assign(features, self.feature_centroids.to(features.device), self.beta)
        log_q = torch.log(self.q_table.to(device=features.device, dtype=phi_f.dtype).clamp_min(self.eps))
        cross = (phi_f * log_q[:, labels].T).sum(dim=1)  # sum_a phi(F_i, a) log Q(a, y_i)
        bound = -cross
        phi_x = self._input_phi(inputs, n, "forward")
        if phi_x is not None:
            phi_x = phi_x.to(device=phi_f.device, dtype=phi_f.dtype)
            neg_entropy = torch.xlogy(phi_x, phi_x).sum(dim=1)  # sum_b phi log phi = -H(phi(X_i, .))
            bound = bound + phi_f.sum(dim=1) * neg_entropy
        return bound.mean()

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # the cluster buffers' shapes are only known once fitted: take them from the checkpoint
        for name in self._DYNAMIC:
            src = state_dict.get(prefix + name)
            cur = getattr(self, name)
            if isinstance(src, torch.Tensor) and src.shape != cur.shape:
                setattr(self, name, torch.empty(src.shape, dtype=cur.dtype, device=cur.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
