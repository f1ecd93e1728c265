"""The genotype: the searched architecture as a versioned, validated JSON document.

Format: ``schema: "nas-reid/genotype"``, ``version: 1`` or ``2``, then ``space`` (``name``,
``hash``: :meth:`SearchSpace.canonical_hash`), ``input``, ``backbone`` (``name``,
``last_stride``, ``choices``: ``{}`` for a fixed ResNet, the whole chosen mobile backbone in
version 2), ``cells`` (per position its ``nodes`` and ``edges``: ``source``, ``target``, ``op``,
``params``), ``probabilities`` (what it was derived from), version 2's
``backbone_probabilities`` (left out when empty) and ``provenance``. A genotype is written as
the lowest version that holds it; version 1 and 2 files are read. A cell has nodes 0..n: node 0
is the stage output, node t the sum of its incoming edges' ops, the output node n.
:meth:`Genotype.from_json` validates everything and raises :class:`GenotypeError` naming the file
and the field; :meth:`Genotype.to_json` is deterministic (JSON -> object -> JSON is
byte-identical). :func:`derive_genotype` is DARTS' rule, with an optional skip cap (P-DARTS'
skip regularisation); :meth:`CellGenotype.live_edges` leaves out the edges whose output cannot
reach node n, and the discrete network builds only live edges.
The format with examples, the validation, the derivation and live edges in detail:
docs/internals.md, section `nas_reid.space.genotype`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import networkx as nx
from pydantic import Field, ValidationError, field_validator, model_validator

from nas_reid import __version__
from nas_reid.engine.schema import StrictModel, format_validation_error
from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_text
from nas_reid.ops import available_ops
from nas_reid.space.backbone import POSITIONS, stage_shapes
from nas_reid.space.config import (
    BackboneName,
    SearchSpace,
    canonical_params,
    check_input_divides,
    check_op,
    input_stride,
    scalar_params,
)
from nas_reid.space.mobile import MOBILE_BACKBONES, MobileArch, mobile_stage_shapes

if TYPE_CHECKING:
    from nas_reid.space.supernet import Supernet

SCHEMA = "nas-reid/genotype"
VERSION = 2
"""The newest genotype version (see :attr:`Genotype.version` for which one a file is written as)."""
VERSIONS = (1, 2)
PROBABILITY_DECIMALS = 6


class GenotypeError(UserError):
    """A genotype file or object that is invalid or does not fit the given search space."""



class Edge(StrictModel):
    """One chosen edge: ``op`` (with ``params``) maps node ``source`` into node ``target``."""

    source: int = Field(ge=0)
    target: int = Field(ge=0)
    op: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _scalars(cls, params: dict[str, Any]) -> dict[str, Any]:
        return scalar_params(params)


class CellGenotype(StrictModel):
    """The chosen edges of the cell after stage ``position``."""

    position: Literal["layer1", "layer2", "layer3", "layer4"]
    nodes: int = Field(ge=1, le=16)
    edges: list[Edge]

    def live_edges(self) -> list[Edge]:
        """The edges on a path to the output node (the ones that can change the output)."""
        reaches = {self.nodes}
        for t in range(self.nodes, 0, -1):
            if t in reaches:
                reaches.update(e.source for e in self.edges if e.target == t)
        return [e for e in self.edges if e.target in reaches]

    def to_networkx(self) -> nx.DiGraph:
        """Nodes 0..n (``label``, ``kind``: input / node / output, ``live``); one graph edge per
        chosen edge (``op``, ``params``, ``label``, ``live``). Graph attribute ``position``."""
        live = {(e.source, e.target) for e in self.live_edges()}
        live_nodes = {0} | {t for _, t in live}
        g = nx.DiGraph(position=self.position)
        for n in range(self.nodes + 1):
            kind = "input" if n == 0 else ("output" if n == self.nodes else "node")
            label = f"{self.position}" if n == 0 else ("output" if n == self.nodes else str(n))
            g.add_node(n, label=label, kind=kind, live=n in live_nodes)
        for e in self.edges:
            g.add_edge(e.source, e.target, op=e.op, params=dict(e.params), label=e.op,
                       live=(e.source, e.target) in live)
        return g


class BackboneGenotype(StrictModel):
    """The backbone: a fixed ResNet (``choices`` is ``{}``) or a searched mobile backbone, whose
    ``choices`` are a :class:`~nas_reid.space.mobile.MobileArch` (every stage's width, kernel,
    expansion and kept blocks, plus the stem, head and activation)."""

    name: BackboneName
    last_stride: Literal[1, 2] = 1
    choices: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _choices(self) -> "BackboneGenotype":
        if self.name not in MOBILE_BACKBONES:
            if self.choices:
                raise ValueError(f"backbone.choices: {self.name} is a fixed backbone and has no "
                                 "choices; must be {}")
            return self
        try:
            MobileArch.model_validate(self.choices)
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, "backbone.choices", MobileArch)) from None
        return self

    @property
    def mobile(self) -> MobileArch | None:
        """The chosen mobile backbone (None for a ResNet)."""
        return MobileArch.model_validate(self.choices) if self.name in MOBILE_BACKBONES else None

    def stage_shapes(self, input_size: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
        """``(C, H, W)`` of the output of layer1..layer4 for inputs of ``input_size``."""
        mobile = self.mobile
        if mobile is not None:
            return mobile_stage_shapes(mobile, input_size, self.last_stride)
        return stage_shapes(self.name, input_size, self.last_stride)

    def summary(self) -> str:
        """``resnet18`` or ``mobilenetv2: s1 16 k3 e1 x1/1 | s2 ...``."""
        mobile = self.mobile
        return self.name if mobile is None else f"{self.name}: {mobile.summary()}"


class ChoiceProbabilities(StrictModel):
    """softmax(alpha) of one backbone choice: ``values[k]`` for option ``options[k]``."""

    options: list[int | str] = Field(min_length=2)
    values: list[float]

    @model_validator(mode="after")
    def _shape(self) -> "ChoiceProbabilities":
        if len(self.values) != len(self.options):
            raise ValueError(f".values: {len(self.values)} values for {len(self.options)} options")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in self.values):
            raise ValueError(f".values: probabilities must be in [0, 1], got {self.values}")
        return self


class SpaceRef(StrictModel):
    """The search space a genotype was derived from (``None`` for a hand-written one)."""

    name: str | None = None
    hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")


class InputSize(StrictModel):
    height: int = Field(ge=16, le=4096)
    width: int = Field(ge=16, le=4096)


class CellProbabilities(StrictModel):
    """softmax(alpha) of one cell: ``values[e][k]`` for edge ``edges[e]`` and candidate ``ops[k]``."""

    ops: list[str] = Field(min_length=1)
    edges: list[list[int]]
    values: list[list[float]]

    @model_validator(mode="after")
    def _shape(self) -> "CellProbabilities":
        if any(len(e) != 2 for e in self.edges):
            raise ValueError(".edges: each edge must be [source, target]")
        if len(self.values) != len(self.edges):
            raise ValueError(f".values: {len(self.values)} rows for {len(self.edges)} edges")
        for i, row in enumerate(self.values):
            if len(row) != len(self.ops):
                raise ValueError(f".values[{i}]: {len(row)} values for {len(self.ops)} ops")
            if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in row):
                raise ValueError(f".values[{i}]: probabilities must be in [0, 1], got {row}")
        return self


class Provenance(StrictModel):
    """Where a genotype comes from."""

    seed: int | None = None
    epoch: int | None = Field(default=None, ge=0)
    search_run: str | None = None
    package_version: str = __version__


class Genotype(StrictModel):
    """A validated genotype (see the module doc). Build one with :func:`derive_genotype` or
    :meth:`Genotype.from_json`; the constructor validates too."""

    space: SpaceRef
    input: InputSize
    backbone: BackboneGenotype
    cells: list[CellGenotype]
    probabilities: dict[str, CellProbabilities] = Field(default_factory=dict)
    backbone_probabilities: dict[str, ChoiceProbabilities] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)

    @model_validator(mode="after")
    def _check(self) -> "Genotype":
        b, mobile = self.backbone, self.backbone.mobile
        check_input_divides(self.input.height, self.input.width,
                            input_stride(b.last_stride, mobile.stages if mobile else None),
                            b.name, b.last_stride)
        positions = [c.position for c in self.cells]
        for i, p in enumerate(positions):
            if p in positions[:i]:
                raise ValueError(f"cells[{i}].position: {p!r} has two cells")
        if positions != sorted(positions, key=POSITIONS.index):
            raise ValueError(f"cells: must be in network order (layer1 .. layer4), got {positions}")
        shapes = self.position_shapes()
        for i, cell in enumerate(self.cells):
            _check_cell(cell, f"cells[{i}]", shapes[cell.position])
        for key in self.probabilities:
            if key not in positions:
                raise ValueError(f"probabilities.{key}: there is no cell at {key!r}")
        if self.backbone_probabilities and self.backbone.mobile is None:
            raise ValueError(f"backbone_probabilities: {self.backbone.name} is a fixed backbone "
                             "and has no choices")
        return self

    @property
    def version(self) -> int:
        """The genotype version this genotype is written as: 2 when it has backbone choices,
        else 1 (so a ResNet genotype reads the same in every nas-reid release)."""
        return 2 if self.backbone.choices or self.backbone_probabilities else 1

    # -- views

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.input.height, self.input.width)

    def position_shapes(self) -> dict[str, tuple[int, int, int]]:
        """``(C, H, W)`` at every cell position (the size each cell's ops are built for)."""
        shapes = self.backbone.stage_shapes(self.input_size)
        return {c.position: shapes[c.position] for c in self.cells}

    def cell(self, position: str) -> CellGenotype:
        for c in self.cells:
            if c.position == position:
                return c
        raise KeyError(position)

    def op_counts(self, *, live_only: bool = True) -> dict[str, int]:
        """How many edges use each op, over all cells (live edges only by default)."""
        counts = Counter(e.op for c in self.cells
                         for e in (c.live_edges() if live_only else c.edges))
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        """One line: ``layer3: 0->1 se | layer4: 0->1 rga_s, 0->2 identity, 1->2 eca``."""
        if not self.cells:
            return "no cells"
        return " | ".join(
            f"{c.position}: " + ", ".join(f"{e.source}->{e.target} {e.op}" for e in c.edges)
            for c in self.cells)

    def to_networkx(self) -> dict[str, nx.DiGraph]:
        """``{position: DiGraph}``, see :meth:`CellGenotype.to_networkx`."""
        return {c.position: c.to_networkx() for c in self.cells}

    # -- JSON

    def to_dict(self) -> dict[str, Any]:
        """The JSON document as plain types, keys in the fixed order (edge params sorted)."""
        body = self.model_dump(mode="json")
        for cell in body["cells"]:
            for edge in cell["edges"]:
                edge["params"] = {k: edge["params"][k] for k in sorted(edge["params"])}
        if not body["backbone_probabilities"]:
            del body["backbone_probabilities"]
        return {"schema": SCHEMA, "version": self.version, **body}

    def to_json(self) -> str:
        """Deterministic JSON text: fixed key order, indent 2, trailing newline."""
        return _dump(self.to_dict()) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_json(cls, source: str | os.PathLike, *, space: SearchSpace | None = None) -> "Genotype":
        """Read a genotype from a JSON file path or JSON text (a string starting with ``{``).

        With ``space``, also check that the genotype was derived from that search space.
        """
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text, where = source, "<text>"
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            where = str(path)
            if not path.is_file():
                raise GenotypeError(f"genotype {where}: no such file")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise GenotypeError(f"genotype {where}: not a UTF-8 text file") from None
        else:
            raise GenotypeError(f"genotype: expected a path or JSON text, got {type(source).__name__}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"genotype {where}: not valid JSON at line {exc.lineno}, "
                                f"column {exc.colno}: {exc.msg}") from None
        genotype = cls.from_dict(data, where=where)
        if space is not None:
            genotype.check_space(space, where=where)
        return genotype

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "<dict>") -> "Genotype":
        """Validate a parsed JSON document (with its ``schema`` and ``version``)."""
        if not isinstance(data, dict):
            raise GenotypeError(f"genotype {where}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise GenotypeError(f"genotype {where}: schema is {data.get('schema')!r}, expected "
                                f"{SCHEMA!r} (is this a nas-reid genotype file?)")
        version = data.get("version")
        if version not in VERSIONS or isinstance(version, bool):
            raise GenotypeError(f"genotype {where}: version {version!r} is not supported "
                                f"(nas-reid {__version__} reads genotype versions "
                                f"{', '.join(map(str, VERSIONS))})")
        body = {k: v for k, v in data.items() if k not in ("schema", "version")}
        try:
            genotype = cls.model_validate(body)
        except ValidationError as exc:
            raise GenotypeError(format_validation_error(exc, f"genotype {where}", cls)) from None
        if version < genotype.version:
            raise GenotypeError(f"genotype {where}: version {version} has no backbone choices "
                                f"(a searched backbone needs version {genotype.version})")
        return genotype

    def check_space(self, space: SearchSpace, *, where: str = "<genotype>") -> None:
        """Raise :class:`GenotypeError` unless this genotype was derived from ``space``."""
        expected = space.canonical_hash()
        named = f"search space {space.name!r}" + (f" ({space.source})" if space.source else "")
        if self.space.hash is None:
            raise GenotypeError(f"genotype {where}: has no space hash, so it cannot be checked "
                                f"against {named}")
        if self.space.hash != expected:
            raise GenotypeError(
                f"genotype {where}: derived from search space {self.space.name!r} with hash "
                f"{self.space.hash}, but {named} has hash {expected}; the architecture space "
                "(input, backbone, cells or ops) has changed")


    def space_misfit(self, space: SearchSpace) -> str | None:
        """What of this genotype's network no network of ``space`` has (the input size, the
        backbone, a cell's position or node count, an edge's op and parameters), in words;
        None when it is one of the space's networks (its hash may still differ)."""
        if self.input_size != space.input_size:
            return (f"input {self.input.height}x{self.input.width}, the space's is "
                    f"{space.input.height}x{space.input.width}")
        b, sb = self.backbone, space.backbone
        if (b.name, b.last_stride) != (sb.name, sb.last_stride):
            return (f"backbone {b.name} (last stride {b.last_stride}), the space's is {sb.name} "
                    f"(last stride {sb.last_stride})")
        candidates = {json.dumps([op.name, op.full_params()], sort_keys=True) for op in space.ops}
        for cell in self.cells:
            if cell.position not in space.cells.positions:
                return (f"a cell at {cell.position}, the space's cells are at "
                        f"{', '.join(space.cells.positions)}")
            if cell.nodes != space.cells.nodes:
                return (f"{cell.nodes} node(s) in the cell at {cell.position}, the space's cells "
                        f"have {space.cells.nodes}")
            for e in cell.edges:
                if json.dumps([e.op, canonical_params(e.op, e.params)], sort_keys=True) \
                        not in candidates:
                    return (f"op {e.op} {dict(e.params)} on {cell.position} edge "
                            f"{e.source}->{e.target} is not a candidate of the space")
        return None


