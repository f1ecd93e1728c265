"""The papers' reference models as shipped genotypes, and the files shipped with the package.

``search_spaces/reference/<name>.json`` holds one hand-written genotype per model (exactly
:meth:`Genotype.to_json` output), all ResNet-50 with last stride 1 at a 256x128 input and the
BNNeck head of :func:`nas_reid.space.build_model`: ``baseline`` (no cells); ``rga_s``,
``rga_c``, ``rga_sc`` (RGA after each of layer1 .. layer4, ratios 8); ``rib_dcs``
(DCS-Attention, ``variant="mask"``) and ``rib_ca`` (SE, reduction 16), both placed as RGA is (an
unverified choice). :data:`REFERENCES` gives each model's description, paper and
``recipe_overrides``; :func:`retarget` puts the same cells on another backbone, input size or
subset of positions; :func:`shipped_file` finds a file under ``search_spaces/`` in a source
checkout, an editable install and a regular (wheel) install alike.

RGA: Zhang, Lan, Zeng, Jin and Chen, "Relation-Aware Global Attention for Person
Re-identification", CVPR 2020; official code microsoft/Relation-Aware-Global-Attention-Networks
(``reid/models/models_utils/rga_modules.py`` for the module and its defaults,
``reid/models/models_utils/rga_branches.py`` for the placement). RIB / DCS: Wang, Jojic and Yang,
"Learning Informative Attention Weights for Person Re-Identification", arXiv 2505.08961 (v1,
2025, titled "Differentiable Channel Selection in Self-Attention For Person Re-Identification").
The models, the placement choice, the recipes and the shipped files in detail:
docs/internals.md, section `nas_reid.space.reference`.
"""

from __future__ import annotations

import copy
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from nas_reid.errors import UserError
from nas_reid.space.genotype import SCHEMA, VERSION, Genotype, GenotypeError
from nas_reid.space.backbone import POSITIONS
from nas_reid.space.config import canonical_params

SHIPPED_PACKAGE = "nas_reid.search_spaces"
"""The installed package that holds the ``search_spaces/`` folder."""

REFERENCE_DIR = "reference"
"""Sub-folder of ``search_spaces/`` with the reference genotypes."""

RUN_GENOTYPE = "genotype.json"
"""The final genotype in a search run folder (:data:`nas_reid.search.loop.GENOTYPE_FILE`)."""

_RGA_PAPER = ("Zhang et al., Relation-Aware Global Attention for Person Re-identification, "
              "CVPR 2020 (arXiv 1904.02998)")
_RIB_PAPER = ("Wang, Jojic, Yang, Learning Informative Attention Weights for Person "
              "Re-Identification (arXiv 2505.08961 v2)")
_RIB_RECIPE = {"loss": {"rib": 0.1, "rib_warmup": 0.3}}


@dataclass(frozen=True)
class Reference:
    """What a reference genotype cannot carry: its description, paper and training recipe."""

    name: str
    description: str
    """One line."""
    paper: str
    op: str | None
    """The op of every cell (``None``: no cells)."""
    op_params: dict[str, Any] = field(default_factory=dict)
    """The op's parameters as given (defaults are filled in in the file)."""
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        """Changes to the training recipe's config (nested, merged over it); a fresh copy."""
        return copy.deepcopy(self.overrides)


REFERENCES: dict[str, Reference] = {ref.name: ref for ref in (
    Reference("baseline", "ResNet-50 (last stride 1, 256x128) with the BNNeck head, no attention",
              _RGA_PAPER, None),
    Reference("rga_s", "RGA-S (spatial relation-aware attention) after layer1..layer4, ratios 8/8/8",
              _RGA_PAPER, "rga_s", {"c_ratio": 8, "s_ratio": 8, "d_ratio": 8}),
    Reference("rga_c", "RGA-C (channel relation-aware attention) after layer1..layer4, ratios 8/8/8",
              _RGA_PAPER, "rga_c", {"c_ratio": 8, "s_ratio": 8, "d_ratio": 8}),
    Reference("rga_sc", "RGA-SC (spatial then channel) after layer1..layer4, ratios 8/8/8",
              _RGA_PAPER, "rga_sc", {"c_ratio": 8, "s_ratio": 8, "d_ratio": 8}),
    Reference("rib_dcs", "DCS-Attention (per-token channel mask) after layer1..layer4, "
              "trained with the IBB loss (placement unverified)",
              _RIB_PAPER, "dcs", {"variant": "mask"}, _RIB_RECIPE),
    Reference("rib_ca", "SE channel attention (reduction 16) after layer1..layer4, trained with "
              "the IBB loss (module and placement unverified)",
              _RIB_PAPER, "se", {"reduction": 16}, _RIB_RECIPE),
)}
"""Reference name -> :class:`Reference`, in the order the names are listed."""


