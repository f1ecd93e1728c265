"""What a genotype and its run folder say, as data and as text: the layer under
``nas-reid genotype show | plot | diff`` and the notebooks (the pictures are :mod:`nas_reid.viz`).

:func:`load_source` reads anything that names a genotype, the way ``nas-reid retrain
--genotype`` does (a ``genotype.json``, a run folder, a reference name such as ``rga_sc``), and
with a run folder also what the run logged (``metrics.jsonl``, the genotype history, the
candidate ops of ``config.yaml``). What a source lacks is said in :attr:`RunSource.notes` (and
by the plots, on the figure), never raised: only a spec that names no genotype at all, or a
broken file, raises :class:`~nas_reid.space.genotype.GenotypeError` /
:class:`~nas_reid.errors.UserError`. Costs: :mod:`nas_reid.space.costs` (re-exported here for
the reports). A searched backbone: :func:`backbone_stages`, :func:`backbone_probability_history`;
:func:`cost_history` gives the cost a search logged per epoch.
What each kind of source holds: docs/genotypes.md, section `nas_reid.viz.genotype_report`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from nas_reid.search.decisions import HELDOUT_QUERIES, DecisionReport, bootstrap_report, decision_report
from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype, GenotypeError
from nas_reid.space.costs import (  # noqa: F401  (reports use them; tests import them from here)
    CellCost,
    EdgeCost,
    backbone_cost,
    bnneck_parameters,
    cell_costs,
    full_params,
    network_cost,
    total_cost,
)

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
    "source_decisions", "decision_rows",
    "default_compare",
    "ProbabilityHistory", "probability_history", "op_count_history",
    "EdgeCost", "CellCost", "cell_costs", "total_cost",
    "backbone_cost", "bnneck_parameters", "network_cost",
    "StageChoice", "backbone_stages", "split_choice_key",
    "ChoiceHistory", "BackboneHistory", "backbone_probability_history", "CostHistory",
    "cost_history",
    "format_count", "format_flops", "format_delta", "format_params", "format_summary",
    "format_backbone", "format_costs", "stage_rows",
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
    :class:`~nas_reid.space.genotype.GenotypeError` when ``spec`` names no genotype.
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

        genotype, reference = resolve_genotype(text, strict=False)
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
        from nas_reid.space.reference import check_space_hash

        check_space_hash(genotype, str(run_dir / GENOTYPE_FILE), run_dir, strict=False)
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


def source_decisions(source: RunSource) -> DecisionReport | None:
    """Which choices of a search run's genotype had settled (:mod:`nas_reid.search.decisions`), from
    its genotype history; the warm-up epochs are those whose metrics record says
    ``arch_updates: false``; a ``uniform`` search's (its last record's decisions name their
    ``resamples``) from the bootstrap frequencies of its scored genotype (``zero_cost`` too). None
    without a history."""
    if not source.history:
        return None
    history = [Genotype.from_dict(d, where=f"genotype history, line {i + 1}")
               for i, d in enumerate(source.history)]
    last = source.metrics[-1] if source.metrics else {}
    decisions = last.get("decisions") or {}
    if decisions.get("resamples") is not None:
        return bootstrap_report(history[-1] if last.get("subnets") else None,
                                decisions["resamples"], decisions.get("resampled", HELDOUT_QUERIES))
    warmup = max((r.get("epoch", 0) for r in source.metrics if r.get("arch_updates") is False),
                 default=0)
    return decision_report(history, warmup)


def decision_rows(source: RunSource) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per choice of a search run's genotype (its value and
    probability, the runner-up, the margin, since when it held, how often it changed, whether it
    settled); no rows without a genotype history."""
    header = ["choice", "value", "p", "runner-up", "p", "margin", "held since", "changes",
              "margin / movement", "settled"]
    report = source_decisions(source)
    rows = []
    for d in report.decisions if report is not None else []:
        rows.append([d.key, d.choice + (" (capped)" if d.capped else ""), _num(d.probability),
                     d.runner_up or "-", _num(d.runner_up_probability), _num(d.margin),
                     f"epoch {d.held_since}" if d.held_since is not None else "-",
                     str(d.changes), _confidence(d.confidence), "yes" if d.settled else "no"])
    return header, rows