def save_genotype(genotype: Genotype, path: str | os.PathLike) -> Path:
    """Write ``genotype`` to ``path`` atomically (write to a temporary sibling, then rename)."""
    return genotype.save(path)


def load_genotype(path: str | os.PathLike, *, space: SearchSpace | None = None) -> Genotype:
    """:meth:`Genotype.from_json` on a file."""
    return Genotype.from_json(Path(path), space=space)


def _check_cell(cell: CellGenotype, where: str, shape: tuple[int, int, int]) -> None:
    n = cell.nodes
    seen: dict[tuple[int, int], int] = {}
    for j, e in enumerate(cell.edges):
        at = f"{where}.edges[{j}]"
        for name, node in (("source", e.source), ("target", e.target)):
            if node > n:
                raise ValueError(f"{at}.{name}: node {node} does not exist (the cell has nodes 0..{n})")
        if e.target == 0:
            raise ValueError(f"{at}.target: node 0 is the cell input and takes no incoming edge")
        if e.source == e.target:
            raise ValueError(f"{at}: self-loop on node {e.source}; the cell must be a DAG")
        if (e.source, e.target) in seen:
            raise ValueError(f"{at}: edge {e.source} -> {e.target} is already "
                             f"{where}.edges[{seen[(e.source, e.target)]}] (one op per edge)")
        seen[(e.source, e.target)] = j
        if e.op not in available_ops():
            raise ValueError(f"{at}.op: unknown op {e.op!r}; known ops: {', '.join(available_ops())}")
        check_op(e.op, e.params, {cell.position: shape}, f"{at}.params")
    graph = nx.DiGraph(list(seen))
    if not nx.is_directed_acyclic_graph(graph):
        cycle = [s for s, _ in nx.find_cycle(graph)]
        path = " -> ".join(str(v) for v in cycle + cycle[:1])
        raise ValueError(f"{where}.edges: not a DAG, there is a cycle {path}")
    for j, e in enumerate(cell.edges):
        if e.source > e.target:
            raise ValueError(f"{where}.edges[{j}]: edge {e.source} -> {e.target} goes backwards; "
                             "number the nodes so that every edge goes to a higher node")
    for t in range(1, n + 1):
        if not any(e.target == t for e in cell.edges):
            raise ValueError(f"{where}: node {t} has no incoming edge")


