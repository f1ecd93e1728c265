"""Search quality against a ground truth: every architecture of a small space retrained, and
what a strategy picks judged by that table (as NAS-Bench-201 judges strategies).

The ground truth (:func:`run_ground_truth`) retrains every architecture of a space whose cells
are one node with one edge (so an architecture is one candidate op per cell position: 7 ops at
2 positions give 49) with a recipe and several seeds. Each retrain trains on the training
identities less a held-out share (:func:`nas_reid.hpo.objective.validation_split`, the tuner's
split) and is evaluated twice: on the held-out identities (``val_*``, what a strategy may select
on) and on the dataset's query / gallery (``test_*``, what is reported). One CSV row per finished
(architecture, seed) is appended and flushed at once; rows already in the file are skipped, so
the run can be stopped and started again, in parallel jobs or on another machine.

The judgement of a pick (:func:`judge`): its regret (the best architecture's mean test mAP minus
the pick's, in points), its rank percentile among all architectures (100: the best, 0: the worst),
and Kendall's tau between the strategy's scores of all architectures and their mean test mAP.
Random search at equal compute (:func:`random_search`) samples ``k`` architectures, observes one
seed's *validation* mAP of each, keeps the best by validation and reports its mean *test* mAP;
test figures are never used to select.

Architecture keys are ``"layer3=eca layer4=se"``: each position and its op's display label.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from nas_reid.errors import UserError

GT_FIELDS = ["arch", "seed", "val_mAP", "val_R1", "val_mINP", "test_mAP", "test_R1", "test_mINP",
             "params", "flops", "wall_seconds", "recipe", "overrides", "epochs", "space",
             "space_hash", "validation", "threads", "device", "torch", "package_version",
             "finished_at", "backbone_sha256"]
"""The ground-truth CSV's columns; metrics in percent. ``backbone_sha256``: the first 12 hex
digits of the pretrained backbone file's SHA-256 ("" without one; "unrecorded" in rows written
before the column existed)."""


# ------------------------------------------------------------------------------ CSV files


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file written by :func:`append_row` (none if there is no file)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_columns(path: str | os.PathLike, fields: Sequence[str]) -> bool:
    """Whether ``path`` is new (absent or empty); a file with other columns than ``fields``
    raises UserError (checked before a long run, not only at its first row)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return True
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), [])
    if header != list(fields):
        raise UserError(f"{path}: its columns ({', '.join(header)}) are not this writer's "
                        f"({', '.join(fields)}); write to another file")
    return False