def _confidence(value: float | None) -> str:
    if value is None:
        return "-"
    return "steady" if math.isinf(value) else f"{value:.1f}"


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


@dataclass
class ChoiceHistory:
    """softmax(alpha) of one backbone choice at the end of every epoch."""

    stage: str
    part: str
    """``width``, ``kernel``, ``expansion`` or ``b<j>`` (whether block j is skipped)."""
    options: list
    values: list[list[float]]
    """``values[i][k]``: epoch ``epochs[i]``, option ``options[k]``."""
    chosen: int | None
    """The option the final genotype chose (its index)."""


@dataclass
class BackboneHistory:
    """The backbone choice probabilities over a search's epochs."""

    epochs: list[int]
    choices: dict[str, ChoiceHistory]
    """Choice key (``s2_width``) -> its history, in network order."""

    def by_stage(self) -> dict[str, dict[str, ChoiceHistory]]:
        """Stage -> choice part -> history, in network order."""
        out: dict[str, dict[str, ChoiceHistory]] = {}
        for choice in self.choices.values():
            out.setdefault(choice.stage, {})[choice.part] = choice
        return out


def backbone_probability_history(source: RunSource) -> BackboneHistory | None:
    """The backbone choice probabilities over epochs (from the genotype history, else the
    metrics' ``backbone_probs`` with the final genotype's options), or None when the source
    has none (not a search run, or a fixed ResNet backbone)."""
    genotype = source.genotype
    arch = genotype.backbone.mobile
    if arch is None:
        return None
    names = [s.name for s in arch.stages]
    epochs: list[int] = []
    per_epoch: list[dict[str, dict[str, Any]]] = []  # key -> {"options", "values"}
    for i, doc in enumerate(source.history):
        probs = doc.get("backbone_probabilities") or {}
        if probs:
            epoch = (doc.get("provenance") or {}).get("epoch")
            epochs.append(int(epoch) if isinstance(epoch, int) else i + 1)
            per_epoch.append(probs)
    if not per_epoch and genotype.backbone_probabilities:
        final = {k: p.options for k, p in genotype.backbone_probabilities.items()}
        for i, record in enumerate(source.metrics):
            probs = record.get("backbone_probs")
            if isinstance(probs, dict) and probs:
                epochs.append(int(record.get("epoch", i + 1)))
                per_epoch.append({k: {"options": final[k], "values": v}
                                  for k, v in probs.items() if k in final})
    if not per_epoch:
        return None
    stages = {c.name: c for c in backbone_stages(genotype)}
    choices = {}
    for key, last in per_epoch[-1].items():
        split = split_choice_key(key, names)
        rows = [p.get(key) for p in per_epoch]
        if split is None or any(r is None or list(r["options"]) != list(last["options"])
                                for r in rows):
            continue
        options = list(last["options"])
        chosen = stages[split[0]].chosen(split[1])
        choices[key] = ChoiceHistory(split[0], split[1], options,
                                     [list(map(float, r["values"])) for r in rows],
                                     options.index(chosen) if chosen in options else None)
    if not choices:
        return None
    return BackboneHistory(epochs=epochs, choices=choices)


@dataclass
class CostHistory:
    """The cost of a search's architecture at each epoch, in ``unit`` (``metrics.jsonl``'s
    ``cost``)."""

    epochs: list[int]
    expected: list[float]
    """Under the architecture probabilities (what the cost-aware loss sees)."""
    achieved: list[float]
    """Of the epoch's derived genotype."""
    form: str
    """The cost term of the loss: ``none``, ``multiplicative`` or ``additive``."""
    target: float | None
    unit: str = "MFLOPs"
    """``MFLOPs`` (FLOPs, also for records older than the latency metric) or ``ms`` (latency)."""
    device: str | None = None
    """Where a latency table was measured."""