_LINE = 100


def _flat(value: Any) -> bool:
    """A scalar, or a list/dict of scalars."""
    if isinstance(value, dict):
        return not any(isinstance(v, (dict, list)) for v in value.values())
    if isinstance(value, list):
        return not any(isinstance(v, (dict, list)) for v in value)
    return True


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return json.dumps(value)


def _dump(value: Any, depth: int = 0, key_width: int = 0) -> str:
    """JSON, indent 2; a container of flat items that fits the line is written on one line."""
    pad = "  " * depth
    items = list(value.values()) if isinstance(value, dict) else value
    if not isinstance(value, (dict, list)):
        return json.dumps(value)
    if all(_flat(v) for v in items):
        text = _inline(value)
        if len(pad) + key_width + len(text) <= _LINE:
            return text
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            key = f"{json.dumps(k)}: "
            lines.append(f"{pad}  {key}{_dump(v, depth + 1, len(key))}")
        return "{\n" + ",\n".join(lines) + f"\n{pad}}}"
    lines = [f"{pad}  {_dump(v, depth + 1)}" for v in value]
    return "[\n" + ",\n".join(lines) + f"\n{pad}]"


# ------------------------------------------------------------------------------ derivation

_FROM_SPACE = object()


def derive_genotype(supernet: "Supernet", *, provenance: Provenance | Mapping[str, Any] | None = None,
                    skip_cap: int | None | object = _FROM_SPACE) -> Genotype:
    """The discrete architecture the supernet's architecture parameters point to (DARTS' rule).

    ``provenance``: a :class:`Provenance` or a mapping with ``seed``, ``epoch``, ``search_run``
    (``package_version`` is filled in). ``skip_cap``: at most this many ``identity`` edges per
    cell; by default the space's ``schedule.skip_cap`` (``None``: no cap). A DDP-wrapped
    supernet may be passed as is.
    """
    net = getattr(supernet, "module", supernet)
    space: SearchSpace = net.space
    cap = space.schedule.skip_cap if skip_cap is _FROM_SPACE else skip_cap
    if isinstance(provenance, Provenance):
        prov = provenance
    else:
        try:
            prov = Provenance.model_validate(dict(provenance or {}))
        except ValidationError as exc:
            raise GenotypeError(format_validation_error(exc, "provenance", Provenance)) from None
    names = [op.name for op in space.ops]
    params = [op.full_params() for op in space.ops]
    probs = net.arch_probabilities()
    cells, recorded = [], {}
    for position in space.cells.positions:
        p = probs[position].tolist()
        edge_list = net.cells[position].edge_list
        chosen = _derive_cell(p, edge_list, names, space.cells.edges_per_node, cap)
        cells.append(CellGenotype(position=position, nodes=space.cells.nodes, edges=[
            Edge(source=s, target=t, op=names[k], params=params[k]) for s, t, k in chosen]))
        recorded[position] = CellProbabilities(
            ops=space.labels, edges=[[s, t] for s, t in edge_list],
            values=[[round(v, PROBABILITY_DECIMALS) for v in row] for row in p])
    mobile = net.derive_backbone()
    backbone_probs = net.backbone_probabilities()
    backbone_recorded = {
        choice.key: ChoiceProbabilities(
            options=list(choice.options),
            values=[round(v, PROBABILITY_DECIMALS) for v in backbone_probs[choice.key].tolist()])
        for choice in getattr(net.backbone, "choices", [])}
    return Genotype(
        space=SpaceRef(name=space.name, hash=space.canonical_hash()),
        input=InputSize(height=space.input.height, width=space.input.width),
        backbone=BackboneGenotype(name=space.backbone.name, last_stride=space.backbone.last_stride,
                                  choices=mobile.model_dump(mode="json") if mobile else {}),
        cells=cells, probabilities=recorded, backbone_probabilities=backbone_recorded,
        provenance=prov)