def append_row(path: str | os.PathLike, row: Mapping[str, Any], fields: Sequence[str]) -> None:
    """Append one row (after a header if the file is new or empty), flushed to disk: a kill
    loses at most the row being written. A file with other columns raises UserError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = check_columns(path, fields)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(dict(row))
        handle.flush()
        os.fsync(handle.fileno())


# ------------------------------------------------------------------------------ architectures


def arch_key(labels_by_position: Mapping[str, str]) -> str:
    return " ".join(f"{position}={label}" for position, label in labels_by_position.items())


def _check_enumerable(space) -> None:
    if space.backbone.searchable:
        raise UserError(f"space {space.name!r}: a searchable backbone has too many architectures "
                        "to enumerate; ground truth needs a fixed backbone")
    if space.cells.nodes != 1:
        raise UserError(f"space {space.name!r}: cells of {space.cells.nodes} nodes; ground truth "
                        "enumerates spaces whose cells are one node with one edge")


def enumerate_architectures(space) -> list[tuple[str, Any]]:
    """Every architecture of ``space`` as ``(key, genotype)``, in the order of the candidates
    (the first position varies slowest)."""
    from nas_reid.space.genotype import Genotype

    _check_enumerable(space)
    positions = list(space.cells.positions)
    out = []
    for combo in itertools.product(range(len(space.ops)), repeat=len(positions)):
        cells = [{"position": p, "nodes": 1, "edges": [
            {"source": 0, "target": 1, "op": space.ops[k].name, "params": space.ops[k].full_params()}]}
            for p, k in zip(positions, combo)]
        genotype = Genotype.from_dict({
            "schema": "nas-reid/genotype", "version": 1,
            "space": {"name": space.name, "hash": space.canonical_hash()},
            "input": {"height": space.input.height, "width": space.input.width},
            "backbone": {"name": space.backbone.name, "last_stride": space.backbone.last_stride,
                         "choices": {}},
            "cells": cells,
            "provenance": {"search_run": f"ground truth of {space.name}"},
        })
        out.append((arch_key({p: space.ops[k].display for p, k in zip(positions, combo)}), genotype))
    return out


def key_of(genotype, space) -> str:
    """The key of a genotype of ``space`` (its cells' ops matched to the candidates)."""
    labels = {}
    for cell in genotype.cells:
        edges = list(cell.live_edges())
        if len(edges) != 1:
            raise UserError(f"genotype cell {cell.position}: {len(edges)} live edges; a ground-truth "
                            "architecture has one")
        op = edges[0]
        matches = [c.display for c in space.ops if c.name == op.op and c.full_params() == op.params]
        if not matches:
            raise UserError(f"genotype cell {cell.position}: op {op.op} {op.params} is not a "
                            f"candidate of space {space.name!r}")
        labels[cell.position] = matches[0]
    return arch_key(labels)


def scores_from_probabilities(genotype, space) -> dict[str, float]:
    """A strategy's score of every architecture: the sum over positions of the log-probability
    of its op (the probabilities the genotype records), i.e. log P(architecture)."""
    positions = list(space.cells.positions)
    probs = genotype.probabilities
    missing = [p for p in positions if p not in probs]
    if missing:
        raise UserError(f"genotype records no probabilities at {missing[0]}; cannot score "
                        "architectures")
    out = {}
    for combo in itertools.product(range(len(space.ops)), repeat=len(positions)):
        total = 0.0
        for p, k in zip(positions, combo):
            row = probs[p].values[0]
            total += math.log(max(row[k], 1e-12))
        out[arch_key({p: space.ops[k].display for p, k in zip(positions, combo)})] = total
    return out


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class ArchTruth:
    key: str
    test: float
    """Mean test mAP (%) over seeds."""
    val: float
    """Mean validation mAP (%) over seeds."""
    test_std: float
    val_std: float
    seeds: int
    seconds: float
    """Mean wall seconds of one retrain."""


@dataclass
class Truth:
    """The ground truth of a space: one :class:`ArchTruth` per architecture, and the rows."""

    archs: dict[str, ArchTruth]
    rows: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]]) -> "Truth":
        rows = [dict(r) for r in rows]
        by_arch: dict[str, list[dict]] = {}
        for r in rows:
            by_arch.setdefault(r["arch"], []).append(r)
        archs = {}
        for key, mine in by_arch.items():
            test = [float(r["test_mAP"]) for r in mine]
            val = [float(r["val_mAP"]) for r in mine]
            archs[key] = ArchTruth(
                key, statistics.fmean(test), statistics.fmean(val),
                statistics.stdev(test) if len(test) > 1 else 0.0,
                statistics.stdev(val) if len(val) > 1 else 0.0, len(mine),
                statistics.fmean(float(r["wall_seconds"]) for r in mine))
        return cls(archs, rows)

    @property
    def best(self) -> ArchTruth:
        return max(self.archs.values(), key=lambda a: a.test)

    def ranked(self) -> list[ArchTruth]:
        return sorted(self.archs.values(), key=lambda a: -a.test)

    def seed_values(self, metric: str = "test_mAP") -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for r in self.rows:
            out.setdefault(r["arch"], {})[int(r["seed"])] = float(r[metric])
        return out

    def noise(self, metric: str = "test_mAP") -> dict[str, Any]:
        """Seed-to-seed noise: the mean over architectures of the std over seeds, and Kendall's
        tau between the rankings of every pair of seeds (over the architectures both have)."""
        values = self.seed_values(metric)
        stds = [statistics.stdev(v.values()) for v in values.values() if len(v) > 1]
        seeds = sorted({s for v in values.values() for s in v})
        taus = {}
        for a, b in itertools.combinations(seeds, 2):
            common = [k for k, v in values.items() if a in v and b in v]
            if len(common) >= 3:
                taus[f"{a}-{b}"] = kendall_tau([values[k][a] for k in common],
                                               [values[k][b] for k in common])
        return {"std": statistics.fmean(stds) if stds else float("nan"), "tau": taus}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties handled; nan if either is constant)."""
    from scipy.stats import kendalltau

    if len(x) != len(y):
        raise ValueError(f"kendall_tau: {len(x)} vs {len(y)} values")
    return float(kendalltau(x, y).statistic)


# ------------------------------------------------------------------------------ judging picks


@dataclass(frozen=True)
class Judgement:
    key: str
    test: float
    regret: float
    """Best mean test mAP minus the pick's (points; 0 is the best architecture)."""
    percentile: float
    """100 * (architectures with a lower mean test mAP) / (architectures - 1)."""
    tau: float | None = None