def cost_history(source: RunSource) -> CostHistory | None:
    """The logged cost over epochs, or None when no epoch records one (a search with a fixed
    backbone and no cost term, or not a search run)."""
    records = [(int(r.get("epoch", i + 1)), r["cost"]) for i, r in enumerate(source.metrics)
               if isinstance(r.get("cost"), dict)]
    records = [(e, c) for e, c in records
               if all(isinstance(c.get(k), (int, float)) for k in ("expected", "achieved"))]
    if not records:
        return None
    last = records[-1][1]
    target = last.get("target")
    return CostHistory(epochs=[e for e, _ in records],
                       expected=[float(c["expected"]) for _, c in records],
                       achieved=[float(c["achieved"]) for _, c in records],
                       form=str(last.get("form", "none")),
                       target=float(target) if isinstance(target, (int, float)) else None,
                       unit=str(last.get("unit") or "MFLOPs"),
                       device=str(last["device"]) if last.get("device") else None)


# ------------------------------------------------------------------------- searched backbone

CHOICE_KINDS = ("width", "kernel", "expansion")
"""The per-stage choices of a mobile backbone besides skipping blocks (``b<j>``)."""


def split_choice_key(key: str, stages: Iterable[str]) -> tuple[str, str] | None:
    """``(stage, part)`` of a backbone choice key: ``s2_width`` -> ``("s2", "width")``,
    ``s2_b1_skip`` -> ``("s2", "b1")``; None when no stage of ``stages`` matches (the longest
    stage name wins, as names may contain underscores)."""
    for stage in sorted(stages, key=len, reverse=True):
        if not key.startswith(stage + "_"):
            continue
        rest = key[len(stage) + 1:]
        if rest in CHOICE_KINDS:
            return stage, rest
        if rest.startswith("b") and rest.endswith("_skip") and rest[1:-5].isdigit():
            return stage, rest[:-5]
    return None


@dataclass(frozen=True)
class StageChoice:
    """One stage of a searched mobile backbone: what was chosen and, where the genotype records
    ``backbone_probabilities``, the options of each choice and the chosen option's
    probability."""

    name: str
    layer: str
    stride: int
    """The stride of the stage's first block as built (``last_stride: 1`` makes layer4's 1)."""
    shape: tuple[int, int, int]
    """The stage's output ``(C, H, W)``."""
    width: int
    kernel: int
    expansion: int
    blocks: tuple[bool, ...]
    options: dict[str, list]
    """Choice part (``width``, ``kernel``, ``expansion``, ``b<j>``) -> its options (only the
    parts that were searched and recorded; a ``b<j>`` option is ``keep`` or ``skip``)."""
    probability: dict[str, float]
    """Choice part -> the probability of the chosen option."""
    recorded: bool
    """Whether the genotype records the backbone probabilities at all."""

    @property
    def depth(self) -> int:
        return sum(self.blocks)

    @property
    def skipped(self) -> list[int]:
        """Indices of the skipped blocks."""
        return [j for j, kept in enumerate(self.blocks) if not kept]

    @property
    def widest(self) -> int | None:
        """The stage's widest width option: the largest recorded option, the width itself when
        the probabilities are recorded but the width was not searched (a fixed width), None
        when the genotype records no backbone probabilities."""
        if "width" in self.options:
            return max(self.options["width"])
        return self.width if self.recorded else None

    def chosen(self, part: str) -> Any:
        """The chosen value of a choice part (``b<j>``: ``keep`` or ``skip``; None for a block
        the stage does not have)."""
        return _chosen_value(self, part)

    def blocks_text(self) -> str:
        """``x1/2 (b1 skipped)``: kept of all blocks, and which ones are skipped."""
        skipped = self.skipped
        text = f"x{self.depth}/{len(self.blocks)}"
        if skipped:
            text += f" ({', '.join(f'b{j}' for j in skipped)} skipped)"
        return text


