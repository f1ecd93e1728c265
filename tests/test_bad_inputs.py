"""The bad-input suite: every command, handed something wrong, fails well.

Each case is ``(id, argv, words, setup)``: the ``nas-reid`` command line (in-process, click's
runner, in a fresh folder that is also the current folder), the words its error must contain,
and what to put in the folder first. Every case must end with exit code 2 and exactly one line
of output, ``Error: ...`` naming the problem, no traceback, and no file written, changed or
removed anywhere in the folder (nor in the cache of the built-in benchmark), unless the case
names an existing run folder it may touch (``touches``).

Placeholders in ``argv``: ``{data}`` the session's tiny synthreid benchmark (read only),
``{genotype}`` a valid tiny genotype file, ``{space}`` a valid tiny search-space YAML,
``{tune}`` a valid tiny tune space (``tune.yaml``), ``{ckpt}`` a model checkpoint of the tiny
genotype; each is made only for the cases that name it.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from click.testing import CliRunner

from nas_reid.cli import main
from tests.fake_datasets import build_market, market_name, write_image
from tests.tiny import tiny_genotype, tiny_space, tiny_tune_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    words: str
    setup: Callable[[Path], None] | None = None
    touches: str | None = None
    """A run folder (relative) the command may write into: a resumable run it continues."""
    marks: tuple = ()
    after_setup: bool = False
    """Found only by the work (an image read in the set-up): the set-up's progress lines
    (:data:`SETUP_LINES`) may come before the error line."""


SETUP_LINES = ("search run folder: ", "retrain run folder: ", "curves: tensorboard", "set-up: ",
               "data: generating", "--epochs ")


# ------------------------------------------------------------------------------ files


def write(relative: str, text: str | bytes) -> Callable[[Path], None]:
    """A set-up step: write ``text`` to ``relative`` (folders created)."""
    def setup(folder: Path) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return setup


def steps(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for step in setups:
            step(folder)
    return setup


def yaml_file(relative: str, data) -> Callable[[Path], None]:
    return write(relative, yaml.safe_dump(data, sort_keys=False))


def space_with(**changes) -> dict:
    space = tiny_space()
    space.update(changes)
    return space


def genotype_dict(**changes) -> dict:
    data = tiny_genotype().to_dict()
    data.update(changes)
    return data


def genotype_file(relative: str, data) -> Callable[[Path], None]:
    return write(relative, json.dumps(data))


def tune_with(**changes) -> dict:
    space = tiny_tune_space()
    space.update(changes)
    return space


def model_checkpoint(relative: str, change: Callable[[dict], None] | None = None):
    def setup(folder: Path) -> None:
        from nas_reid.space.discrete import build_model
        from nas_reid.train.checkpoint import model_state

        torch.manual_seed(0)
        model = build_model(tiny_genotype(), num_classes=4).eval()
        state = model_state(model, num_classes=4, epoch=1, data={"name": "synthreid",
                                                                  "root": "nowhere"}, metrics=None)
        if change is not None:
            change(state)
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    return setup


class Pwned:
    """A pickle that would create a file named ``pwned`` when loaded without weights_only."""

    def __reduce__(self):
        return (os.mkdir, ("pwned",))


def evil_pickle(relative: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": "nas-reid/model", "version": 1, "model": Pwned()}, path)
    return setup


def evil_yaml(relative: str) -> Callable[[Path], None]:
    return write(relative, "!!python/object/apply:os.mkdir [pwned]\n")


def market_with(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """A fake Market-1501 in ``mk/`` changed by ``change(dataset folder)``."""
    def setup(folder: Path) -> None:
        change(build_market(folder / "mk"))
    return setup


def retrain_run(relative: str) -> Callable[[Path], None]:
    """A finished retrain run folder as far as its files go (results.json, a model checkpoint)."""
    return steps(model_checkpoint(f"{relative}/checkpoints/last.pt"),
                 write(f"{relative}/results.json", "{}"),
                 write(f"{relative}/config.yaml", "recipe: {}\n"))


def search_run_checkpoint(relative: str) -> Callable[[Path], None]:
    """An unfinished search's folder: its config.yaml has a ``search`` section and its
    checkpoints/last.pt is a search checkpoint (not a model checkpoint)."""
    def setup(folder: Path) -> None:
        (folder / relative / "checkpoints").mkdir(parents=True)
        (folder / relative / "config.yaml").write_text("space: {}\nsearch: {epochs: 2}\n")
        torch.save({"space_hash": "0" * 16, "config": {}},
                   folder / relative / "checkpoints" / "last.pt")
    return setup


def tune_run(relative: str, **changes) -> Callable[[Path], None]:
    """A tuning run's record (tune.yaml) as a resume reads it."""
    settings = {"backend": "optuna", "study": "tiny_tune", "storage": "sqlite:///x.db", "seed": 0,
                "early_stopping": "asha", "trials": 1, "device": "cpu",
                "data": {"name": "synthreid", "root": "nowhere"}, "target": "retrain",
                "tune_space": tiny_tune_space(), "genotype": tiny_genotype().to_dict(),
                "reference": None, "search_space": None, "recipe": "bot", "ray": None,
                "validation": {}}
    settings.update(changes)
    return yaml_file(f"{relative}/tune.yaml", settings)


BAD_SPACE = "bad.yaml"
SEARCH = ("search", "--out", "run")
RETRAIN = ("retrain", "--out", "run")
TUNE = ("tune", "{tune}", "--genotype", "{genotype}", "--out", "study", "--data", "synthreid",
        "--root", "{data}", "--recipe", "bot")
OPTUNA = (*TUNE, "--backend", "optuna")
TINY = ("--data", "synthreid", "--root", "{data}")


def c(id: str, *argv: str, words: str, setup=None, touches=None, marks=(),
      after_setup=False) -> Case:
    return Case(id, tuple(argv), words, setup, touches, tuple(marks), after_setup)