def _best(row: list[float], allowed: list[int]) -> int | None:
    """Index of the largest ``row`` value among ``allowed`` (ties: the lowest index)."""
    best = None
    for k in allowed:
        if best is None or row[k] > row[best]:
            best = k
    return best


def _derive_cell(p: list[list[float]], edge_list: list[tuple[int, int]], names: list[str],
                 edges_per_node: int, cap: int | None) -> list[tuple[int, int, int]]:
    """``[(source, target, op index)]`` of the kept edges, by target then source."""
    nonzero = [k for k, name in enumerate(names) if name != "zero"]
    best = [_best(row, nonzero) for row in p]
    kept: list[int] = []
    for target in sorted({t for _, t in edge_list}):
        incoming = [e for e, (_, t) in enumerate(edge_list) if t == target]
        incoming.sort(key=lambda e: (-p[e][best[e]], edge_list[e][0]))
        kept.extend(incoming[:edges_per_node])
    op = {e: best[e] for e in kept}
    if cap is not None:
        skips = [e for e in kept if names[op[e]] == "identity"]
        skips.sort(key=lambda e: (-p[e][op[e]], edge_list[e]))
        others = [k for k in nonzero if names[k] != "identity"]
        for e in skips[cap:]:
            replacement = _best(p[e], others)
            if replacement is not None:
                op[e] = replacement
    kept.sort(key=lambda e: (edge_list[e][1], edge_list[e][0]))
    return [(*edge_list[e], op[e]) for e in kept]
