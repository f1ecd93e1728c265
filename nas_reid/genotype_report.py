"""What a genotype and its run folder say, as data and as text: the layer under
``nas-reid genotype show | plot | diff`` and the notebooks (the pictures are :mod:`nas_reid.viz`).

:func:`load_source` reads anything that names a genotype, the way ``nas-reid retrain
--genotype`` does (a ``genotype.json``, a run folder, a reference name such as ``rga_sc``), and
with a run folder also what the run logged:

==============  ===========================================================================
search run      ``genotype.json`` (or, unfinished, the last line of ``genotype_history.jsonl``),
                ``metrics.jsonl`` epoch records (losses, RIB, held-out mAP, temperature,
                ``arch_probs``, ``op_counts``; :mod:`nas_reid.search.runlog`), the genotype
                history, and the candidate ops of ``config.yaml`` (label -> op name and params)
retrain run     ``genotype.json`` and ``metrics.jsonl`` (losses, ``eval``, lr); a retrain trains
                one fixed genotype, so there is no probability history
genotype file   the genotype alone (a searched one still carries its final probabilities)
reference       a shipped hand-written genotype: no probabilities, no history
==============  ===========================================================================

What a source lacks is said in :attr:`RunSource.notes` (and by the plots, on the figure), never
raised: only a spec that names no genotype at all, or a broken file, raises
:class:`~nas_reid.genotype.GenotypeError` / :class:`~nas_reid.errors.UserError`.

Costs (:func:`cell_costs`): parameters and forward FLOPs of every cell for one image, from
:func:`nas_reid.ops.registry.op_cost` at the cell's ``(C, H, W)``
(:meth:`~nas_reid.genotype.Genotype.position_shapes`). Only live edges count: the discrete
network builds no dead edge. The backbone is not counted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from nas_reid.errors import UserError
from nas_reid.genotype import Genotype, GenotypeError

GENOTYPE_FILE = "genotype.json"
METRICS_FILE = "metrics.jsonl"
HISTORY_FILE = "genotype_history.jsonl"
CONFIG_FILE = "config.yaml"
RUN_ENV = "NAS_REID_RUN"
"""Environment variable naming the run (or genotype) the notebooks show."""
DEFAULT_REFERENCE = "rga_sc"
"""What the notebooks show when no run is named and none is found."""

Kind = Literal["search", "retrain", "run", "file", "reference"]

__all__ = [
    "RUN_ENV", "DEFAULT_REFERENCE", "RunSource", "load_source", "find_default_run",
    "default_compare",
    "ProbabilityHistory", "probability_history", "op_count_history",
    "EdgeCost", "CellCost", "cell_costs", "total_cost",
    "format_count", "format_flops", "format_delta", "format_params", "format_summary",
    "full_params",
    "epoch_rows", "final_rows", "cost_rows", "format_table", "markdown_table",
]


# ------------------------------------------------------------------------------------ sources


@dataclass
class RunSource:
    """A genotype and what its run folder logged (see the module doc)."""

    spec: str
    """What the user named."""
    genotype: Genotype
    name: str
    """A short name for titles and legends: the reference name, the run folder's name, or the
    file's name."""
    kind: Kind
    path: Path | None
    """The run folder, or the genotype file (None for a reference)."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """The ``"kind": "epoch"`` records of ``metrics.jsonl``, in order."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """The genotype documents of ``genotype_history.jsonl``, one per epoch."""
    candidates: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """Candidate label -> (op name, parameters), from the search's ``config.yaml``."""
    finished: bool = True
    notes: list[str] = field(default_factory=list)
    """What this source lacks (no probabilities, no history, ...), one sentence each."""

    @property
    def is_search(self) -> bool:
        return self.kind == "search"

    @property
    def has_probabilities(self) -> bool:
        return bool(self.genotype.probabilities)

    def op_of(self, label: str) -> str:
        """The op name of candidate ``label`` (a label may differ from the op name, e.g.
        ``se16`` for ``se`` with reduction 16); an unknown label is returned as it is."""
        if label in self.candidates:
            return self.candidates[label][0]
        return op_of_label(label)

    @property
    def label_ops(self) -> dict[str, str]:
        """Label -> op name of every candidate label this source knows."""
        labels = {lab for p in self.genotype.probabilities.values() for lab in p.ops}
        labels |= set(self.candidates)
        return {lab: self.op_of(lab) for lab in sorted(labels)}

    def describe(self) -> str:
        """One line: ``runs/x (search run, finished, 12 epochs)``."""
        where = str(self.path) if self.path is not None else self.name
        what = {"search": "search run", "retrain": "retrain run", "run": "run folder",
                "file": "genotype file", "reference": "reference genotype"}[self.kind]
        extra = []
        if self.kind == "search":
            extra.append("finished" if self.finished else "unfinished")
        if self.metrics:
            extra.append(f"{len(self.metrics)} epoch{'s' if len(self.metrics) != 1 else ''} logged")
        return f"{where} ({', '.join([what] + extra)})"