CASES: list[Case] = [
    # -- the command line itself
    c("unknown-command", "serch", words="No such command 'serch'"),
    c("unknown-top-option", "--colour", words="No such option '--colour'"),
    c("unknown-option", "search", "--epoch", "3", words="No such option '--epoch'"),
    c("missing-option-value", "search", "--out", words="Option '--out' requires an argument"),

    # -- data check / sheet / synth
    c("data-check-unknown-dataset", "data", "check", "--data", "market", "--root", ".",
      words="'market' is not one of"),
    c("data-check-no-root", "data", "check", "--data", "market1501", words="--root is required"),
    c("data-check-missing-root", "data", "check", "--data", "dukemtmc", "--root", "nowhere",
      words="nowhere"),
    c("data-check-root-is-a-file", "data", "check", "--data", "market1501", "--root", "f.txt",
      words="f.txt", setup=write("f.txt", "x")),
    c("data-check-bad-file-name", "data", "check", "--data", "market1501", "--root", "mk",
      words="not_a_reid_name.jpg", setup=market_with(
          lambda root: write_image(root / "query" / "not_a_reid_name.jpg"))),
    c("data-check-missing-split", "data", "check", "--data", "market1501", "--root", "mk",
      words="query", setup=market_with(lambda root: [p.unlink() for p in (root / "query").iterdir()]
                                       and (root / "query").rmdir())),
    c("data-check-empty-split", "data", "check", "--data", "market1501", "--root", "mk",
      words="bounding_box_train", setup=market_with(
          lambda root: [p.unlink() for p in (root / "bounding_box_train").iterdir()])),
    c("data-check-camera-out-of-range", "data", "check", "--data", "market1501", "--root", "mk",
      words="camera", setup=market_with(
          lambda root: write_image(root / "query" / market_name(3, 9, 7)))),
    c("data-check-distractor-in-train", "data", "check", "--data", "market1501", "--root", "mk",
      words="bounding_box_train", setup=market_with(
          lambda root: write_image(root / "bounding_box_train" / market_name(0, 1, 99)))),
    c("data-check-msmt17-empty", "data", "check", "--data", "msmt17", "--root", "ms",
      words="ms", setup=write("ms/MSMT17_V1/train/.keep", "")),
    c("data-check-cuhk03-empty", "data", "check", "--data", "cuhk03", "--root", "cu",
      words="cu", setup=write("cu/readme.txt", "x")),
    c("data-check-synthreid-modified", "data", "check", "--data", "synthreid", "--root", "sr",
      words="manifest", setup=lambda folder: _modified_synthreid(folder / "sr")),
    c("data-check-dataset-alias-still-checked", "data", "check", "--dataset", "duke",
      "--root", ".", words="'duke' is not one of"),
    c("data-check-no-data", "data", "check", "--root", ".", words="Missing option '--data'"),
    c("data-check-data-and-alias-disagree", "data", "check", "--data", "market1501",
      "--dataset", "dukemtmc", "--root", ".", words="disagree"),
    c("data-sheet-unreadable-image", "data", "sheet", "--data", "market1501", "--root", "mk",
      "--out", "sheet.png", words="cannot read image", setup=market_with(
          lambda root: (root / "bounding_box_train" / market_name(7, 1, 0)).write_bytes(b""))),
    c("data-sheet-out-is-a-folder", "data", "sheet", "--data", "market1501", "--root", "mk",
      "--out", "pics", words="pics is a folder", setup=steps(market_with(lambda root: None),
                                                 write("pics/keep.txt", "x"))),
    c("data-sheet-zero-ids", "data", "sheet", "--data", "market1501", "--root", "mk",
      "--out", "s.png", "--ids", "0", words="--ids", setup=market_with(lambda root: None)),
    c("data-sheet-zero-per-id", "data", "sheet", "--data", "market1501", "--root", "mk",
      "--out", "s.png", "--per-id", "0", words="--per-id", setup=market_with(lambda root: None)),
    c("data-sheet-bad-split", "data", "sheet", "--data", "market1501", "--root", "mk",
      "--out", "s.png", "--split", "test", words="'test' is not one of"),
    c("data-synth-bad-size", "data", "synth", "--out", "sy", "--size", "tall",
      words="--size must look like HxW"),
    c("data-synth-zero-size", "data", "synth", "--out", "sy", "--size", "0x0", words="height"),
    c("data-synth-too-many-cameras", "data", "synth", "--out", "sy", "--cameras", "12",
      words="cameras"),
    c("data-synth-no-ids", "data", "synth", "--out", "sy", "--ids", "0", words="ids"),
    c("data-synth-no-images", "data", "synth", "--out", "sy", "--images-per-id", "0",
      words="images_per_id"),
    c("data-synth-no-workers", "data", "synth", "--out", "sy", "--workers", "0", words="workers"),
    c("data-synth-out-not-empty", "data", "synth", "--out", "sy", words="not empty",
      setup=write("sy/keep.txt", "mine")),
    c("data-synth-out-is-a-file", "data", "synth", "--out", "sy", words="sy",
      setup=write("sy", "a file")),
    c("data-synth-seed-not-a-number", "data", "synth", "--out", "sy", "--seed", "one",
      words="'one' is not a valid integer"),

    # -- search: the space
    c("search-space-missing-file", *SEARCH, "--space", "nope.yaml", words="nope.yaml"),
    c("search-space-unknown-name", *SEARCH, "--space", "cpu_smal",
      words="not a shipped search space"),
    c("search-space-malformed-yaml", *SEARCH, "--space", BAD_SPACE, words="not valid YAML",
      setup=write(BAD_SPACE, "name: x\nops: [a, b\n")),
    c("search-space-empty", *SEARCH, "--space", BAD_SPACE, words="empty",
      setup=write(BAD_SPACE, "")),
    c("search-space-a-list", *SEARCH, "--space", BAD_SPACE, words="a list",
      setup=write(BAD_SPACE, "- a\n- b\n")),
    c("search-space-binary", *SEARCH, "--space", BAD_SPACE, words=BAD_SPACE,
      setup=write(BAD_SPACE, b"\xff\xfe\x00garbage")),
    c("search-space-python-tag", *SEARCH, "--space", BAD_SPACE, words=BAD_SPACE,
      setup=evil_yaml(BAD_SPACE)),
    c("search-space-typo-field", *SEARCH, "--space", BAD_SPACE, words="sampeling: unknown field; did you mean 'sampling'?",
      setup=yaml_file(BAD_SPACE, {**tiny_space(), "sampeling": {"strategy": "gumbel"}})),
    c("search-space-two-problems", *SEARCH, "--space", BAD_SPACE, words="2 problems: backbone.name",
      setup=yaml_file(BAD_SPACE, space_with(backbone={"name": "resnet34"},
                                            sampling={"strategy": "x"}))),
    c("search-space-nested-typo", *SEARCH, "--space", BAD_SPACE,
      words="schedule.epoch: unknown field; did you mean 'epochs'?",
      setup=yaml_file(BAD_SPACE, space_with(schedule={"epoch": 3}))),
    c("search-space-unknown-op", *SEARCH, "--space", BAD_SPACE, words="unknown op 'rga_x'",
      setup=yaml_file(BAD_SPACE, space_with(ops=["identity", "rga_x"]))),
    c("search-space-bad-op-param", *SEARCH, "--space", BAD_SPACE, words="ops[1].params.reduction",
      setup=yaml_file(BAD_SPACE, space_with(ops=["identity", {"name": "se",
                                                              "params": {"reduction": 0}}]))),
    c("search-space-one-op", *SEARCH, "--space", BAD_SPACE, words="at least 2",
      setup=yaml_file(BAD_SPACE, space_with(ops=["identity"]))),
    c("search-space-input-63", *SEARCH, "--space", BAD_SPACE, words="63x32 is not divisible",
      setup=yaml_file(BAD_SPACE, space_with(input={"height": 63, "width": 32}))),
    c("search-space-tiny-input", *SEARCH, "--space", BAD_SPACE, words="input.height",
      setup=yaml_file(BAD_SPACE, space_with(input={"height": 8, "width": 32}))),
    c("search-space-bad-backbone", *SEARCH, "--space", BAD_SPACE, words="backbone.name",
      setup=yaml_file(BAD_SPACE, space_with(backbone={"name": "vgg16"}))),
    c("search-space-bad-position", *SEARCH, "--space", BAD_SPACE, words="cells.positions[0]",
      setup=yaml_file(BAD_SPACE, space_with(cells={"positions": ["layer5"]}))),
    c("search-space-missing-weights-file", *SEARCH, "--space", BAD_SPACE, "--data", "synthreid",
      "--root", "{data}", words="missing.pth",
      setup=yaml_file(BAD_SPACE, space_with(backbone={"name": "resnet18", "last_stride": 1,
                                                      "weights": "missing.pth"}))),
    c("search-space-missing-latency-table", *SEARCH, "--space", BAD_SPACE, "--data", "synthreid",
      "--root", "{data}", words="nope.json", setup=yaml_file(BAD_SPACE, tiny_space(
          cost={"form": "additive", "metric": "latency", "target": 1.0,
                "latency": {"table": "nope.json"}}))),
    c("search-set-unknown-field", *SEARCH, "--space", "{space}", "--set", "schedule.epoks=3",
      words="schedule.epoks"),
    c("search-set-bad-value", *SEARCH, "--space", "{space}", "--set", "schedule.epochs=many",
      words="schedule.epochs"),
    c("search-set-no-equals", *SEARCH, "--space", "{space}", "--set", "schedule.epochs",
      words="KEY=VALUE"),
    c("search-set-bad-yaml", *SEARCH, "--space", "{space}", "--set", "ops=[a, b",
      words="ops"),
    c("search-epochs-zero", *SEARCH, "--epochs", "0", words="0 is not in the range x>=1"),
    c("search-epochs-within-warmup", *SEARCH, "--space", "{space}", "--epochs", "1",
      "--set", "schedule.warmup_epochs=1", words="no architecture epoch"),
    c("search-seed-not-a-number", *SEARCH, "--seed", "x", words="'x' is not a valid integer"),
    c("search-threads-zero", *SEARCH, "--threads", "0", words="0 is not in the range x>=1"),
    c("search-workers-negative", *SEARCH, "--workers", "-1", words="-1 is not in the range x>=0"),
    c("search-checkpoint-every-negative", *SEARCH, "--checkpoint-every", "-2",
      words="-2 is not in the range x>=0"),
    c("search-device-tpu", *SEARCH, "--device", "tpu", words="'tpu' is not one of"),
    c("search-unknown-dataset", *SEARCH, "--data", "market", words="'market' is not one of"),
    c("search-no-root", *SEARCH, "--space", "{space}", "--data", "market1501",
      words="--root"),
    c("search-missing-root", *SEARCH, "--space", "{space}", "--data", "market1501", "--root",
      "nowhere", words="nowhere"),
    c("search-too-few-identities", *SEARCH, "--space", "{space}", "--data", "market1501",
      "--root", "mk", words="identities", setup=market_with(lambda root: None)),
    c("search-batch-p-too-large", *SEARCH, "--space", "{space}", "--data", "synthreid",
      "--root", "{data}", "--set", "schedule.batch.p=40", words="identities"),
    c("search-unreadable-image-with-workers", *SEARCH, "--space", "{space}", "--data",
      "market1501", "--root", "zb", "--workers", "1", words="cannot read image",
      setup=lambda folder: _zero_byte_market(folder / "zb"), marks=(pytest.mark.slow,),
      after_setup=True),
    c("retrain-unreadable-image-with-workers", *RETRAIN, "--genotype", "{genotype}", "--data",
      "market1501", "--root", "zb", "--workers", "1", "--recipe", "bot", "--set", "batch.p=2",
      "--epochs", "1", "--set", "lr_schedule.warmup_epochs=0", words="cannot read image",
      setup=lambda folder: _zero_byte_market(folder / "zb"), after_setup=True,
      marks=(pytest.mark.slow,)),
    # -- search: the run folder
    c("search-out-is-a-file", *SEARCH, words="run", setup=write("run", "x")),
    c("search-out-foreign", *SEARCH, words="holds no search run", setup=write("run/a.txt", "x")),
    c("search-out-unfinished", *SEARCH, words="add --resume", setup=search_run_checkpoint("run")),
    c("search-resume-no-out", "search", "--resume", words="--resume needs --out"),
    c("search-resume-empty", *SEARCH, "--resume", words="no checkpoint",
      setup=lambda folder: (folder / "run").mkdir()),
    c("search-resume-absent", *SEARCH, "--resume", words="no checkpoint"),
    c("search-resume-garbage-checkpoint", *SEARCH, "--resume", words="last.pt",
      setup=write("run/checkpoints/last.pt", b"not a checkpoint")),
    c("search-resume-pickle", *SEARCH, "--resume", words="last.pt",
      setup=evil_pickle("run/checkpoints/last.pt")),
    c("search-resume-retrain-run", *SEARCH, "--resume", words="retrain",
      setup=retrain_run("run")),
    c("search-out-under-a-file", "search", "--out", "f.txt/run", "--space", "{space}",
      "--data", "synthreid", "--root", "{data}", words="f.txt", setup=write("f.txt", "x")),

    # -- latency-table
    c("latency-no-space", "latency-table", "--out", "t.json", words="Missing option '--space'"),
    c("latency-bad-space", "latency-table", "--space", "nope", "--out", "t.json",
      words="not a shipped search space"),
    c("latency-out-is-a-folder", "latency-table", "--space", "{space}", "--out", "tables",
      words="is a folder", setup=write("tables/keep.txt", "x")),
    c("latency-out-exists", "latency-table", "--space", "{space}", "--out", "t.json",
      words="add --overwrite", setup=write("t.json", "{}")),
    c("latency-out-under-a-file", "latency-table", "--space", "{space}", "--out", "f.txt/t.json",
      words="f.txt", setup=write("f.txt", "x")),
    c("latency-batch-zero", "latency-table", "--space", "{space}", "--out", "t.json", "--batch",
      "0", words="0 is not in the range x>=1"),
    c("latency-repeats-zero", "latency-table", "--space", "{space}", "--out", "t.json",
      "--repeats", "0", words="0 is not in the range x>=1"),
    c("latency-cuda", "latency-table", "--space", "{space}", "--out", "t.json", "--device",
      "cuda", words="CUDA"),

    # -- retrain: the genotype
    c("retrain-no-genotype", *RETRAIN, words="--genotype is required"),
    c("retrain-genotype-missing-file", *RETRAIN, "--genotype", "g.json",
      words="neither a genotype file"),
    c("retrain-genotype-unknown-name", *RETRAIN, "--genotype", "rga_x",
      words="reference names: baseline"),
    c("retrain-genotype-not-json", *RETRAIN, "--genotype", "g.json", words="not valid JSON",
      setup=write("g.json", "{cells: [")),
    c("retrain-genotype-empty", *RETRAIN, "--genotype", "g.json", words="not valid JSON",
      setup=write("g.json", "")),
    c("retrain-genotype-binary", *RETRAIN, "--genotype", "g.json", words="not a UTF-8",
      setup=write("g.json", b"\xff\xfe\x00\x01")),
    c("retrain-genotype-a-list", *RETRAIN, "--genotype", "g.json", words="expected a JSON object",
      setup=write("g.json", "[1, 2]")),
    c("retrain-genotype-other-schema", *RETRAIN, "--genotype", "g.json", words="schema is",
      setup=genotype_file("g.json", genotype_dict(schema="other/thing"))),
    c("retrain-genotype-future-version", *RETRAIN, "--genotype", "g.json", words="version 7",
      setup=genotype_file("g.json", genotype_dict(version=7))),
    c("retrain-genotype-unknown-op", *RETRAIN, "--genotype", "g.json", words="unknown op 'sse'",
      setup=genotype_file("g.json", genotype_dict(cells=[{"position": "layer4", "nodes": 1, "edges": [
          {"source": 0, "target": 1, "op": "sse", "params": {}}]}]))),
    c("retrain-genotype-cycle", *RETRAIN, "--genotype", "g.json", words="cells[0]",
      setup=genotype_file("g.json", genotype_dict(cells=[{"position": "layer4", "nodes": 1, "edges": [
          {"source": 1, "target": 1, "op": "se", "params": {}}]}]))),
    c("retrain-genotype-input-63", *RETRAIN, "--genotype", "g.json", words="63x32 is not divisible",
      setup=genotype_file("g.json", genotype_dict(input={"height": 63, "width": 32}))),
    c("retrain-genotype-bad-hash", *RETRAIN, "--genotype", "g.json", words="space.hash",
      setup=genotype_file("g.json", genotype_dict(space={"name": "x", "hash": "XYZ"}))),
    c("retrain-genotype-unknown-field", *RETRAIN, "--genotype", "g.json", words="colour",
      setup=genotype_file("g.json", genotype_dict(colour="red"))),
    c("retrain-genotype-folder-without-it", *RETRAIN, "--genotype", "empty",
      words="a folder without genotype.json", setup=write("empty/notes.txt", "x")),
    c("retrain-genotype-other-space", *RETRAIN, "--genotype", "srun", words="none of that space's",
      setup=lambda folder: _search_run_other_space(folder / "srun")),
    # -- retrain: the recipe
    c("retrain-recipe-unknown", *RETRAIN, "--genotype", "{genotype}", *TINY, "--recipe", "bott",
      words="bott"),
    c("retrain-recipe-malformed", *RETRAIN, "--genotype", "{genotype}", *TINY, "--recipe", "r.yaml",
      words="not valid YAML", setup=write("r.yaml", "epochs: [1\n")),
    c("retrain-recipe-python-tag", *RETRAIN, "--genotype", "{genotype}", *TINY, "--recipe", "r.yaml",
      words="r.yaml", setup=evil_yaml("r.yaml")),
    c("retrain-recipe-unknown-field", *RETRAIN, "--genotype", "{genotype}", *TINY, "--recipe", "r.yaml",
      words="epoks", setup=yaml_file("r.yaml", {"name": "r", "epoks": 3})),
    c("retrain-recipe-typo-field", *RETRAIN, "--genotype", "{genotype}", "--recipe", "r.yaml",
      words="r.yaml: optimiser: unknown field; did you mean 'optimizer'?",
      setup=yaml_file("r.yaml", {"name": "r", "optimiser": {"lr": 0.1}})),
    c("tune-recipe-typo-field", "tune", "{tune}", "--genotype", "{genotype}", "--recipe",
      "r.yaml", "--out", "study", words="did you mean 'epochs'?",
      setup=yaml_file("r.yaml", {"name": "r", "epoch": 3})),
    c("retrain-recipe-bad-value", *RETRAIN, "--genotype", "{genotype}", *TINY, "--recipe", "r.yaml",
      words="optimizer.lr", setup=yaml_file("r.yaml", {"name": "r", "optimizer": {"lr": -1}})),
    c("retrain-set-unknown", *RETRAIN, "--genotype", "{genotype}", *TINY, "--set", "loss.ribb=0.1",
      words="loss.ribb"),
    c("retrain-set-bad-value", *RETRAIN, "--genotype", "{genotype}", *TINY, "--set", "batch.k=1",
      words="batch.k"),
    c("retrain-set-warmup-too-long", *RETRAIN, "--genotype", "{genotype}", *TINY, "--recipe",
      "bot", "--epochs", "3", "--set", "lr_schedule.warmup_epochs=5", words="warmup_epochs"),
    c("retrain-epochs-zero", *RETRAIN, "--genotype", "{genotype}", "--epochs", "0",
      words="0 is not in the range x>=1"),
    c("retrain-batch-p-too-large", *RETRAIN, "--genotype", "{genotype}", "--data", "synthreid",
      "--root", "{data}", "--recipe", "bot", "--set", "batch.p=40", words="P=40"),
    c("retrain-no-root", *RETRAIN, "--genotype", "{genotype}", "--data", "dukemtmc",
      words="--root"),
    c("retrain-backbone-weights-missing", *RETRAIN, "--genotype", "{genotype}", *TINY,
      "--set", "batch.p=4", "--backbone-weights", "w.pth", words="w.pth"),
    c("retrain-backbone-weights-garbage", *RETRAIN, "--genotype", "{genotype}", *TINY,
      "--set", "batch.p=4", "--backbone-weights", "w.pth", words="w.pth",
      setup=write("w.pth", b"garbage")),
    c("retrain-backbone-weights-pickle", *RETRAIN, "--genotype", "{genotype}", *TINY,
      "--set", "batch.p=4", "--backbone-weights", "w.pth", words="w.pth",
      setup=evil_pickle("w.pth")),
    c("retrain-device-cuda", *RETRAIN, "--genotype", "{genotype}", "--device", "cuda",
      words="CUDA"),
    # -- retrain: the run folder
    c("retrain-out-is-a-file", *RETRAIN, "--genotype", "{genotype}", words="run",
      setup=write("run", "x")),
    c("retrain-out-foreign", *RETRAIN, "--genotype", "{genotype}", words="holds no retrain run",
      setup=write("run/a.txt", "x")),
    c("retrain-out-finished", *RETRAIN, "--genotype", "{genotype}", words="finished retrain",
      setup=retrain_run("run")),
    c("retrain-resume-no-out", "retrain", "--resume", words="--resume needs --out"),
    c("retrain-resume-empty", *RETRAIN, "--resume", words="run without --resume",
      setup=lambda folder: (folder / "run").mkdir()),
    c("retrain-resume-with-genotype", *RETRAIN, "--resume", "--genotype", "{genotype}",
      words="leave out --genotype", setup=steps(
          model_checkpoint("run/checkpoints/last.pt", lambda s: s.update(training={"config": {
              "reference": None, "data": {"name": "synthreid", "root": "x"}}})),
          write("run/config.yaml", "recipe: {}\n")), touches="run"),
    c("retrain-resume-no-training-state", *RETRAIN, "--resume", words="no training state",
      setup=steps(model_checkpoint("run/checkpoints/last.pt"), write("run/config.yaml", "x: 1\n")),
      touches="run"),
    c("retrain-resume-garbage", *RETRAIN, "--resume", words="last.pt",
      setup=steps(write("run/checkpoints/last.pt", b"garbage"), write("run/config.yaml", "x: 1\n")),
      touches="run"),
    c("retrain-resume-search-run", *RETRAIN, "--resume", words="search",
      setup=search_run_checkpoint("run"), touches="run"),
    c("retrain-out-search-run", *RETRAIN, "--genotype", "{genotype}", words="search",
      setup=search_run_checkpoint("run")),

    # -- evaluate
    c("evaluate-missing", "evaluate", "--checkpoint", "m.pt", words="m.pt"),
    c("evaluate-garbage", "evaluate", "--checkpoint", "m.pt", words="m.pt",
      setup=write("m.pt", b"garbage")),
    c("evaluate-empty-file", "evaluate", "--checkpoint", "m.pt", words="m.pt",
      setup=write("m.pt", b"")),
    c("evaluate-pickle", "evaluate", "--checkpoint", "m.pt", words="m.pt",
      setup=evil_pickle("m.pt")),
    c("evaluate-foreign-kind", "evaluate", "--checkpoint", "m.pt",
      words="not a nas-reid model checkpoint",
      setup=lambda folder: torch.save({"kind": "other", "version": 1}, folder / "m.pt")),
    c("evaluate-a-list", "evaluate", "--checkpoint", "m.pt", words="not a nas-reid model",
      setup=lambda folder: torch.save([1, 2], folder / "m.pt")),
    c("evaluate-future-version", "evaluate", "--checkpoint", "m.pt", words="version 9",
      setup=model_checkpoint("m.pt", lambda s: s.update(version=9))),
    c("evaluate-search-checkpoint", "evaluate", "--checkpoint", "m.pt",
      words="written by a search run", setup=lambda folder: torch.save(
          {"space_hash": "0" * 16}, folder / "m.pt")),
    c("evaluate-folder-without-checkpoint", "evaluate", "--checkpoint", "run",
      words="a folder without", setup=write("run/a.txt", "x")),
    c("evaluate-invalid-genotype", "evaluate", "--checkpoint", "m.pt", words="genotype is invalid",
      setup=model_checkpoint("m.pt", lambda s: s.update(genotype="{}"))),
    c("evaluate-weights-misfit", "evaluate", "--checkpoint", "m.pt",
      words="do not fit its genotype (missing: cells.layer4",
      setup=model_checkpoint("m.pt", lambda s: s.update(model={
          k: v for k, v in s["model"].items() if not k.startswith("cells.")}))),
    c("evaluate-model-not-tensors", "evaluate", "--checkpoint", "m.pt",
      words="not a dict of tensors", setup=model_checkpoint("m.pt", lambda s: s.update(model=[1]))),
    c("evaluate-dataset-gone", "evaluate", "--checkpoint", "{ckpt}", words="nowhere"),
    c("evaluate-no-root", "evaluate", "--checkpoint", "{ckpt}", "--data", "market1501",
      words="--root is required for --data market1501"),
    c("evaluate-ranked-too-many", "evaluate", "--checkpoint", "{ckpt}", "--ranked", "100",
      words="100 is not in the range 0<=x<=64"),
    c("evaluate-cuda", "evaluate", "--checkpoint", "{ckpt}", "--device", "cuda", words="CUDA"),

    # -- export
    c("export-bad-format", "export", "--checkpoint", "{ckpt}", "--format", "tflite",
      words="'tflite' is not one of"),
    c("export-missing-checkpoint", "export", "--checkpoint", "m.pt", "--format", "torchscript",
      words="m.pt"),
    c("export-garbage", "export", "--checkpoint", "m.pt", "--format", "torchscript",
      words="m.pt", setup=write("m.pt", b"garbage")),
    c("export-out-exists", "export", "--checkpoint", "{ckpt}", "--format", "torchscript",
      "--out", "m.ts", words="already exists; add --overwrite to replace it",
      setup=write("m.ts", "x")),
    c("export-onto-the-checkpoint", "export", "--checkpoint", "{ckpt}", "--format",
      "torchscript", "--out", "{ckpt}", "--overwrite", words="checkpoint itself"),
    c("export-out-under-a-file", "export", "--checkpoint", "{ckpt}", "--format", "torchscript",
      "--out", "f.txt/m.ts", words="f.txt", setup=write("f.txt", "x")),
    c("export-no-format", "export", "--checkpoint", "{ckpt}", words="Missing option '--format'"),

    # -- genotype show / plot / diff / notebooks
    c("show-nothing", "genotype", "show", "nope", words="neither a genotype file"),
    c("show-not-json", "genotype", "show", "g.json", words="not valid JSON",
      setup=write("g.json", "{")),
    c("show-empty-run-folder", "genotype", "show", "run", words="no genotype.json",
      setup=write("run/metrics.jsonl", "")),
    c("show-bad-history", "genotype", "show", "run", words="genotype_history.jsonl",
      setup=write("run/genotype_history.jsonl", "{not json}\n")),
    c("show-missing-argument", "genotype", "show", words="Missing argument"),
    c("plot-bad-format", "genotype", "plot", "{genotype}", "--out", "pics", "--format", "gif",
      words="'gif' is not one of"),
    c("plot-out-is-a-file", "genotype", "plot", "{genotype}", "--out", "f.txt", words="f.txt",
      setup=write("f.txt", "x")),
    c("plot-bad-genotype", "genotype", "plot", "g.json", "--out", "pics", words="schema is",
      setup=genotype_file("g.json", genotype_dict(schema="x"))),
    c("diff-one-argument", "genotype", "diff", "{genotype}", words="Missing argument 'B'"),
    c("diff-bad-second", "genotype", "diff", "{genotype}", "rga_z", words="rga_z"),
    c("diff-out-is-a-file", "genotype", "diff", "{genotype}", "{genotype}", "--out", "f.txt",
      words="f.txt", setup=write("f.txt", "x")),
    c("notebooks-missing-notebook", "genotype", "notebooks", "{genotype}", "--out", "nb",
      "--notebook", "none.ipynb", words="none.ipynb"),
    c("notebooks-timeout-zero", "genotype", "notebooks", "--out", "nb", "--timeout", "0",
      words="0 is not in the range x>=1"),

    # -- tune: the tune space
    c("tune-no-target", "tune", "--out", "study", words="give --genotype"),
    c("tune-space-missing", "tune", "nope.yaml", "--genotype", "{genotype}", "--out", "study",
      words="nope.yaml"),
    c("tune-space-unknown-name", "tune", "retrain_smal", "--genotype", "{genotype}", "--out",
      "study", words="not a shipped tune space"),
    c("tune-space-malformed", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="not valid YAML", setup=write("t.yaml", "params: {a: [1\n")),
    c("tune-space-python-tag", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="t.yaml", setup=evil_yaml("t.yaml")),
    c("tune-space-unknown-param", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="optimiser.lr", setup=yaml_file("t.yaml", tune_with(params={
          "optimiser.lr": {"type": "float", "low": 0.1, "high": 0.2}}))),
    c("tune-space-two-unknown-params", "tune", "t.yaml", "--genotype", "{genotype}", "--out",
      "study", words="2 problems: params.optimiser.lr", setup=yaml_file("t.yaml", tune_with(params={
          "optimiser.lr": {"type": "float", "low": 0.1, "high": 0.2},
          "los.rib": {"type": "float", "low": 0.1, "high": 0.2}}))),
    c("tune-space-param-typo-field", "tune", "t.yaml", "--genotype", "{genotype}", "--out",
      "study", words="did you mean 'log'?", setup=yaml_file("t.yaml", tune_with(params={
          "optimizer.lr": {"type": "float", "low": 0.1, "high": 0.2, "lg": True}}))),
    c("tune-space-low-above-high", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="low", setup=yaml_file("t.yaml", tune_with(params={
          "optimizer.lr": {"type": "float", "low": 0.2, "high": 0.1}}))),
    c("tune-space-log-of-zero", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="log", setup=yaml_file("t.yaml", tune_with(params={
          "optimizer.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}))),
    c("tune-space-bad-type", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="params.optimizer.lr", setup=yaml_file("t.yaml", tune_with(params={
          "optimizer.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}))),
    c("tune-space-empty-choices", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="choices", setup=yaml_file("t.yaml", tune_with(params={
          "loss.rib": {"type": "categorical", "choices": []}}))),
    c("tune-space-bad-metric", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="metric.name", setup=yaml_file("t.yaml", tune_with(metric={"name": "rank1"}))),
    c("tune-space-sets-eval-every", "tune", "t.yaml", "--genotype", "{genotype}", "--out",
      "study", words="eval.every", setup=yaml_file("t.yaml", tune_with(fixed={"eval.every": 0}))),
    c("tune-space-grace-too-long", *TUNE, "--backend", "optuna", words="grace_period",
      setup=yaml_file("tune.yaml", tune_with(early_stopping={"grace_period": 5}))),
    c("tune-space-bad-target", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="target", setup=yaml_file("t.yaml", tune_with(target="export"))),
    c("tune-space-typo-field", "tune", "t.yaml", "--genotype", "{genotype}", "--out", "study",
      words="fixd: unknown field; did you mean 'fixed'?",
      setup=yaml_file("t.yaml", {**tiny_tune_space(), "fixd": {}})),
    # -- tune: the target and the options
    c("tune-retrain-space-with-search-space", "tune", "{tune}", "--space", "{space}", "--out",
      "study", words="give the genotype every trial retrains"),
    c("tune-genotype-bad", "tune", "{tune}", "--genotype", "rga_x", "--out", "study",
      words="rga_x"),
    c("tune-search-space-bad", "tune", "search_small", "--space", "nope_space", "--out", "study",
      words="not a shipped search space"),
    c("tune-trials-zero", *OPTUNA, "--trials", "0", words="0 is not in the range x>=1"),
    c("tune-early-stopping-bad", *OPTUNA, "--early-stopping", "hyperband",
      words="'hyperband' is not one of"),
    c("tune-optuna-with-address", *OPTUNA, "--address", "auto", words="--address is for --backend ray"),
    c("tune-optuna-with-storage-path", *OPTUNA, "--storage-path", "sp",
      words="--storage-path is for --backend ray"),
    c("tune-ray-cuda", *TUNE, "--device", "cuda", words="--gpus-per-trial"),
    c("tune-cpus-zero", *TUNE, "--cpus-per-trial", "0", words="0.0 is not in the range x>0"),
    c("tune-max-concurrent-zero", *TUNE, "--max-concurrent", "0", words="0 is not in the range"),
    c("tune-set-is-not-an-option", *OPTUNA, "--set", "x", words="No such option '--set'"),
    c("tune-data-no-root", "tune", "{tune}", "--genotype", "{genotype}", "--out", "study",
      "--data", "msmt17", words="--root"),
    c("tune-too-few-identities", "tune", "{tune}", "--genotype", "{genotype}", "--out", "study",
      "--data", "market1501", "--root", "mk", "--backend", "optuna", words="identities",
      setup=market_with(lambda root: None)),
    # -- tune: storage URLs
    c("tune-storage-not-a-url", *OPTUNA, "--storage", "not a url", words="does not open"),
    c("tune-storage-unknown-scheme", *OPTUNA, "--storage", "nonsense://", words="does not open"),
    c("tune-storage-missing-folder", *OPTUNA, "--storage", "sqlite:///missing/dir/x.db",
      words="does not open"),
    c("tune-storage-no-driver", *OPTUNA, "--storage", "mysql://user@localhost/db",
      words="does not open"),
    c("tune-storage-sqlite-on-a-folder", *OPTUNA, "--storage", "sqlite:///adir",
      words="does not open", setup=write("adir/keep.txt", "x")),
    c("tune-storage-not-a-database", *OPTUNA, "--storage", "sqlite:///junk.db",
      words="does not open", setup=write("junk.db", "this is not sqlite")),
    c("tune-storage-study-exists", *OPTUNA, "--storage", "sqlite:///shared.db",
      words="already exists", setup=lambda folder: _existing_study(folder / "shared.db"),
      touches="shared.db"),
    c("tune-ray-address-bad", *TUNE, "--address", "not an address", words="--address",
      marks=(pytest.mark.slow,)),
    c("tune-ray-address-unreachable", *TUNE, "--address", "127.0.0.1:1", words="no Ray cluster",
      marks=(pytest.mark.slow,)),
    c("tune-ray-client-without-storage", *TUNE, "--address", "ray://198.51.100.7:10001",
      words="--storage", marks=(pytest.mark.slow,)),
    # -- tune: the study folder
    c("tune-out-is-a-file", *OPTUNA, words="not a folder", setup=write("study", "x")),
    c("tune-out-foreign", *OPTUNA, words="holds no tuning run", setup=write("study/a.txt", "x")),
    c("tune-out-under-a-file", "tune", "{tune}", "--genotype", "{genotype}", "--out", "afile/study",
      "--data", "synthreid", "--root", "{data}", "--recipe", "bot", "--backend", "optuna",
      words="afile is not a folder", setup=write("afile", "x")),
    c("tune-out-holds-a-run", *OPTUNA, words="add --resume", setup=tune_run("study")),
    c("tune-resume-no-out", "tune", "--resume", words="--resume needs --out"),
    c("tune-resume-nothing", "tune", "--resume", "--out", "study", words="holds no tuning run"),
    c("tune-resume-garbage-record", "tune", "--resume", "--out", "study",
      words="not the record of a tuning run", setup=write("study/tune.yaml", "- 1\n")),
    c("tune-resume-malformed-record", "tune", "--resume", "--out", "study", words="tune.yaml",
      setup=write("study/tune.yaml", "backend: [\n")),
    c("tune-resume-record-missing-keys", "tune", "--resume", "--out", "study", words="tune.yaml",
      setup=write("study/tune.yaml", "backend: optuna\n")),
    c("tune-resume-python-tag", "tune", "--resume", "--out", "study", words="tune.yaml",
      setup=evil_yaml("study/tune.yaml")),
    c("tune-resume-dataset-gone", "tune", "--resume", "--out", "study", words="nowhere",
      setup=tune_run("study"), touches="study"),
    c("tune-resume-other-seed", "tune", "--resume", "--out", "study", "--root", "{data}",
      "--seed", "3", words="seed (0 -> 3)", setup=tune_run("study"), touches="study"),
]


# ------------------------------------------------------------------------------ set-up helpers


def _modified_synthreid(root: Path) -> None:
    from nas_reid.data.synthreid import SynthConfig, generate_synthreid

    generate_synthreid(root, SynthConfig(ids=4, cameras=2, images_per_id=4, height=32, width=16),
                       workers=1, progress=False)
    write_image(root / "query" / market_name(1, 1, 999))


def _zero_byte_market(root: Path) -> None:
    """A Market-1501 layout of 8 identities (4 images each, 2 cameras) whose first training
    image of each identity is a zero-byte file (issue 18's repro)."""
    from tests.fake_datasets import build_market_layout

    train = [(pid, cam) for pid in range(1, 9) for cam in (1, 2, 1, 2)]
    build_market_layout(root, train, [(20, 1)], [(20, 2)])
    for pid in range(1, 9):
        (root / "bounding_box_train" / market_name(pid, 1, 4 * (pid - 1))).write_bytes(b"")


def _search_run_other_space(folder: Path) -> None:
    from nas_reid.space import load_space

    folder.mkdir(parents=True)
    space = load_space(tiny_space())
    other = load_space({**tiny_space(), "ops": ["identity", {"name": "se", "params": {"reduction": 4}}]})
    (folder / "config.yaml").write_text(yaml.safe_dump({"space": space.resolved()}))
    data = tiny_genotype(ops=(("layer4", "se", {"reduction": 4}),)).to_dict()
    data["space"] = {"name": "tiny", "hash": other.canonical_hash()}
    (folder / "genotype.json").write_text(json.dumps(data))


def _existing_study(path: Path) -> None:
    import optuna

    optuna.create_study(study_name="tiny_tune", storage=f"sqlite:///{path}", direction="maximize")


FIXTURES: dict[str, Callable[[Path], Path]] = {
    "genotype": lambda folder: tiny_genotype().save(folder / "fixture-genotype.json"),
    "space": lambda folder: _dump(folder / "fixture-space.yaml", tiny_space()),
    "tune": lambda folder: _dump(folder / "tune.yaml", tiny_tune_space()),
    "ckpt": lambda folder: (model_checkpoint("fixture.pt")(folder), folder / "fixture.pt")[1],
}


def _dump(path: Path, data) -> Path:
    if not path.exists():
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _snapshot(*folders: Path) -> dict[str, tuple]:
    """Every file and folder under ``folders``: kind, size and modification time."""
    seen = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            if path.is_symlink() or not path.exists():
                continue
            st = path.stat()
            seen[str(path)] = ("dir" if path.is_dir() else st.st_size,
                               None if path.is_dir() else st.st_mtime_ns)
    return seen


# ------------------------------------------------------------------------------ the test


def _params():
    for case in CASES:
        yield pytest.param(case, id=case.id, marks=case.marks)


def test_the_suite_holds_enough_distinct_inputs():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len({(case.argv, case.setup) for case in CASES}) == len(CASES)
    assert len(CASES) >= 120
    commands = {case.argv[0] for case in CASES}
    assert commands >= {"data", "search", "latency-table", "retrain", "evaluate", "export",
                        "genotype", "tune"}


@pytest.mark.parametrize("case", list(_params()))
def test_a_bad_input_fails_well(case, tmp_path, data_root, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("NAS_REID_CACHE", str(cache))
    monkeypatch.chdir(folder)
    values = {"data": str(data_root)}
    for name, make in FIXTURES.items():
        if any(f"{{{name}}}" in arg for arg in case.argv):
            values[name] = str(make(folder))
    if case.setup is not None:
        case.setup(folder)
    argv = [arg.format(**values) for arg in case.argv]
    before = _snapshot(folder, cache)

    result = CliRunner().invoke(main, argv)

    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail(f"{argv}: raised {''.join(traceback.format_exception(result.exception))}")
    output = result.output
    lines = output.strip().splitlines()
    if case.after_setup:
        lines = [line for line in lines if not line.strip().startswith(SETUP_LINES)]
    assert result.exit_code == 2, (argv, output)
    assert len(lines) == 1 and lines[0].startswith("Error: "), (argv, output)
    assert case.words in lines[0], (argv, output)
    assert "Traceback" not in output
    after = _snapshot(folder, cache)
    if case.touches is not None:
        inside = str(folder / case.touches)
        before = {k: v for k, v in before.items() if not k.startswith(inside)}
        after = {k: v for k, v in after.items() if not k.startswith(inside)}
    assert after == before, (argv, sorted(set(after) ^ set(before)))
    assert not (folder / "pwned").exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv, words", [
    (["search", "--epoch", "3"], "No such option '--epoch'. Did you mean '--epochs'?"),
    (["search", "--space", "bad.yaml", "--out", "run"], "sampeling: unknown field"),
    (["tune", "t.yaml", "--genotype", "g.json", "--backend", "optuna", "--recipe", "bot",
      "--out", "s", "--root", "{data}", "--storage", "sqlite:///missing/x.db"], "does not open"),
])
def test_a_real_terminal_gets_one_line_on_stderr(tmp_path, data_root, argv, words):
    """The console script in its own process: what the user sees on stderr (warnings and log
    lines included) is the one error line, stdout is empty."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("nas-reid")
    if not script.is_file():
        pytest.skip("the nas-reid console script is not installed beside this Python")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**tiny_space(), "sampeling": {}}))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tiny_tune_space()))
    tiny_genotype().save(tmp_path / "g.json")
    argv = [arg.format(data=data_root) for arg in argv]
    done = subprocess.run([str(script), *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "NAS_REID_CACHE": str(tmp_path / "cache")},
                          timeout=300)
    assert done.returncode == 2 and done.stdout == "", done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "g.json", "t.yaml"]


def test_the_commands_know_the_top_level_fields_of_their_yaml_files():
    from nas_reid.cli import TOP_FIELDS
    from nas_reid.hpo.space import TuneSpace
    from nas_reid.space.config import SearchSpace
    from nas_reid.train.recipe import Recipe

    for what, model in (("search space", SearchSpace), ("tune space", TuneSpace),
                        ("recipe", Recipe)):
        assert TOP_FIELDS[what] == tuple(model.model_fields), what


@pytest.mark.parametrize("argv", [
    ["search", "--space", "bad.yaml", "--out", "run"],
    ["latency-table", "--space", "bad.yaml", "--out", "t.json"],
    ["tune", "--space", "bad.yaml", "--out", "study"],
])
def test_a_misspelt_top_level_field_is_reported_before_the_heavy_imports(tmp_path, argv):
    """A typo in a space's top level (the commonest slip) costs no torch import (seconds)."""
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**tiny_space(), "sampeling": {}}))
    code = ("import sys; from click.testing import CliRunner; from nas_reid.cli import main; "
            f"r = CliRunner().invoke(main, {argv!r}); "
            "print(r.exit_code, 'torch' in sys.modules); print(r.output)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    status, output = done.stdout.split("\n", 1)
    assert status == "2 False", done
    assert output.strip() == ("Error: search space bad.yaml: sampeling: unknown field; did you "
                              "mean 'sampling'? (allowed: name, input, backbone, cells, ops, "
                              "sampling, schedule)")
