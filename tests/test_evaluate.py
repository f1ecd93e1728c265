"""Tests of model evaluation (evaluate_model, results, ranked lists) and the ranked-list PNG."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nas_reid.data.base import ReIDDataset
from nas_reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from nas_reid.errors import EvaluationError, UserError
from nas_reid.evaluation import evaluate_ranking, pairwise_distance, rerank
from nas_reid.evaluation.evaluate import (
    DEFAULT_RERANK,
    EvaluationResult,
    choose_queries,
    evaluate_model,
    format_results,
    rank_gallery,
    ranked_lists,
    write_results,
)
from nas_reid.space.genotype import Genotype
from nas_reid.space.discrete import build_model
from nas_reid.viz.ranked_list import (
    EMPTY_CELL,
    MATCH_COLOR,
    QUERY_COLOR,
    WRONG_COLOR,
    cell_box,
    plot_ranked_lists,
    ranked_list_size,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

METRIC_KEYS = ["R1", "R5", "R10", "mAP", "mINP"]


# --------------------------------------------------------------------------------------------
# fixtures: datasets whose images a stub model can recognise


def solid_png(path: Path, index: int) -> str:
    """A 4x8 PNG whose red channel is ``index`` everywhere (lossless, survives resizing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), (index, 40, 200)).save(path, format="PNG")
    return str(path)


def coded_dataset(folder: Path, query_labels, gallery_labels, name="tiny") -> ReIDDataset:
    """Query image i has code i, gallery image j has code len(query) + j."""
    q = [(solid_png(folder / "query" / f"{i:03d}.png", i), p, c)
         for i, (p, c) in enumerate(query_labels)]
    off = len(q)
    g = [(solid_png(folder / "gallery" / f"{j:03d}.png", off + j), p, c)
         for j, (p, c) in enumerate(gallery_labels)]
    return ReIDDataset(name=name, root=folder, train=[], query=q, gallery=g)


class Lookup(nn.Module):
    """Eval forward returns ``table[code]`` where code is the image's red value (see above)."""

    input_size = (16, 8)

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.float())
        self.frozen = nn.BatchNorm1d(2)  # a submodule whose own mode must be kept
        self.calls = 0
        self.modes_seen: set[bool] = set()

    def forward(self, x):
        self.calls += 1
        self.modes_seen.add(self.training)
        red = x[:, 0].mean(dim=(1, 2)) * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        code = torch.round(red * 255).long()
        f = self.table[code]
        return {"feat_bn": f, "feat": 2 * f}


# Hand case (euclidean, 1-D features). Query A: pid 1 cam 0 at 0; query B: pid 2 cam 1 at 10.
HAND_Q = [(1, 0), (2, 1)]
HAND_G = [(1, 0), (3, 1), (1, 1), (2, 0), (2, 1), (1, 2)]
HAND_QF = [0.0, 10.0]
HAND_GF = [0.1, 1.0, 2.0, 10.5, 9.9, 5.0]
# A (g0 ignored): g1 (neg) 1, g2 (pos) 4, g5 (pos) 25, g4 98.01, g3 110.25 -> positives at
# ranks 1, 2: AP = (1/2 + 2/3) / 2 = 7/12, INP = 2/3, first hit at rank 1.
# B (g4 ignored): g3 (pos) 0.25, g5 25, g2 64, g1 81, g0 98.01 -> AP = 1, INP = 1, R1 hit.
HAND = {"R1": Fraction(1, 2), "R5": Fraction(1), "R10": Fraction(1),
        "mAP": (Fraction(7, 12) + 1) / 2, "mINP": (Fraction(2, 3) + 1) / 2}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    ds = coded_dataset(tmp_path_factory.mktemp("hand"), HAND_Q, HAND_G, name="hand")
    table = torch.tensor(HAND_QF + HAND_GF)[:, None]
    return ds, table


# random case: 8 queries, 30 gallery items, 5 ids over 3 cameras (many ignored items);
# query 2 has no valid match (pid 9 only under its own camera)
RNG = np.random.default_rng(3)
RAND_Q = [(int(p), int(c)) for p, c in zip(RNG.integers(0, 5, 8), RNG.integers(0, 3, 8))]
RAND_Q[2] = (9, 1)
RAND_G = [(int(p), int(c)) for p, c in zip(RNG.integers(0, 5, 30), RNG.integers(0, 3, 30))]
RAND_G[5] = (9, 1)