def _chosen_value(stage: Any, part: str) -> Any:
    """The value ``stage`` (a :class:`StageChoice` or a ``StageArch``) chose for a choice part."""
    if part in CHOICE_KINDS:
        return getattr(stage, part)
    j = int(part[1:])
    if j >= len(stage.blocks):
        return None
    return "keep" if stage.blocks[j] else "skip"


def backbone_stages(genotype: Genotype) -> list[StageChoice]:
    """The :class:`StageChoice` of every stage of the genotype's searched backbone, in network
    order; ``[]`` for a ResNet."""
    arch = genotype.backbone.mobile
    if arch is None:
        return []
    from nas_reid.space.mobile import _stage_resolutions, effective_stride

    last_stride = genotype.backbone.last_stride
    names = [s.name for s in arch.stages]
    options: dict[str, dict[str, list]] = {n: {} for n in names}
    values: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    stage_of = {s.name: s for s in arch.stages}
    for key, probs in genotype.backbone_probabilities.items():
        split = split_choice_key(key, names)
        if split is not None and _chosen_value(stage_of[split[0]], split[1]) is not None:
            options[split[0]][split[1]] = list(probs.options)
            values[split[0]][split[1]] = list(probs.values)
    out = []
    resolutions = _stage_resolutions(arch, genotype.input_size, last_stride)
    for stage, (_, (h, w)) in zip(arch.stages, resolutions):
        probability = {}
        for part, opts in options[stage.name].items():
            chosen = _chosen_value(stage, part)
            if chosen in opts:
                probability[part] = values[stage.name][part][opts.index(chosen)]
        out.append(StageChoice(stage.name, stage.layer, effective_stride(stage, last_stride),
                               (stage.width, h, w), stage.width, stage.kernel, stage.expansion,
                               tuple(stage.blocks), options[stage.name], probability,
                               bool(genotype.backbone_probabilities)))
    return out


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


def _p(value: float | None) -> str:
    return "" if value is None else f" p={value:.3f}"