def reference_names() -> list[str]:
    """The reference genotype names: baseline, rga_s, rga_c, rga_sc, rib_dcs, rib_ca."""
    return list(REFERENCES)


def _unknown(name: str) -> GenotypeError:
    return GenotypeError(f"unknown reference genotype {name!r}; reference names: "
                         f"{', '.join(reference_names())}")


def reference_path(name: str) -> Path:
    """The shipped file ``search_spaces/reference/<name>.json`` of reference ``name``."""
    if name not in REFERENCES:
        raise _unknown(name)
    return shipped_file(REFERENCE_DIR, f"{name}.json")


def make_reference(name: str) -> Genotype:
    """Reference ``name`` built from :data:`REFERENCES` (how the shipped files were written:
    ``make_reference(name).save(reference_path(name))``); the package version is the current one."""
    if name not in REFERENCES:
        raise _unknown(name)
    ref = REFERENCES[name]
    cells = [] if ref.op is None else [
        {"position": position, "nodes": 1, "edges": [
            {"source": 0, "target": 1, "op": ref.op,
             "params": canonical_params(ref.op, ref.op_params)}]}
        for position in POSITIONS]
    return Genotype.from_dict({
        "schema": SCHEMA, "version": VERSION,
        "space": {"name": None, "hash": None},
        "input": {"height": 256, "width": 128},
        "backbone": {"name": "resnet50", "last_stride": 1, "choices": {}},
        "cells": cells,
    }, where=f"reference {name!r}")


class SpaceMismatchWarning(UserWarning):
    """A genotype's space hash is not that of its space, but its network is one of that space."""


def space_mismatch(genotype: Genotype, where: str,
                   run_dir: Path | None = None) -> tuple[str, bool] | None:
    """How the space hash ``genotype`` records disagrees with its space: the search space of
    its search run folder ``run_dir`` (its ``config.yaml``), else the shipped search space its
    space name names. ``(message, differs)``, ``differs`` when its network is none of that
    space's (:meth:`Genotype.space_misfit`); None when the hashes agree, the genotype records
    no hash (hand-written, retargeted) or no such space is found."""
    if genotype.space.hash is None:
        return None
    from nas_reid.space.config import SpaceError, load_space

    space = None
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        import yaml

        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
            space = load_space(config["space"]) if isinstance(config, dict) and \
                isinstance(config.get("space"), dict) else None
        except (yaml.YAMLError, UnicodeDecodeError, UserError):
            space = None
        named = f"the search space of its run {run_dir}"
    if space is None and genotype.space.name in shipped_space_names():
        space = load_space(search_space_path(genotype.space.name))
        named = f"the shipped search space {genotype.space.name!r}"
    if space is None or space.canonical_hash() == genotype.space.hash:
        return None
    said = (f"genotype {where}: its space hash {genotype.space.hash} is not that of {named} "
            f"({space.canonical_hash()})")
    misfit = genotype.space_misfit(space)
    if misfit is not None:
        return f"{said}, and its network is none of that space's: {misfit}", True
    return f"{said}; its network is one of that space's and is built from the genotype alone", False


def check_space_hash(genotype: Genotype, where: str, run_dir: Path | None = None, *,
                     strict: bool) -> None:
    """:func:`space_mismatch` acted on: a :class:`GenotypeError` when the network differs and
    ``strict`` (a command that builds it), else a :class:`SpaceMismatchWarning`."""
    found = space_mismatch(genotype, where, run_dir)
    if found is None:
        return
    message, differs = found
    if differs and strict:
        raise GenotypeError(f"{message}; set its space to null to use it anyway")
    import warnings

    warnings.warn(message, SpaceMismatchWarning, stacklevel=3)


