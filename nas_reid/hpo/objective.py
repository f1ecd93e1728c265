"""What one tuning trial runs and how it is scored, shared by the Optuna and the Ray backend.

A trial never sees the dataset's query / gallery (the test split of the standard protocol):
:func:`validation_split` holds out a seeded, identity-disjoint share of the *training*
identities (``validation.fraction`` of the tune space), cut into a query and a gallery by camera,
and returns a :class:`~nas_reid.data.ReIDDataset` that :func:`~nas_reid.train.loop.retrain` and
:func:`~nas_reid.search.search` take unchanged (train on the other identities, evaluate on these).
:meth:`Objective.run` is one trial (``target: retrain``: a retrain; ``target: search``: a search,
then a retrain of the genotype found); the retrain evaluates on the validation split after every
epoch and passes each epoch's figures to ``report`` (:data:`REPORTED` keys); the trial's value is
the metric of the last epoch. :meth:`Objective.build` checks everything a trial needs (the
genotype or search space, the recipe, the fixed fields, the split) before the first one starts.
The split, what a trial overrides and its folder in detail: docs/tuning.md, section
`nas_reid.hpo.objective`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from nas_reid.data import ReIDDataset, resolve_dataset
from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype
from nas_reid.hpo.pruning import StoppingRule, default_grace_period
from nas_reid.hpo.space import (
    METRICS,
    SEARCH_SECTIONS,
    CategoricalParam,
    TuneSpace,
    TuneSpaceError,
    load_tune_space,
)
from nas_reid.search.data import query_gallery_split, split_identities
from nas_reid.space import SearchSpace, load_space
from nas_reid.space.reference import REFERENCES, resolve_genotype, search_space_path
from nas_reid.train.checkpoint import LAST
from nas_reid.train.recipe import Recipe, RecipeError, default_recipe, load_recipe, merge

RETRAIN_DIR = "retrain"
SEARCH_DIR = "search"
EVERY_EPOCH = {"eval": {"every": 1}}
REPORTED = ("epoch", "epochs", *METRICS, "loss")

Report = Callable[[dict[str, Any]], None]


# ------------------------------------------------------------------------------ the split


def validation_split(dataset: ReIDDataset, fraction: float = 0.25, seed: int = 0) -> ReIDDataset:
    """``dataset`` with its training identities cut in two (identity-disjoint, seeded): the
    remaining ones as ``train`` (relabelled ``0..n-1``), the held-out ``fraction`` as
    ``query`` / ``gallery`` (split by camera; pids as in the dataset's training split). The
    dataset's own query and gallery are not used."""
    pids = sorted({int(pid) for _, pid, _ in dataset.train})
    if len(pids) < 4:
        raise UserError(f"the training split of {dataset.name} has {len(pids)} identities; tuning "
                        "needs at least 4 (2 held out for validation, 2 to train on)")
    split = split_identities(dataset.train, fraction, seed, min_ids=2)
    held = [(path, split.heldout_pids[label], cam) for path, label, cam in split.heldout]
    qg = query_gallery_split(held)
    if not qg.query:
        raise UserError(f"validation split of {dataset.name}: none of the {split.num_heldout_ids} "
                        "held-out identities has images under two cameras, so there is no query; "
                        "raise validation.fraction in the tune space")
    info = {"fraction": float(fraction), "seed": int(seed), "train_ids": split.num_weight_ids,
            "heldout_ids": split.num_heldout_ids, "heldout_pids": list(split.heldout_pids),
            "query": len(qg.query), "gallery": len(qg.gallery)}
    return ReIDDataset(name=dataset.name, root=dataset.root, train=list(split.weight),
                       query=list(qg.query), gallery=list(qg.gallery),
                       extra={**dataset.extra, "validation": info})


# ------------------------------------------------------------------------------ the objective


@dataclass
class Objective:
    """Everything a trial needs, checked (build it with :meth:`build`)."""

    space: TuneSpace
    data: ReIDDataset
    """The validation dataset (:func:`validation_split`)."""
    recipe: Recipe
    """The recipe every retrain starts from."""
    genotype: Genotype | None = None
    """``target: retrain``: what every trial retrains."""
    reference: str | None = None
    """The shipped reference name of ``genotype``, if it is one (its recipe overrides apply)."""
    search_space: SearchSpace | None = None
    """``target: search``: what every trial searches."""
    device: str = "cpu"
    num_workers: int = 0
    """Image-loading worker processes of each trial's search and retrain (0: in the trial's
    own process); they change no figure, only the speed."""

    @classmethod
    def build(cls, space: TuneSpace | str | os.PathLike | Mapping[str, Any],
              data: ReIDDataset | str | None = None, *, root: str | os.PathLike | None = None,
              genotype: Genotype | str | os.PathLike | None = None,
              search_space: SearchSpace | str | os.PathLike | Mapping[str, Any] | None = None,
              recipe: str | os.PathLike | Mapping[str, Any] | Recipe | None = None,
              device: str = "cpu", num_workers: int = 0) -> "Objective":
        """Check the inputs of a tuning run and build its objective.

        Args:
            space: the tune space (a :class:`TuneSpace`, YAML path or dict).
            data, root: the dataset (a :class:`ReIDDataset`, or a name with its folder;
                default the built-in ``synthreid``); its training split is cut by
                :func:`validation_split` with the space's ``validation``.
            genotype: ``target: retrain``: a :class:`Genotype`, genotype JSON, search run folder
                or reference name.
            search_space: ``target: search``: a search space (YAML path, shipped name such as
                ``cpu_small``, dict or :class:`SearchSpace`); default ``cpu_small``.
            recipe: the retrain recipe (name, YAML, dict or :class:`Recipe`); default
                :func:`~nas_reid.train.recipe.default_recipe` of the dataset and backbone
                (``synthetic`` on synthreid, ``bot`` otherwise; ``mobile_synthetic`` /
                ``mobile`` for a mobile backbone).
            device: ``cpu`` or ``cuda``.
            num_workers: image-loading processes of each trial (see :attr:`num_workers`).

        Raises :class:`~nas_reid.errors.UserError` for anything a trial would fail on whatever
        its values.
        """
        space = load_tune_space(dict(space) if isinstance(space, Mapping) else space)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise UserError(f"workers: must be an integer >= 0, got {num_workers!r}")
        if space.target == "retrain":
            if genotype is None:
                raise UserError(f"tune space {space.name!r} tunes retrains (target: retrain): give "
                                "the genotype every trial retrains")
            if search_space is not None:
                raise UserError(f"tune space {space.name!r} tunes retrains (target: retrain): a "
                                "search space is only for target: search")
        else:
            if genotype is not None:
                raise UserError(f"tune space {space.name!r} tunes searches (target: search): each "
                                "trial retrains the genotype its search finds; leave out the genotype")
            search_space = "cpu_small" if search_space is None else search_space
        reference = None
        if isinstance(genotype, Genotype) or genotype is None:
            found = genotype
        else:
            found, reference = resolve_genotype(genotype)
        sspace = None
        if search_space is not None:
            if isinstance(search_space, (str, os.PathLike)):
                sspace = load_space(search_space_path(search_space))
            else:
                sspace = load_space(dict(search_space) if isinstance(search_space, Mapping)
                                    else search_space)
        full = resolve_dataset(data, root)
        if recipe is None:
            backbone = (found.backbone.name if found is not None
                        else sspace.backbone.name if sspace is not None else None)
            recipe = default_recipe(full.name, backbone)
        base = load_recipe(recipe)
        val = validation_split(full, space.validation.fraction, space.validation.seed)
        objective = cls(space=space, data=val, recipe=base, genotype=found, reference=reference,
                        search_space=sspace, device=str(device), num_workers=num_workers)
        objective._check()
        return objective

    # -- views

    @property
    def target(self) -> str:
        return self.space.target

    @property
    def metric(self) -> str:
        return self.space.metric.name

    def recipe_overrides(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The recipe overrides of a trial's retrain (without the tuner's ``eval.every``),
        checked on the recipe: a reference genotype's own overrides, then ``fixed`` and the
        values (target retrain) or the space's ``retrain`` fields (target search)."""
        ref = REFERENCES[self.reference].recipe_overrides if self.reference else {}
        if self.target == "retrain":
            out = merge(ref, self.space.overrides(dict(values)))
        else:
            out = merge(ref, self.space.retrain_overrides())
        try:
            load_recipe(self.recipe, merge(out, EVERY_EPOCH))
        except RecipeError as exc:
            raise TuneSpaceError(f"trial values {_shown(values)}: {_said(exc)}") from None
        return out

    def search_space_for(self, values: Mapping[str, Any]) -> SearchSpace:
        """``target: search``: the search space of a trial (``fixed`` and the values applied to
        its ``schedule``, ``sampling`` and ``cells``), validated."""
        if self.search_space is None:
            raise UserError(f"tune space {self.space.name!r} has target {self.target}; no search space")
        nested = self.space.overrides(dict(values))
        sections = {k: v for k, v in nested.items() if k in SEARCH_SECTIONS}
        schedule = {k: v for k, v in nested.items() if k not in SEARCH_SECTIONS}
        resolved = self.search_space.resolved()
        resolved = merge(resolved, {**sections, "schedule": schedule})
        try:
            return load_space(resolved)
        except UserError as exc:
            raise TuneSpaceError(f"trial values {_shown(values)} give an invalid search space: "
                                 f"{exc}") from None

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial's retrain can run (what ASHA's rungs are measured against)."""
        spec = self.space.params.get("epochs") if self.target == "retrain" else None
        if isinstance(spec, CategoricalParam):
            return max(int(v) for v in spec.choices if isinstance(v, (int, float)))
        if spec is not None:
            return int(spec.high)
        fixed = (self.space.fixed_overrides() if self.target == "retrain"
                 else self.space.retrain_overrides())
        return int(fixed.get("epochs", self.recipe.epochs))

    @property
    def grace_period(self) -> int:
        """The epochs every trial runs before it can be stopped: the tune space's
        ``early_stopping.grace_period``, else the retrain recipe's longest learning-rate
        warm-up (over the parameters' ends) plus a quarter of :attr:`max_epochs`."""
        given = self.space.early_stopping.grace_period
        if given is not None:
            return given
        warmups = []
        for values in [{}] + (self.space.corner_values() if self.target == "retrain" else []):
            try:
                recipe = load_recipe(self.recipe, merge(self._overrides_unchecked(values),
                                                        EVERY_EPOCH))
            except (RecipeError, TuneSpaceError):
                continue
            warmups.append(recipe.lr_schedule.warmup_epochs)
        return default_grace_period(max(warmups, default=0), self.max_epochs)

    def stopping_rule(self, early_stopping: str) -> StoppingRule:
        """The early stopping of ``asha``, ``median`` or ``none`` for this study's trials."""
        return StoppingRule(early_stopping, self.grace_period,
                            self.space.early_stopping.reduction_factor, self.max_epochs,
                            self.space.metric.mode)

    def best_config(self, values: Mapping[str, Any], name: str) -> dict[str, Any]:
        """The complete config a trial's values stand for, named ``name``: the retrain recipe
        (target retrain; loadable by ``load_recipe``) or the search space (target search;
        loadable by ``load_space``)."""
        if self.target == "retrain":
            doc = load_recipe(self.recipe, self.recipe_overrides(values)).resolved()
        else:
            doc = self.search_space_for(values).resolved()
        doc["name"] = name
        return doc

    # -- checks

    def _representative(self) -> dict[str, Any]:
        """Values under which the fixed fields give a valid trial: none, or every parameter at
        its low end, or at its high end; the first error when none does (whatever a trial's
        values, its recipe or search space would then most likely be invalid)."""
        first = None
        for values in ([{}] + self.space.corner_values()) if self.target == "retrain" else [{}]:
            try:
                load_recipe(self.recipe, merge(self._overrides_unchecked(values), EVERY_EPOCH))
                return values
            except (RecipeError, TuneSpaceError) as exc:
                first = first or exc
        where = "fixed" if self.target == "retrain" else "retrain"
        raise TuneSpaceError(f"tune space {self.space.name!r}: its {where} fields do not fit the "
                             f"recipe {self.recipe.name!r}: {_said(first)}") from None

    def _overrides_unchecked(self, values: Mapping[str, Any]) -> dict[str, Any]:
        ref = REFERENCES[self.reference].recipe_overrides if self.reference else {}
        if self.target == "retrain":
            return merge(merge(ref, self.space.fixed_overrides()), _nest_values(values))
        return merge(ref, self.space.retrain_overrides())

    def _check(self) -> None:
        n_train = self.data.num_train_pids
        values = self._representative()
        recipe = load_recipe(self.recipe, merge(self._overrides_unchecked(values), EVERY_EPOCH))
        if self.target == "search" or "batch.p" not in self.space.params:
            if recipe.batch.p > n_train:
                raise UserError(f"the recipe's batch.p={recipe.batch.p} needs more identities than "
                                f"the {n_train} a trial trains on (the training identities less the "
                                "validation share); lower batch.p")
        if self.target == "search":
            space = self.search_space_for({})
            p = space.schedule.batch.p
            if "batch.p" not in self.space.params and 2 * p > n_train:
                raise UserError(f"search space {space.name!r}: schedule.batch.p={p} needs {2 * p} "
                                f"identities (P for the weights, P held out) but a trial has {n_train} "
                                "(the training identities less the validation share)")
        grace = self.space.early_stopping.grace_period
        if grace is not None and grace > self.max_epochs:
            raise TuneSpaceError(f"tune space {self.space.name!r}: early_stopping.grace_period="
                                 f"{grace} is more than the {self.max_epochs} epochs of a trial")

    # -- a trial

    def run(self, values: Mapping[str, Any], work_dir: str | os.PathLike, report: Report, *,
            resume: bool = False) -> float:
        """Run one trial in ``work_dir`` and return its value (the metric after the last epoch).

        ``report`` gets each epoch's figures (:data:`REPORTED`), after the retrain's checkpoint
        of that epoch is written; an exception it raises stops the trial (resumable). With
        ``resume`` and a retrain checkpoint in ``work_dir``, the retrain continues from it;
        otherwise ``work_dir`` is emptied and the trial starts from the beginning.
        """
        from nas_reid.search import search
        from nas_reid.train.loop import retrain

        work = Path(work_dir)
        run_dir = work / RETRAIN_DIR

        def on_epoch(record: dict[str, Any]) -> None:
            report(epoch_metrics(record))

        if resume and (run_dir / LAST).is_file():
            result = retrain(None, self.data, out_dir=run_dir, resume=True, progress=False,
                             device=self.device, num_workers=self.num_workers, on_epoch=on_epoch)
        else:
            _empty(work)
            overrides = merge(self.recipe_overrides(values), EVERY_EPOCH)
            genotype: Genotype | str | None = self.reference or self.genotype
            if self.target == "search":
                space = self.search_space_for(values)
                found = search(space, self.data, out_dir=work / SEARCH_DIR, device=self.device,
                               num_workers=self.num_workers, progress=False)
                if found.genotype is None:
                    raise RuntimeError("the search ended without a genotype")
                shutil.rmtree(work / SEARCH_DIR / "checkpoints", ignore_errors=True)
                genotype = found.genotype
            result = retrain(genotype, self.data, recipe=self.recipe, overrides=overrides,
                             out_dir=run_dir, progress=False, device=self.device,
                             num_workers=self.num_workers, on_epoch=on_epoch)
        if not result.finished or not result.results:
            raise RuntimeError(f"the retrain in {run_dir} did not finish")
        return float(result.results["plain"][self.metric])


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """The figures a trial reports for one retrain epoch record (:data:`REPORTED`)."""
    evaluation = record.get("eval")
    if not evaluation:
        raise RuntimeError(f"epoch {record.get('epoch')} has no evaluation (eval.every must be 1)")
    return {"epoch": int(record["epoch"]), "epochs": int(record["epochs"]),
            **{k: float(evaluation[k]) for k in METRICS},
            "loss": float(record["loss"]["total"])}


def _nest_values(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _empty(folder: Path) -> None:
    """Create ``folder``, or remove what it holds (a trial that starts over)."""
    if folder.is_dir():
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def _said(exc: Exception) -> str:
    """An error message, without the doubled word load_recipe writes for a Recipe object."""
    return str(exc).replace("recipe recipe ", "recipe ", 1)


def _shown(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items()) or "(none)"