def op_of_label(label: str) -> str:
    """Best guess of the op behind a candidate label without the space: the label itself when
    it is a registered op, else the longest registered op name it starts with."""
    from nas_reid.ops import available_ops

    ops = available_ops()
    if label in ops:
        return label
    prefixes = [op for op in ops if label.startswith(op)]
    return max(prefixes, key=len) if prefixes else label


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        out.append(record)
    return out


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _candidates(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    from nas_reid.ops import available_ops
    from nas_reid.space.config import canonical_params

    ops = (config.get("space") or {}).get("ops") or []
    out = {}
    for op in ops:
        if isinstance(op, str):
            op = {"name": op}
        if not isinstance(op, dict) or op.get("name") not in available_ops():
            continue
        params = op.get("params") or {}
        try:
            params = canonical_params(op["name"], params)
        except Exception:  # an op whose defaults changed: keep what the file says
            params = dict(params)
        out[op.get("label") or op["name"]] = (op["name"], params)
    return out


def _is_run_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in
               (GENOTYPE_FILE, METRICS_FILE, HISTORY_FILE, CONFIG_FILE))


def load_source(spec: str | os.PathLike | RunSource) -> RunSource:
    """The genotype ``spec`` names and what its run folder logged.

    ``spec``: a run folder (search or retrain), a genotype JSON file (a run folder's
    ``genotype.json`` brings its run along), or a reference name (``rga_sc``, see
    :func:`nas_reid.space.reference.reference_names`). An unfinished search (no
    ``genotype.json`` yet) shows the last genotype of its history. Raises
    :class:`~nas_reid.genotype.GenotypeError` when ``spec`` names no genotype.
    """
    if isinstance(spec, RunSource):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise GenotypeError(f"genotype: expected a path or a reference name, got "
                            f"{type(spec).__name__}")
    text = os.fspath(spec)
    path = Path(text).expanduser()
    run_dir = None
    if text and path.is_dir() and _is_run_folder(path):
        run_dir = path
    elif text and path.is_file() and path.name == GENOTYPE_FILE and _is_run_folder(path.parent) \
            and any((path.parent / n).is_file() for n in (METRICS_FILE, CONFIG_FILE)):
        run_dir = path.parent
    if run_dir is None:
        from nas_reid.space.reference import resolve_genotype

        genotype, reference = resolve_genotype(text)
        if reference is not None:
            return RunSource(text, genotype, reference, "reference", None, notes=[
                f"{reference} is a reference genotype (hand-written from the paper): it has no "
                "architecture probabilities and no search history"])
        notes = []
        if not genotype.probabilities:
            notes.append("this genotype records no architecture probabilities (hand-written, "
                         "or retargeted to another backbone or input size)")
        notes.append("a genotype file alone has no search history (name the search run folder "
                     "to see the probabilities over epochs)")
        name = path.stem if path.stem != "genotype" else f"{path.resolve().parent.name}/{path.stem}"
        return RunSource(text, genotype, name, "file", path, notes=notes)
    return _load_run(text, run_dir)