def resolve_genotype(spec: str | os.PathLike, *,
                     strict: bool = True) -> tuple[Genotype, str | None]:
    """The genotype ``spec`` names, and its reference name (``None`` if it is not one).

    ``spec`` is, in this order: a genotype JSON file; a run folder (its ``genotype.json``); a
    reference name (:func:`reference_names`). A file that is a shipped reference file also
    gives its name. Anything else raises :class:`GenotypeError` listing the reference names.
    A space hash that disagrees with the genotype's space is checked by
    :func:`check_space_hash` (``strict``: for a command that builds the network).
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise GenotypeError(f"genotype: expected a path or a reference name, got "
                            f"{type(spec).__name__}")
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text and path.is_dir():
        run_file = path / RUN_GENOTYPE
        if run_file.is_file():
            path = run_file
        elif text not in REFERENCES:
            raise GenotypeError(f"genotype {text}: a folder without {RUN_GENOTYPE} (not a finished "
                                f"search run); reference names: {', '.join(reference_names())}")
    if text and path.is_file():
        genotype = Genotype.from_json(path)
        check_space_hash(genotype, str(path), path.parent if path.name == RUN_GENOTYPE else None,
                         strict=strict)
        return genotype, _reference_of(path)
    if text in REFERENCES:
        return Genotype.from_json(reference_path(text)), text
    raise GenotypeError(f"genotype {text!r}: neither a genotype file, a run folder nor a "
                        f"reference name; reference names: {', '.join(reference_names())}")


def _reference_of(path: Path) -> str | None:
    """The reference name of ``path`` if it is a shipped reference file."""
    name = path.stem
    if name not in REFERENCES or path.parent.name != REFERENCE_DIR:
        return None
    try:
        shipped = reference_path(name)
    except UserError:
        return None
    return name if path.resolve() == shipped.resolve() else None


def retarget(genotype: Genotype, *, backbone: str | None = None, last_stride: int | None = None,
             input_size: tuple[int, int] | None = None,
             positions: Iterable[str] | None = None) -> Genotype:
    """The same cells (ops and parameters) on another backbone, last stride or input size
    ``(height, width)``, keeping only the cells at ``positions`` if given (``None``: all).

    The result is validated anew: every op is built at its position's new ``(C, H, W)`` (RGA's
    relation convs depend on H*W), and an op that does not fit raises :class:`GenotypeError`
    naming it. The space reference becomes ``{name: null, hash: null}`` (the hash described the
    original space) and the probabilities are dropped; the provenance is kept as it is, so it
    still names the search (or reference) the cells come from, not this derived network.
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"retarget needs a Genotype, got {type(genotype).__name__}")
    data = genotype.to_dict()
    if backbone is not None:
        data["backbone"]["name"] = backbone
    if last_stride is not None:
        data["backbone"]["last_stride"] = last_stride
    if input_size is not None:
        try:
            height, width = input_size
        except (TypeError, ValueError):
            raise GenotypeError(f"retarget: input_size must be (height, width), got "
                                f"{input_size!r}") from None
        data["input"] = {"height": height, "width": width}
    if positions is not None:
        wanted = [positions] if isinstance(positions, str) else list(positions)
        have = [c["position"] for c in data["cells"]]
        for p in wanted:
            if p not in POSITIONS:
                raise GenotypeError(f"retarget: unknown position {p!r}; positions: "
                                    f"{', '.join(POSITIONS)}")
            if p not in have:
                raise GenotypeError(f"retarget: the genotype has no cell at {p!r} (cells at: "
                                    f"{', '.join(have) or 'none'})")
        data["cells"] = [c for c in data["cells"] if c["position"] in wanted]
    data["space"] = {"name": None, "hash": None}
    data["probabilities"] = {}
    b, (h, w) = data["backbone"], (data["input"]["height"], data["input"]["width"])
    return Genotype.from_dict(data, where=f"retargeted to {b['name']} (last stride "
                                          f"{b['last_stride']}) at {h}x{w}")


def shipped_file(*parts: str) -> Path:
    """The file ``search_spaces/<parts...>`` shipped with the package, e.g.
    ``shipped_file("cpu_small.yaml")``; :class:`UserError` if it is missing."""
    if not parts:
        raise ValueError("shipped_file needs a file name")
    root = _shipped_root()
    path = root.joinpath(*parts)
    if not path.is_file():
        raise UserError(f"shipped file {'/'.join(('search_spaces',) + parts)} is missing (looked "
                        f"in {root}); is nas-reid installed completely?")
    return path


def shipped_space_names() -> list[str]:
    """The names of the shipped search spaces (``cpu_small``, ``mobile_cpu``, ...)."""
    return sorted(p.stem for p in shipped_file("cpu_small.yaml").parent.glob("*.yaml"))


def search_space_path(spec: str | os.PathLike) -> Path:
    """A search-space YAML path, or the name of a shipped one (``cpu_small``, ``mobile_cpu``)."""
    path = Path(spec).expanduser()
    if path.exists() or isinstance(spec, os.PathLike) or path.suffix or os.sep in str(spec):
        return path
    folder = shipped_file("cpu_small.yaml").parent
    names = shipped_space_names()
    if str(spec) not in names:
        raise UserError(f"search space {spec}: no such file, and not a shipped search space "
                        f"({', '.join(names)})")
    return folder / f"{spec}.yaml"


def _shipped_root() -> Path:
    """The ``search_spaces/`` folder: the installed data package, else the source checkout."""
    try:
        root = importlib.resources.files(SHIPPED_PACKAGE)
    except ModuleNotFoundError:
        root = None
    if isinstance(root, Path) and root.is_dir():
        return root
    return Path(__file__).resolve().parents[2] / "search_spaces"