def judge(truth: Truth, key: str, scores: Mapping[str, float] | None = None) -> Judgement:
    """The pick ``key`` judged against ``truth`` (and Kendall's tau of ``scores`` with the
    truth's mean test mAP over every architecture both name)."""
    if key not in truth.archs:
        raise UserError(f"architecture {key!r} is not in the ground truth ({len(truth.archs)} "
                        "architectures)")
    pick = truth.archs[key]
    lower = sum(1 for a in truth.archs.values() if a.test < pick.test)
    percentile = 100.0 * lower / max(len(truth.archs) - 1, 1)
    tau = None
    if scores is not None:
        common = [k for k in truth.archs if k in scores]
        tau = kendall_tau([scores[k] for k in common], [truth.archs[k].test for k in common])
    return Judgement(key, pick.test, truth.best.test - pick.test, percentile, tau)


def random_search(truth: Truth, k: int, *, trials: int = 2000, seed: int = 0) -> list[Judgement]:
    """``trials`` random searches of ``k`` distinct architectures each: one seed's row of each
    (drawn at random: what training it once would show), the best by *validation* mAP kept and
    judged by its mean test mAP."""
    if k < 1:
        raise ValueError(f"random search needs k >= 1, got {k}")
    rng = random.Random(seed)
    by_arch: dict[str, list[dict]] = {}
    for r in truth.rows:
        by_arch.setdefault(r["arch"], []).append(r)
    keys = sorted(by_arch)
    k = min(k, len(keys))
    out = []
    for _ in range(trials):
        observed = [rng.choice(by_arch[key]) for key in rng.sample(keys, k)]
        best = max(observed, key=lambda r: float(r["val_mAP"]))
        out.append(judge(truth, best["arch"]))
    return out


def summarize(judgements: Sequence[Judgement]) -> dict[str, float]:
    """Median and mean regret, mean test mAP and percentile of a set of picks."""
    regrets = [j.regret for j in judgements]
    taus = [j.tau for j in judgements if j.tau is not None and not math.isnan(j.tau)]
    return {"median_regret": statistics.median(regrets), "mean_regret": statistics.fmean(regrets),
            "test": statistics.fmean(j.test for j in judgements),
            "percentile": statistics.fmean(j.percentile for j in judgements),
            "tau": statistics.fmean(taus) if taus else float("nan")}


def equal_compute_k(search_seconds: float, retrain_seconds: float) -> int:
    """How many architectures random search may retrain for the compute of one search plus
    the retrain of its pick (at least 1)."""
    return max(1, int(round((search_seconds + retrain_seconds) / retrain_seconds)))


# ------------------------------------------------------------------------------ the runner


def recipe_agreement(full: Truth, cheap: Truth, metric: str = "test") -> dict[str, Any]:
    """How a cheaper recipe ranks the architectures both tables hold, against the full one:
    Kendall's tau of the per-architecture means of ``metric`` (``test`` or ``val``; seed offsets
    taken out, :func:`arch_effects`, so a table part-way through a seed compares fairly), the
    number of architectures compared, and whether the full recipe's best is the cheap one's."""
    common = sorted(set(full.archs) & set(cheap.archs))
    if len(common) < 2:
        raise UserError(f"the two recipes share {len(common)} architecture(s); at least 2 are "
                        "needed to compare their rankings")
    fx, cx = arch_effects(full, metric), arch_effects(cheap, metric)
    return {"archs": len(common), "tau": kendall_tau([fx[k] for k in common],
                                                     [cx[k] for k in common]),
            "same_best": max(common, key=fx.get) == max(common, key=cx.get)}