def _load_run(spec: str, run_dir: Path) -> RunSource:
    config = _read_config(run_dir / CONFIG_FILE)
    metrics = [r for r in _read_jsonl(run_dir / METRICS_FILE) if r.get("kind", "epoch") == "epoch"]
    history = _read_jsonl(run_dir / HISTORY_FILE)
    notes: list[str] = []
    finished = True
    if (run_dir / GENOTYPE_FILE).is_file():
        genotype = Genotype.from_json(run_dir / GENOTYPE_FILE)
    elif history:
        genotype = Genotype.from_dict(history[-1], where=f"{run_dir / HISTORY_FILE} (last line)")
        finished = False
        notes.append(f"unfinished search: no {GENOTYPE_FILE} yet, showing the genotype of epoch "
                     f"{genotype.provenance.epoch} (the last line of {HISTORY_FILE})")
    else:
        raise GenotypeError(f"run folder {run_dir}: no {GENOTYPE_FILE} and no {HISTORY_FILE} "
                            "(a search that has not finished its first epoch?)")
    if "search" in config or history:
        kind: Kind = "search"
    elif "recipe" in config or any("eval" in r for r in metrics):
        kind = "retrain"
    else:
        kind = "run"
    if kind == "search":
        if not history:
            notes.append(f"no {HISTORY_FILE}: the probabilities over epochs come from "
                         f"{METRICS_FILE} alone" if metrics else
                         f"no {HISTORY_FILE} and no {METRICS_FILE}: nothing over epochs to show")
    else:
        origin = genotype.provenance.search_run
        notes.append(f"a {'retrain' if kind == 'retrain' else 'non-search'} run trains one fixed "
                     "genotype: it has no architecture-probability history"
                     + (f" (the search it came from: {origin})" if origin else ""))
        if not genotype.probabilities:
            notes.append("its genotype records no architecture probabilities")
    if not metrics:
        notes.append(f"no epoch records in {run_dir / METRICS_FILE}")
    return RunSource(spec, genotype, run_dir.resolve().name, kind, run_dir, metrics=metrics,
                     history=history, candidates=_candidates(config), finished=finished,
                     notes=notes)


def default_compare(source: RunSource | None = None) -> str:
    """What the notebook compares ``source`` with by default: :data:`DEFAULT_REFERENCE`
    (``rga_sc``), or ``rib_dcs`` when ``source`` is that reference itself."""
    if source is not None and source.kind == "reference" and source.name == DEFAULT_REFERENCE:
        return "rib_dcs"
    return DEFAULT_REFERENCE


def find_default_run(*folders: str | os.PathLike) -> str:
    """What the notebooks show by default: the newest finished ``search-*`` run under the
    ``runs/`` folders of the current folder, its parent (a notebook runs in ``notebooks/``) and
    the source checkout (or ``folders`` if given); else :data:`DEFAULT_REFERENCE`."""
    if not folders:
        here = Path.cwd()
        checkout = Path(__file__).resolve().parents[1]
        folders = (here / "runs", here.parent / "runs", checkout / "runs")
    found = []
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):
        if folder.is_dir():
            found += [p / GENOTYPE_FILE for p in folder.glob("search-*")
                      if (p / GENOTYPE_FILE).is_file()]
    if not found:
        return DEFAULT_REFERENCE
    return str(max(found, key=lambda p: (p.stat().st_mtime, str(p))).parent)


# ------------------------------------------------------------------------------------ history


@dataclass
class CellHistory:
    edges: list[tuple[int, int]]
    values: list[list[list[float]]]
    """``values[i][e][k]``: epoch ``epochs[i]``, edge ``edges[e]``, candidate ``labels[k]``."""
    chosen: dict[tuple[int, int], int]
    """Edge -> candidate index chosen by the final genotype (kept edges only)."""