@pytest.fixture(scope="module")
def rand(tmp_path_factory):
    ds = coded_dataset(tmp_path_factory.mktemp("rand"), RAND_Q, RAND_G, name="rand")
    table = torch.from_numpy(np.random.default_rng(7).standard_normal((38, 16))).float()
    return ds, table


def labels(items):
    return (np.array([it[1] for it in items]), np.array([it[2] for it in items]))


def reference(dist, ds):
    qp, qc = labels(ds.query)
    gp, gc = labels(ds.gallery)
    out = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=10)
    return {"R1": out["cmc"][0], "R5": out["cmc"][4], "R10": out["cmc"][9],
            "mAP": out["mAP"], "mINP": out["mINP"]}, out


# --------------------------------------------------------------------------------------------
# metrics


def test_hand_computed_metrics(hand):
    ds, table = hand
    result = evaluate_model(Lookup(table), ds, metric="euclidean")
    for key in METRIC_KEYS:
        assert result.plain[key] == pytest.approx(float(HAND[key]), abs=1e-12), key
    assert result.reranked is None and result.rerank_params is None
    assert result.valid_queries == 2 and result.feature_dim == 1
    assert torch.equal(result.query_features, table[:2])
    assert torch.equal(result.gallery_features, table[2:])


def test_matches_evaluate_ranking_and_rerank_by_hand(rand):
    ds, table = rand
    qf, gf = table[:8], table[8:]
    for metric in ("cosine", "euclidean"):
        result = evaluate_model(Lookup(table), ds, metric=metric, rerank=True,
                                keep_distances=True)
        expected, raw = reference(pairwise_distance(qf, gf, metric), ds)
        assert raw["num_skipped_queries"] == 1
        assert result.valid_queries == 7
        assert result.plain == pytest.approx(expected, abs=1e-12)
        assert torch.allclose(result.distances, pairwise_distance(qf, gf, metric))
        base = ((nn.functional.normalize(qf, dim=1), nn.functional.normalize(gf, dim=1))
                if metric == "cosine" else (qf, gf))
        rr = rerank(*base, k1=20, k2=6, lambda_=0.3)
        assert torch.allclose(result.reranked_distances, rr, atol=1e-6)
        expected_rr, _ = reference(rr, ds)
        assert result.reranked == pytest.approx(expected_rr, abs=1e-9)
        assert result.rerank_params == DEFAULT_RERANK
    # other parameters, "lambda_" accepted as an alias
    result = evaluate_model(Lookup(table), ds, rerank=True,
                            rerank_params={"k1": 5, "k2": 1, "lambda_": 0.5})
    rr = rerank(nn.functional.normalize(qf, dim=1), nn.functional.normalize(gf, dim=1),
                k1=5, k2=1, lambda_=0.5)
    assert result.reranked == pytest.approx(reference(rr, ds)[0], abs=1e-9)
    assert result.to_dict()["protocol"]["rerank_params"] == {"k1": 5, "k2": 1, "lambda": 0.5}


def test_feature_key_and_model_modes(rand):
    ds, table = rand
    model = Lookup(table)
    model.train()
    model.frozen.eval()
    result = evaluate_model(model, ds, feature="feat", keep_features=False)
    assert model.modes_seen == {False}  # extracted in eval mode
    assert model.training and not model.frozen.training  # each submodule's mode restored
    assert result.query_features is None and result.to_dict()["protocol"]["feature"] == "feat"
    # feat = 2 * feat_bn: same cosine ranking
    assert result.plain == evaluate_model(model, ds).plain
    with pytest.raises(EvaluationError, match="no 'nope'"):
        evaluate_model(model, ds, feature="nope")
    assert model.training and not model.frozen.training  # restored after an error too