def stage_rows(genotype: Genotype) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per stage of a searched backbone (:func:`backbone_stages`):
    layer, stride, output size, width with the widest option in parentheses, kernel,
    expansion, kept blocks, each searched value with ``p=`` the probability of the chosen
    option, and the probability of each keep / skip decision. No rows for a ResNet."""
    header = ["stage", "layer", "stride", "output", "width (max)", "kernel", "expansion",
              "blocks", "keep / skip"]
    rows = []
    for st in backbone_stages(genotype):
        widest = st.widest
        p = st.probability
        blocks = [f"b{part[1:]} {st.chosen(part)}{_p(p.get(part))}"
                  for part in st.options if part not in CHOICE_KINDS]
        rows.append([st.name, st.layer, str(st.stride), "x".join(map(str, st.shape)),
                     f"{st.width} ({widest if widest is not None else '?'}){_p(p.get('width'))}",
                     f"{st.kernel}{_p(p.get('kernel'))}",
                     f"{st.expansion}{_p(p.get('expansion'))}", st.blocks_text(),
                     ", ".join(blocks) or "-"])
    return header, rows


def format_backbone(genotype: Genotype) -> list[str]:
    """The backbone section of ``nas-reid genotype show``: the backbone's parameters and FLOPs
    and, for a searched one, its stage table (:func:`stage_rows`)."""
    b = genotype.backbone
    params, flops = backbone_cost(genotype)
    cost = f"{format_count(params)} params, {format_flops(flops)} (one image)"
    arch = b.mobile
    if arch is None:
        return [f"backbone: {b.name} (fixed), last stride {b.last_stride}; {cost}"]
    lines = [f"backbone: {b.name} (searched), last stride {b.last_stride}, stem {arch.stem}, "
             f"head {arch.head or 'none'}, {arch.activation}; {cost}"]
    lines += ["  " + line for line in format_table(*stage_rows(genotype)).splitlines()]
    if genotype.backbone_probabilities:
        lines.append("  p: the probability of the chosen option, softmax(alpha); a value without "
                     "p was not searched")
    else:
        lines.append("  no backbone probabilities recorded: the widest options (?) and the "
                     "probabilities are unknown")
    return lines


def format_costs(genotype: Genotype) -> list[str]:
    """The cost section of ``nas-reid genotype show``: backbone, cells, BNNeck and the whole
    network (:func:`network_cost`), parameters and FLOPs for one image in eval mode."""
    bp, bf = backbone_cost(genotype)
    cp, cf = total_cost(cell_costs(genotype))
    rows = [("backbone", bp, bf), ("cells", cp, cf),
            ("BNNeck", bnneck_parameters(genotype), 0), ("total", *network_cost(genotype))]
    lines = ["cost (one image, eval mode; the classifier, sized by the number of training "
             "identities, is not counted):"]
    lines += [f"  {what:<9} {format_count(p)} params, {format_flops(f)}" for what, p, f in rows]
    return lines


def format_summary(source: RunSource | Genotype | str | os.PathLike) -> str:
    """The text of ``nas-reid genotype show``: where the genotype comes from, its input and
    backbone (a searched one stage by stage), every cell with its edges (dead ones marked),
    parameters and FLOPs per cell, of the backbone and of the whole network, op counts,
    probabilities, provenance, a search run's choices and whether each had settled
    (:func:`source_decisions`), and the run's final table (:func:`final_rows`)."""
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
    lines += format_backbone(g)
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
        lines.append(f"  total     {format_count(tp)} params, {format_flops(tf)} (cells)")
    lines += format_costs(g)
    if costs:
        counts = g.op_counts()
        lines.append("op counts (live edges): "
                     + (", ".join(f"{op} {n}" for op, n in counts.items()) or "none"))
    if g.probabilities:
        labels = next(iter(g.probabilities.values())).ops
        lines.append(f"probabilities: recorded for {', '.join(g.probabilities)} "
                     f"({len(labels)} candidates: {', '.join(labels)})")
    else:
        lines.append("probabilities: none recorded")
    report = source_decisions(source)
    if report is not None and report.decisions:
        lines.append(f"choices: {report.summary()}")
        lines += [f"  {'settled    ' if d.settled else 'not settled'}  {d.describe()}"
                  for d in report.decisions]
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
    searched backbone, genotype, op counts, collapse guard, parameters and FLOPs of the cells
    and of the network, and the last epoch's logged cost (expected and achieved, in its unit)."""
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
    g = source.genotype
    if g.backbone.mobile is not None:
        rows.append(("backbone", g.backbone.mobile.summary()))
    rows.append(("genotype", g.summary()))
    counts = g.op_counts()
    rows.append(("op counts", ", ".join(f"{op} {n}" for op, n in counts.items()) or "none"))
    params, flops = total_cost(cell_costs(g))
    rows.append(("cell cost", f"{format_count(params)} parameters, {format_flops(flops)} per image"))
    params, flops = network_cost(g)
    rows.append(("network cost", f"{format_count(params)} parameters, {format_flops(flops)} per "
                                 "image (no classifier)"))
    cost = last.get("cost")
    if isinstance(cost, dict) and isinstance(cost.get("achieved"), (int, float)):
        rows.append(("final cost", _cost_text(cost)))
    return rows


def _cost_text(cost: dict[str, Any]) -> str:
    """``expected 3.35, achieved 1.94 MFLOPs (multiplicative, target 3.00)`` of a logged
    ``cost`` record (in its ``unit``: MFLOPs, or ms for a latency)."""
    target = cost.get("target")
    form = cost.get("form") or "none"
    extra = f"{form} cost term" if form != "none" else "no cost term"
    if isinstance(target, (int, float)):
        extra += f", target {target:.2f}"
    return (f"expected {_num(cost.get('expected'), 2)}, achieved {_num(cost.get('achieved'), 2)} "
            f"{cost.get('unit') or 'MFLOPs'} ({extra})")


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