@dataclass
class ProbabilityHistory:
    """softmax(alpha) of every cell edge and candidate at the end of every epoch."""

    epochs: list[int]
    labels: list[str]
    cells: dict[str, CellHistory]


def _chosen_index(labels: list[str], row: Sequence[float], op: str, params: dict[str, Any],
                  source: RunSource) -> int:
    """The candidate column of a chosen edge: the label with the edge's op and parameters, else
    the most probable label of its op, else the most probable non-zero one."""
    same_op = [k for k, lab in enumerate(labels) if source.op_of(lab) == op]
    exact = [k for k in same_op if _label_params(source, labels[k]) == params]
    pool = exact or same_op or [k for k, lab in enumerate(labels) if lab != "zero"] or [0]
    return max(pool, key=lambda k: row[k])


def _label_params(source: RunSource, label: str) -> dict[str, Any] | None:
    return source.candidates[label][1] if label in source.candidates else None


def probability_history(source: RunSource) -> ProbabilityHistory | None:
    """The probabilities over epochs (from the genotype history, else the metrics'
    ``arch_probs`` with the final genotype's labels), or None when the source has none."""
    genotype = source.genotype
    epochs: list[int] = []
    per_epoch: list[dict[str, Any]] = []  # position -> (labels, edges, values)
    for i, doc in enumerate(source.history):
        probs = doc.get("probabilities") or {}
        if not probs:
            continue
        epoch = (doc.get("provenance") or {}).get("epoch")
        epochs.append(int(epoch) if isinstance(epoch, int) else i + 1)
        per_epoch.append(probs)
    if not per_epoch and genotype.probabilities:
        final = {pos: p.model_dump() for pos, p in genotype.probabilities.items()}
        for i, record in enumerate(source.metrics):
            arch = record.get("arch_probs")
            if not isinstance(arch, dict) or not arch:
                continue
            epochs.append(int(record.get("epoch", i + 1)))
            per_epoch.append({pos: {**final[pos], "values": rows} for pos, rows in arch.items()
                              if pos in final})
    if not per_epoch:
        return None
    labels = list(next(iter(per_epoch[-1].values()))["ops"])
    cells: dict[str, CellHistory] = {}
    for cell in genotype.cells:
        rows = [p.get(cell.position) for p in per_epoch]
        if any(r is None or list(r["ops"]) != labels for r in rows):
            continue
        edges = [tuple(e) for e in rows[-1]["edges"]]
        values = [[list(map(float, v)) for v in r["values"]] for r in rows]
        last = values[-1]
        chosen = {}
        for e in cell.edges:
            if (e.source, e.target) in edges:
                row = last[edges.index((e.source, e.target))]
                chosen[(e.source, e.target)] = _chosen_index(
                    labels, row, e.op, full_params(e.op, e.params), source)
        cells[cell.position] = CellHistory(edges=edges, values=values, chosen=chosen)
    if not cells:
        return None
    return ProbabilityHistory(epochs=epochs, labels=labels, cells=cells)


def op_count_history(source: RunSource) -> tuple[list[int], dict[str, list[int]]] | None:
    """``(epochs, {op: live edges using it at each epoch})`` from the metrics' ``op_counts``
    (else from the genotype history), or None when the source has neither."""
    epochs: list[int] = []
    counts: list[dict[str, int]] = []
    for i, record in enumerate(source.metrics):
        if isinstance(record.get("op_counts"), dict):
            epochs.append(int(record.get("epoch", i + 1)))
            counts.append(record["op_counts"])
    if not counts and source.history:
        for i, doc in enumerate(source.history):
            g = Genotype.from_dict(doc, where=f"{HISTORY_FILE} line {i + 1}")
            epochs.append(g.provenance.epoch if g.provenance.epoch is not None else i + 1)
            counts.append(g.op_counts())
    if not counts:
        return None
    ops = sorted({op for c in counts for op in c})
    return epochs, {op: [int(c.get(op, 0)) for c in counts] for op in ops}