def test_results_dict_table_and_json(hand, tmp_path):
    ds, table = hand
    result = evaluate_model(Lookup(table), ds, metric="euclidean", rerank=True,
                            rerank_params={"k1": 3, "k2": 2})
    d = result.to_dict()
    assert list(d) == ["dataset", "protocol", "plain", "rerank", "feature_dim", "seconds"]
    assert d["dataset"] == {"name": "hand", "root": str(ds.root), "queries": 2, "gallery": 6,
                            "valid_queries": 2}
    assert d["protocol"]["metric"] == "euclidean" and d["protocol"]["rerank"] is True
    assert d["protocol"]["rerank_params"] == {"k1": 3, "k2": 2, "lambda": 0.3}
    assert d["protocol"]["flip"] is False and d["protocol"]["input_size"] == [16, 8]
    for block in ("plain", "rerank"):
        assert list(d[block]) == METRIC_KEYS
        assert all(0.0 <= v <= 1.0 for v in d[block].values())
    assert set(d["seconds"]) == {"features", "ranking", "rerank", "total"}
    assert all(v >= 0 for v in d["seconds"].values())
    assert d["feature_dim"] == 1
    assert json.loads(json.dumps(d)) == d

    lines = format_results(result).splitlines()
    assert lines[0].split() == METRIC_KEYS
    assert lines[1].split() == ["plain", "50.0", "100.0", "100.0", "79.2", "83.3"]
    assert lines[2].split()[0] == "re-ranked" and len(lines) == 3
    assert format_results(d) == format_results(result)  # the JSON report works too
    plain_only = evaluate_model(Lookup(table), ds, metric="euclidean")
    assert len(format_results(plain_only).splitlines()) == 2
    assert plain_only.to_dict()["rerank"] is None
    assert plain_only.to_dict()["protocol"]["rerank_params"] is None

    out = tmp_path / "eval" / "results.json"
    write_results(result, out, extra={"checkpoint": "runs/x/best.pt", "genotype": "no cells"})
    text = out.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "dataset": {')
    assert json.loads(text) == {**d, "checkpoint": "runs/x/best.pt", "genotype": "no cells"}
    # a failing write leaves the previous file as it was and no temporary file behind
    with pytest.raises(TypeError):
        write_results(result, out, extra={"bad": object()})
    with pytest.raises(ValueError, match="clashes"):
        write_results(result, out, extra={"plain": 1})
    assert out.read_text() == text
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json"]
    fresh = tmp_path / "other" / "results.json"
    with pytest.raises(TypeError):
        write_results(result, fresh, extra={"bad": {1, 2}})
    assert not fresh.exists() and list(fresh.parent.glob("*")) == []


# --------------------------------------------------------------------------------------------
# flip and a real network


class Linear(nn.Module):
    """feat_bn = <x, W_k> for 4 fixed weight maps: not invariant to a horizontal flip."""

    input_size = (16, 8)

    def __init__(self, weight):
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, x):
        f = torch.einsum("nchw,kchw->nk", x, self.weight)
        return {"feat_bn": f}


def jpeg_dataset(folder: Path, query_labels, gallery_labels, size=(8, 16)) -> ReIDDataset:
    rng = np.random.default_rng(0)
    items = {}
    for split, labs in (("query", query_labels), ("gallery", gallery_labels)):
        items[split] = []
        for i, (p, c) in enumerate(labs):
            path = folder / split / f"{p:04d}_c{c + 1}s1_{i:06d}_00.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, format="JPEG", quality=90)
            items[split].append((str(path), p, c))
    return ReIDDataset("jpegs", folder, [], items["query"], items["gallery"])


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return jpeg_dataset(tmp_path_factory.mktemp("jpegs"), [(1, 0), (2, 1), (3, 2)],
                        [(1, 1), (1, 0), (2, 0), (2, 2), (3, 0), (4, 1), (5, 2), (3, 2)])


def test_flip_averages_with_the_mirrored_image(jpegs):
    weight = torch.randn(4, 3, 16, 8, generator=torch.Generator().manual_seed(0))
    plain = evaluate_model(Linear(weight), jpegs)
    flipped = evaluate_model(Linear(weight), jpegs, flip=True)
    # mean of <x, W> and <flip(x), W> = <x, (W + flip(W)) / 2>
    symmetric = evaluate_model(Linear((weight + weight.flip(3)) / 2), jpegs)
    for a, b in ((flipped.query_features, symmetric.query_features),
                 (flipped.gallery_features, symmetric.gallery_features)):
        assert torch.allclose(a, b, atol=1e-4)
    assert (flipped.query_features - plain.query_features).abs().max() > 1e-2
    assert flipped.to_dict()["protocol"]["flip"] is True


GENOTYPE = {
    "schema": "nas-reid/genotype", "version": 1,
    "space": {"name": None, "hash": None}, "input": {"height": 64, "width": 32},
    "backbone": {"name": "resnet18", "last_stride": 1, "choices": {}},
    "cells": [], "probabilities": {},
    "provenance": {"seed": None, "epoch": None, "search_run": None, "package_version": "0.1.0"},
}


def test_real_network_from_a_genotype(jpegs):
    torch.manual_seed(0)
    model = build_model(Genotype.from_json(json.dumps(GENOTYPE)), num_classes=3)
    model.train()
    result = evaluate_model(model, jpegs, rerank=True, rerank_params={"k1": 4, "k2": 2},
                            batch_size=4)
    assert model.training and all(m.training for m in model.modules())
    d = result.to_dict()
    assert d["feature_dim"] == 512 and d["protocol"]["input_size"] == [64, 32]
    assert d["dataset"]["valid_queries"] == 3
    for block in ("plain", "rerank"):
        assert all(0.0 <= d[block][k] <= 1.0 for k in METRIC_KEYS)
        assert d[block]["R1"] <= d[block]["R5"] <= d[block]["R10"]