def _additive_fit(truth: Truth, metric: str) -> tuple[dict[str, float], dict[int, float], float, int]:
    """``value = architecture effect + seed offset + residual`` fitted to the ``metric`` mAP of
    every row by alternating means (exact for a complete table): the effects, the offsets from
    the first seed, the residual sum of squares and its degrees of freedom (rows -
    architectures - seeds + 1)."""
    values = truth.seed_values(f"{metric}_mAP")
    cells = [(a, s, v) for a, by_seed in values.items() for s, v in by_seed.items()]
    seeds = sorted({s for _, s, _ in cells})
    offset = dict.fromkeys(seeds, 0.0)

    def effects() -> dict[str, float]:
        return {a: statistics.fmean(v - offset[s] for s, v in by_seed.items())
                for a, by_seed in values.items()}

    for _ in range(1000):
        effect = effects()
        new = {s: statistics.fmean(v - effect[a] for a, s2, v in cells if s2 == s) for s in seeds}
        new = {s: o - new[seeds[0]] for s, o in new.items()}
        done = max(abs(new[s] - offset[s]) for s in seeds) < 1e-10
        offset = new
        if done:
            break
    effect = effects()
    sse = sum((v - effect[a] - offset[s]) ** 2 for a, s, v in cells)
    return effect, offset, sse, len(cells) - len(values) - len(seeds) + 1


def arch_effects(truth: Truth, metric: str = "test") -> dict[str, float]:
    """Each architecture's ``metric`` mAP with the seed offsets taken out (:func:`rank_noise`):
    its mean over seeds when every architecture has the same seeds; when some lack a seed (a
    table part-way through a seed), not lifted or lowered by which seeds it has."""
    return _additive_fit(truth, metric)[0]


def rank_noise(truth: Truth, metric: str = "test") -> dict[str, Any] | None:
    """The retrain noise that can reorder architectures, apart from what a seed does to all.

    Fits ``value = architecture effect + seed offset + residual`` to the ``metric`` mAP of every
    row and returns the residual std ``sd`` (over ``dof`` = rows - architectures - seeds + 1
    degrees of freedom) and each seed's ``offsets`` from the first seed: a seed that lifts every
    architecture alike (a shared part of its data order and initialisation) moves no ranking,
    yet it is most of the spread of one architecture's seeds when offsets are large. None when
    no degree of freedom is left (fewer than two architectures with two seeds)."""
    _, offset, sse, dof = _additive_fit(truth, metric)
    if dof <= 0:
        return None
    return {"sd": math.sqrt(sse / dof), "dof": dof, "offsets": offset}


def agreement_ceiling(full: Truth, cheap: Truth, metric: str = "test", *, threshold: float = 0.8,
                      trials: int = 2000, seed: int = 0) -> dict[str, Any]:
    """What retrain noise alone allows :func:`recipe_agreement` to reach: the Kendall tau two
    recipes that rank the architectures *identically* would show over the architectures both
    hold, given each recipe's seed-to-seed noise and seeds per architecture.

    A parametric simulation: the common truth is the mean of the two recipes' standardised
    per-architecture means (unit spread); each recipe observes it with Gaussian noise of its
    noise-to-spread ratio (:func:`rank_noise`'s std over the std of its means once their own
    noise is taken out) divided by the root of its seed count. Offsets a seed gives every
    architecture alike are left out, as they reorder nothing when each architecture has the same
    seeds. A recipe whose noise is unknown (:func:`rank_noise` is None) takes the other's ratio
    (``assumed`` names it). Returns the median tau, its 5th and 95th
    percentiles, the share of trials at or above ``threshold``, the architectures compared and
    each recipe's ``(seed std, noise-to-spread ratio)``.
    """
    common = sorted(set(full.archs) & set(cheap.archs))
    if len(common) < 3:
        raise UserError(f"the two recipes share {len(common)} architecture(s); at least 3 are "
                        "needed to simulate their agreement")
    tables = {"full": full, "cheap": cheap}
    ratios: dict[str, float | None] = {}
    noise: dict[str, tuple[float | None, float | None]] = {}
    zs = []
    for name, truth in tables.items():
        effect, _, sse, dof = _additive_fit(truth, metric)  # once: effects and rank noise
        means = [effect[k] for k in common]
        spread = statistics.stdev(means)
        zs.append([(m - statistics.fmean(means)) / spread if spread else 0.0 for m in means])
        sd = math.sqrt(sse / dof) if dof > 0 else None
        if sd is None:
            ratios[name] = None
        else:
            noise_var = statistics.fmean(sd ** 2 / truth.archs[k].seeds for k in common)
            signal = math.sqrt(max(spread ** 2 - noise_var, 1e-12))
            ratios[name] = sd / signal
        noise[name] = (sd, ratios[name])
    unknown = [n for n, r in ratios.items() if r is None]
    if len(unknown) == 2:
        raise UserError("neither recipe has two seeds of two or more architectures: their "
                        "retrain noise, seed offsets left out, is unknown")
    for name in unknown:
        ratios[name] = next(r for r in ratios.values() if r is not None)
    truth_z = [(a + b) / 2 for a, b in zip(*zs)]
    spread = statistics.stdev(truth_z) or 1.0
    truth_z = [t / spread for t in truth_z]
    rng = random.Random(seed)
    taus = []
    for _ in range(trials):
        x, y = ([t + rng.gauss(0.0, ratios[name] / math.sqrt(tables[name].archs[k].seeds))
                 for t, k in zip(truth_z, common)] for name in ("full", "cheap"))
        taus.append(kendall_tau(x, y))
    taus.sort()
    return {"archs": len(common), "median": statistics.median(taus),
            "low": taus[int(0.05 * (trials - 1))], "high": taus[int(0.95 * (trials - 1))],
            "p_threshold": sum(t >= threshold for t in taus) / trials, "threshold": threshold,
            "noise": noise, "assumed": unknown}