# --------------------------------------------------------------------------------------- costs


@dataclass(frozen=True)
class EdgeCost:
    source: int
    target: int
    op: str
    params: dict[str, Any]
    live: bool
    parameters: int
    """0 for a dead edge (not built)."""
    flops: int


@dataclass(frozen=True)
class CellCost:
    """Parameters and forward FLOPs (one image) of a cell's live edges at its ``shape``."""

    position: str
    shape: tuple[int, int, int]
    nodes: int
    edges: list[EdgeCost]

    @property
    def parameters(self) -> int:
        return sum(e.parameters for e in self.edges)

    @property
    def flops(self) -> int:
        return sum(e.flops for e in self.edges)


def full_params(op: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of ``op`` with its defaults filled in (as given if the op rejects them)."""
    from nas_reid.space.config import canonical_params

    try:
        return canonical_params(op, dict(params))
    except Exception:
        return dict(params)


@lru_cache(maxsize=512)
def _op_cost(op: str, c: int, h: int, w: int, params: tuple[tuple[str, Any], ...]) -> tuple[int, int]:
    import torch

    from nas_reid.ops.registry import op_cost

    with torch.random.fork_rng(devices=[]):  # building an op draws its initial weights
        cost = op_cost(op, c, h, w, **dict(params))
    return cost.params, cost.flops


def cell_costs(genotype: Genotype) -> list[CellCost]:
    """The :class:`CellCost` of every cell, in network order (dead edges cost 0)."""
    shapes = genotype.position_shapes()
    out = []
    for cell in genotype.cells:
        c, h, w = shapes[cell.position]
        live = {(e.source, e.target) for e in cell.live_edges()}
        edges = []
        for e in cell.edges:
            is_live = (e.source, e.target) in live
            p, f = (_op_cost(e.op, c, h, w, tuple(sorted(e.params.items()))) if is_live
                    else (0, 0))
            edges.append(EdgeCost(e.source, e.target, e.op, dict(e.params), is_live, p, f))
        out.append(CellCost(cell.position, (c, h, w), cell.nodes, edges))
    return out


def total_cost(costs: Iterable[CellCost]) -> tuple[int, int]:
    """``(parameters, flops)`` summed over cells."""
    costs = list(costs)
    return sum(c.parameters for c in costs), sum(c.flops for c in costs)


# ----------------------------------------------------------------------------------------- text


def format_count(n: float) -> str:
    """``512``, ``8.4 k``, ``2.67 M``, ``1.09 G``."""
    a = abs(n)
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if a >= scale:
            v = n / scale
            digits = 2 if abs(v) < 10 else (1 if abs(v) < 100 else 0)
            return f"{v:.{digits}f}{suffix}"
    return f"{n:.0f}"


def format_flops(n: float) -> str:
    """``1.09 G FLOPs``, ``512 FLOPs``."""
    return f"{format_count(n)} FLOPs"


def format_delta(n: float, flops: bool = False) -> str:
    """A signed :func:`format_count` (``+2.67 M``, ``-8.4 k``, ``0``), with `` FLOPs`` if
    ``flops``."""
    unit = " FLOPs" if flops else ""
    if n == 0:
        return "0" + unit
    return ("+" if n > 0 else "-") + format_count(abs(n)) + unit


def format_params(params: dict[str, Any]) -> str:
    """``c_ratio=8 checkpoint=False`` (keys sorted)."""
    return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}"
                    for k, v in sorted(params.items()))


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-"
    return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.2e}"


def format_summary(source: RunSource | Genotype | str | os.PathLike) -> str:
    """The text of ``nas-reid genotype show``: where the genotype comes from, its input and
    backbone, every cell with its edges (dead ones marked), parameters and FLOPs per cell, op
    counts, probabilities, provenance, and the run's figures."""
    if isinstance(source, Genotype):
        source = RunSource("<genotype>", source, source.space.name or "genotype", "file", None)
    source = load_source(source)
    g = source.genotype
    lines = [f"genotype: {source.describe()}"]
    space = (f"{g.space.name} (hash {g.space.hash})" if g.space.name or g.space.hash
             else "none (hand-written)")
    lines.append(f"  space     {space}")
    lines.append(f"  input     {g.input.height}x{g.input.width}; backbone {g.backbone.name}, "
                 f"last stride {g.backbone.last_stride}")
    p = g.provenance
    prov = [f"seed {p.seed}" if p.seed is not None else None,
            f"epoch {p.epoch}" if p.epoch is not None else None,
            f"search run {p.search_run}" if p.search_run else None,
            f"nas-reid {p.package_version}"]
    lines.append("  provenance " + ", ".join(x for x in prov if x))
    costs = cell_costs(g)
    if not costs:
        lines.append("cells: none (the backbone alone)")
    else:
        lines.append(f"cells ({len(costs)}; parameters and FLOPs of the live edges, one image):")
    for cell, cost in zip(g.cells, costs):
        c, h, w = cost.shape
        probs = g.probabilities.get(cell.position)
        lines.append(f"  {cell.position}  {c}x{h}x{w}  {cell.nodes} node{'s' if cell.nodes > 1 else ''}"
                     f"  {format_count(cost.parameters)} params, {format_flops(cost.flops)}")
        for e, ec in zip(cell.edges, cost.edges):
            p_text = ""
            if probs is not None and [e.source, e.target] in probs.edges:
                row = probs.values[probs.edges.index([e.source, e.target])]
                k = _chosen_index(list(probs.ops), row, e.op, full_params(e.op, e.params), source)
                p_text = f"  p={row[k]:.3f}"
            state = "" if ec.live else "  (dead: does not reach the output, not built)"
            params = format_params(e.params)
            lines.append(f"    {e.source}->{e.target}  {e.op}{p_text}"
                         + (f"  [{params}]" if params else "") + state)
    if costs:
        tp, tf = total_cost(costs)
        lines.append(f"  total     {format_count(tp)} params, {format_flops(tf)} "
                     "(cells only; the backbone is not counted)")
        counts = g.op_counts()
        lines.append("op counts (live edges): "
                     + (", ".join(f"{op} {n}" for op, n in counts.items()) or "none"))
    if g.probabilities:
        labels = next(iter(g.probabilities.values())).ops
        lines.append(f"probabilities: recorded for {', '.join(g.probabilities)} "
                     f"({len(labels)} candidates: {', '.join(labels)})")
    else:
        lines.append("probabilities: none recorded")
    if source.metrics:
        lines.append(f"{source.kind} run:")
        lines += [f"  {k:<16}{v}" for k, v in final_rows(source)]
    for note in source.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- tables


def _get(record: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(k)
    return record


def _loss(record: dict[str, Any]) -> Any:
    loss = record.get("loss") or {}
    return loss["weights"].get("total") if isinstance(loss.get("weights"), dict) else loss.get("total")


def _eval(record: dict[str, Any]) -> dict[str, Any] | None:
    """The epoch's evaluation: held-out ids (search) or query / gallery (retrain)."""
    value = record.get("heldout") if "heldout" in record else record.get("eval")
    return value if isinstance(value, dict) else None


def epoch_rows(source: RunSource) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per logged epoch (loss, arch loss, mAP / R1 in %, tau,
    I(X;F), I(F;Y), and for a search the genotype of the epoch)."""
    search = source.kind == "search"
    header = (["epoch", "loss", "arch loss", "mAP %", "R1 %", "tau", "I(X;F)", "I(F;Y)", "genotype"]
              if search else ["epoch", "loss", "mAP %", "R1 %", "lr", "I(X;F)", "I(F;Y)"])
    rows = []
    for r in source.metrics:
        ev = _eval(r) or {}
        rib = r.get("rib") or {}
        if search:
            rows.append([str(r.get("epoch", "-")), _num(_loss(r)),
                         _num(_get(r, "loss", "arch", "triplet")), _pct(ev.get("mAP")),
                         _pct(ev.get("R1")), _num(r.get("tau"), 2), _num(rib.get("I_XF")),
                         _num(rib.get("I_FY")), str(r.get("genotype", "-"))])
        else:
            lr = r.get("lr")
            rows.append([str(r.get("epoch", "-")), _num(_loss(r)), _pct(ev.get("mAP")),
                         _pct(ev.get("R1")), f"{lr:.2e}" if isinstance(lr, (int, float)) else "-",
                         _num(rib.get("I_XF")), _num(rib.get("I_FY"))])
    return header, rows


def final_rows(source: RunSource) -> list[tuple[str, str]]:
    """The final table of a run: epochs, time, last losses and mAP, best mAP, temperature,
    genotype, op counts, collapse guard, cell parameters and FLOPs."""
    rows: list[tuple[str, str]] = []
    last = source.metrics[-1] if source.metrics else {}
    if last:
        total = last.get("epochs")
        rows.append(("epochs", f"{last.get('epoch')}" + (f" of {total}" if total else "")))
        if isinstance(last.get("time"), (int, float)):
            rows.append(("time", f"{last['time']:.1f} s"))
        rows.append(("final loss", _num(_loss(last))))
        ev = _eval(last)
        where = "held-out" if source.kind == "search" else "query/gallery"
        if ev:
            rows.append(("final mAP / R1", f"{_pct(ev.get('mAP'))} / {_pct(ev.get('R1'))} "
                                            f"% ({where})"))
        best = last.get("best") or {}
        if best.get("mAP") is not None:
            rows.append(("best mAP / R1", f"{_pct(best.get('mAP'))} / {_pct(best.get('R1'))} % "
                                          f"(epoch {best.get('epoch')})"))
        if last.get("tau") is not None:
            rows.append(("final tau", _num(last["tau"], 3)))
        rib = last.get("rib") or {}
        if rib.get("IB") is not None:
            rows.append(("final RIB", f"I(X;F) {_num(rib.get('I_XF'))}, I(F;Y) "
                                      f"{_num(rib.get('I_FY'))}, IB {_num(rib.get('IB'))} nats"))
        collapse = last.get("collapse") or {}
        if collapse:
            frac = collapse.get("identity_fraction")
            rows.append(("identity edges", f"{collapse.get('identity_edges')} of "
                                           f"{collapse.get('live_edges')} live ({_pct(frac)} %)"
                                           + ("; collapse warning" if collapse.get("warning") else "")))
    rows.append(("genotype", source.genotype.summary()))
    counts = source.genotype.op_counts()
    rows.append(("op counts", ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"))
    params, flops = total_cost(cell_costs(source.genotype))
    rows.append(("cell cost", f"{format_count(params)} parameters, {format_flops(flops)} per image"))
    return rows


def cost_rows(genotype: Genotype) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per cell (its size, live edges, parameters, FLOPs) and the
    total."""
    header = ["cell", "C x H x W", "live edges", "parameters", "FLOPs (one image)"]
    costs = cell_costs(genotype)
    rows = []
    for c in costs:
        live = [f"{e.source}->{e.target} {e.op}" for e in c.edges if e.live]
        rows.append([c.position, "x".join(map(str, c.shape)), ", ".join(live) or "none",
                     format_count(c.parameters), format_count(c.flops)])
    params, flops = total_cost(costs)
    rows.append(["total", "", "", format_count(params), format_count(flops)])
    return header, rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, columns left-aligned and padded."""
    cols = [list(map(str, col)) for col in zip(header, *rows)] if rows else [[h] for h in header]
    widths = [max(len(v) for v in col) for col in cols]
    line = lambda values: "  ".join(str(v).ljust(w) for v, w in zip(values, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (for a notebook: ``IPython.display.Markdown``)."""
    esc = lambda v: str(v).replace("|", "\\|")
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)