# --------------------------------------------------------------------------------------------
# errors


def test_errors_before_any_extraction(rand, tmp_path):
    ds, table = rand
    model = Lookup(table)
    empty_q = ReIDDataset("e", tmp_path, [], [], ds.gallery)
    with pytest.raises(EvaluationError, match="query set is empty") as info:
        evaluate_model(model, empty_q)
    assert isinstance(info.value, UserError)
    with pytest.raises(EvaluationError, match="gallery set is empty"):
        evaluate_model(model, ReIDDataset("e", tmp_path, [], ds.query, []))
    same_camera = [(path, pid, 1) for path, pid, _ in ds.gallery]
    only_own_camera = ReIDDataset("e", tmp_path, [], [(p, pid, 1) for p, pid, _ in ds.query],
                                  same_camera)
    with pytest.raises(EvaluationError, match="no query has a valid match"):
        evaluate_model(model, only_own_camera)
    with pytest.raises(EvaluationError, match="metric"):
        evaluate_model(model, ds, metric="manhattan")
    with pytest.raises(EvaluationError, match="unknown re-ranking parameter 'k3'"):
        evaluate_model(model, ds, rerank=True, rerank_params={"k3": 1})
    with pytest.raises(EvaluationError, match="lambda"):
        evaluate_model(model, ds, rerank=True, rerank_params={"lambda": 2})
    with pytest.raises(EvaluationError, match="k1"):
        evaluate_model(model, ds, rerank=True, rerank_params={"k1": 0})
    assert model.calls == 0


# --------------------------------------------------------------------------------------------
# ranked lists


def test_ranked_lists_hand_case(hand):
    ds, table = hand
    result = evaluate_model(Lookup(table), ds, metric="euclidean")
    a, b = ranked_lists(result, [0, 1], topk=3)
    assert a.gallery_indices.tolist() == [1, 2, 5] and a.matches.tolist() == [False, True, True]
    assert a.distances == pytest.approx([1.0, 4.0, 25.0], abs=1e-5)
    assert a.ignored == 1 and a.query == ds.query[0] and a.gallery[0] == ds.gallery[1]
    (b,) = ranked_lists(result, [1], topk=10)
    assert b.gallery_indices.tolist() == [3, 5, 2, 1, 0] and b.matches.tolist()[0]
    assert b.ignored == 1  # g4: same pid, same camera


def test_ignored_items_never_in_ranked_lists(rand):
    ds, table = rand
    kept = evaluate_model(Lookup(table), ds, rerank=True, keep_distances=True)
    lean = evaluate_model(Lookup(table), ds)
    everyone = list(range(len(ds.query)))
    gp, gc = labels(ds.gallery)
    dist = pairwise_distance(table[:8], table[8:]).numpy()
    for reranked, result in ((False, lean), (False, kept), (True, kept)):
        lists = ranked_lists(result, everyone, topk=len(ds.gallery), reranked=reranked)
        full = kept.reranked_distances.numpy() if reranked else dist
        for rl, (_, qp, qc) in zip(lists, ds.query):
            ignored = (gp == qp) & (gc == qc)
            assert not any(pid == qp and cam == qc for _, pid, cam in rl.gallery)
            assert rl.ignored == int(ignored.sum()) and len(rl.gallery) == 30 - rl.ignored
            keep = np.flatnonzero(~ignored)
            order = keep[np.argsort(full[rl.query_index, keep], kind="stable")]
            assert rl.gallery_indices.tolist() == order.tolist()
            assert np.all(np.diff(rl.distances) >= 0)
            assert rl.matches.tolist() == (gp[order] == qp).tolist()
    short = ranked_lists(lean, [3], topk=2)[0]
    assert len(short.gallery_indices) == 2
    with pytest.raises(EvaluationError, match="keep_distances"):
        ranked_lists(lean, [0], reranked=True)
    with pytest.raises(EvaluationError, match="out of range"):
        ranked_lists(lean, [8])
    nothing = evaluate_model(Lookup(table), ds, keep_features=False)
    with pytest.raises(EvaluationError, match="keep_features"):
        ranked_lists(nothing, [0])
    with pytest.raises(EvaluationError, match="distances must be"):
        rank_gallery(dist[:2], ds.query, ds.gallery, [0])