def pending_jobs(archs: Sequence[tuple[str, Any]], seeds: Sequence[int],
                 rows: Iterable[Mapping[str, str]], tag: str) -> list[tuple[str, Any, int]]:
    """The (key, genotype, seed) not yet in ``rows`` under the recipe ``tag``, seed-major (every
    architecture's first seed before any second seed, so a partial table covers the space)."""
    done = {(r["arch"], int(r["seed"])) for r in rows if r.get("overrides", "") == tag}
    return [(key, genotype, seed) for seed in seeds for key, genotype in archs
            if (key, seed) not in done]


def check_one_backbone(rows: Iterable[Mapping[str, str]], sha: str, path: str | os.PathLike) -> None:
    """A ground-truth CSV holds retrains from one pretrained backbone file: raise UserError if
    any of ``rows`` (those of ``path``) names another than ``sha``. Retrain noise is measured
    between seeds of one file; another file (pretrained again, or on another processor) moves
    every architecture at once, so its rows go to a CSV of their own."""
    other = sorted({r.get("backbone_sha256", "unrecorded") for r in rows} - {sha})
    if other:
        raise UserError(f"{path} holds retrains from another pretrained backbone file "
                        f"({', '.join(o or 'none' for o in other)}) than this run's "
                        f"({sha or 'none'}): write to another --csv, e.g. one named after "
                        f"{sha or 'the backbone'}")


def run_ground_truth(jobs: Sequence[tuple[str, Any, int]], train: Callable[[dict], dict],
                     csv_path: str | os.PathLike, *, base: Mapping[str, Any], workers: int = 1,
                     log: Callable[[str], None] | None = None) -> int:
    """Run ``train`` on every job (``{"arch", "seed", "genotype" (JSON text), **base}``), in
    ``workers`` spawned processes, appending each returned row to ``csv_path`` as it finishes.
    Returns the number of rows written."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    payloads = [{**base, "arch": key, "seed": seed, "genotype": genotype.to_json()}
                for key, genotype, seed in jobs]
    written = 0

    def record(row: dict) -> None:
        nonlocal written
        append_row(csv_path, row, GT_FIELDS)
        written += 1
        if log:
            log(f"  [{written}/{len(payloads)}] {row['arch']} seed {row['seed']}: val mAP "
                f"{float(row['val_mAP']):.1f}, test mAP {float(row['test_mAP']):.1f} "
                f"({float(row['wall_seconds']) / 60:.1f} min)")

    if workers <= 1:
        for payload in payloads:
            record(train(payload))
        return written
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for future in as_completed([pool.submit(train, p) for p in payloads]):
            record(future.result())
    return written