def test_choose_queries_is_spread_over_valid_queries():
    gallery = [("g", 1, 0), ("g", 2, 0), ("g", 3, 1)]
    query = [("q", 1, 1), ("q", 2, 0), ("q", 3, 0), ("q", 4, 0), ("q", 1, 2), ("q", 3, 2)]
    # valid: 0 (pid 1 cam 0 in gallery), 2, 4, 5; 1 has only its own camera, 3 is absent
    assert choose_queries(query, gallery, 10) == [0, 2, 4, 5]
    assert choose_queries(query, gallery, 2) == [0, 5]
    assert choose_queries(query, gallery, 3) == [0, 4, 5]
    assert choose_queries(query, gallery, 1) == [0]


# --------------------------------------------------------------------------------------------
# the picture


def _pixel(img, x, y):
    return img.getpixel((x, y))[:3]


def test_ranked_list_png(hand, tmp_path):
    ds, table = hand
    result = evaluate_model(Lookup(table), ds, metric="euclidean")
    lists = ranked_lists(result, [0, 1], topk=6)
    thumb = (48, 24)
    out = plot_ranked_lists(lists, tmp_path / "pics" / "ranked.png", topk=6, thumb_size=thumb,
                            title="hand: top-6")
    assert out == tmp_path / "pics" / "ranked.png"
    assert sorted(p.name for p in out.parent.iterdir()) == ["ranked.png"]
    with Image.open(out) as img:
        assert img.format == "PNG"
        img.load()
    assert img.size == ranked_list_size(2, 6, thumb, title=True)
    width, height = img.size
    assert 2 * thumb[0] < height < 2 * (thumb[0] + 60) + 60
    assert 7 * thumb[1] < width
    # borders: query blue; A = g1 (wrong), g2, g5 (matches), g3/g4 (wrong); 6th cell empty
    # (A has 5 kept items out of 6); B = g3 (match), then g5, g2, g1, g0 (all pid 1 or 3)
    expected = {(0, 0): QUERY_COLOR, (0, 1): WRONG_COLOR, (0, 2): MATCH_COLOR,
                (0, 3): MATCH_COLOR, (0, 4): WRONG_COLOR, (1, 0): QUERY_COLOR,
                (1, 1): MATCH_COLOR, (1, 2): WRONG_COLOR, (1, 5): WRONG_COLOR}
    for (row, col), color in expected.items():
        x0, y0, x1, y1 = cell_box(row, col, thumb, title=True)
        for x, y in ((x0, y0), (x1, y1), (x0 + 1, (y0 + y1) // 2), (x1 - 1, y1 - 1)):
            assert _pixel(img, x, y) == color, (row, col, x, y)
    for row in (0, 1):
        x0, y0, x1, y1 = cell_box(row, 6, thumb, title=True)
        assert _pixel(img, (x0 + x1) // 2, (y0 + y1) // 2) == EMPTY_CELL
        assert _pixel(img, x0, y0) == EMPTY_CELL  # no border on an empty cell
    # the image itself is inside the border: the coded PNG's colour (red = its code)
    x0, y0, x1, y1 = cell_box(0, 0, thumb, title=True)
    assert _pixel(img, (x0 + x1) // 2, (y0 + y1) // 2) == (0, 40, 200)

    # one more query = one more row of fixed height
    w3, h3 = ranked_list_size(3, 6, thumb, title=True)
    assert w3 == width and h3 - height == cell_box(1, 0, thumb)[1] - cell_box(0, 0, thumb)[1]
    assert ranked_list_size(2, 6, thumb)[1] < height  # no title band


def test_ranked_list_png_errors_leave_nothing(hand, tmp_path):
    ds, table = hand
    result = evaluate_model(Lookup(table), ds, metric="euclidean")
    lists = ranked_lists(result, [0], topk=3)
    broken = [type(lists[0])(**{**lists[0].__dict__,
                                "query": (str(tmp_path / "missing.jpg"), 1, 0)})]
    target = tmp_path / "out" / "ranked.png"
    with pytest.raises(UserError, match="cannot read image"):
        plot_ranked_lists(broken, target)
    with pytest.raises(UserError, match="no queries"):
        plot_ranked_lists([], target)
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_result_is_a_dataclass_with_counts(hand):
    ds, table = hand
    result = evaluate_model(Lookup(table), ds, metric="euclidean")
    assert isinstance(result, EvaluationResult)
    assert result.num_query == 2 and result.num_gallery == 6
    assert result.distances is None and result.reranked_distances is None
