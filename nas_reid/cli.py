"""The ``nas-reid`` command line: a thin shell over the library's public functions.

Every :class:`~nas_reid.errors.UserError` raised below a command becomes one line on stderr
(``Error: ...``) and exit code 2, with no traceback; so does each of click's own usage errors
(an unknown option, a value out of range), with a pointer to the command's ``--help``.
Ctrl-C exits 130 after one line (an :class:`~nas_reid.errors.Interrupted`'s message: where the
command stopped and how to continue).
Heavy imports (torch, the generators) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from . import __version__
from .errors import Interrupted, UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

TOP_FIELDS = {
    "search space": ("name", "input", "backbone", "cells", "ops", "sampling", "schedule"),
    "tune space": ("name", "target", "metric", "params", "fixed", "retrain", "validation",
                   "early_stopping"),
    "recipe": ("name", "epochs", "batch", "augment", "backbone", "optimizer", "lr_schedule",
               "loss", "grad_clip", "eval", "precision", "deterministic", "seed"),
}
"""The top-level fields of the YAML files the commands read (tests hold them to the models)."""


class _UserFacingError(click.ClickException):
    exit_code = 2


def _early_typo(spec, what: str) -> None:
    """Raise UserError for a misspelt top-level field of the YAML file ``spec`` (a ``what`` of
    :data:`TOP_FIELDS`), worded as the full check words it, before the heavy imports that
    check needs; anything else (not a file, not YAML, other problems) is left to it."""
    if spec is None or not Path(spec).expanduser().is_file():
        return
    import yaml

    from .errors import unknown_field

    path = Path(spec).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return
    allowed = TOP_FIELDS[what]
    problems = [f"{key}: {unknown_field(key, allowed)}" for key in
                (data if isinstance(data, dict) else ()) if key not in allowed]
    if problems:
        many = f"{len(problems)} problems: " if len(problems) > 1 else ""
        raise UserError(f"{what} {path}: {many}{'; '.join(problems)}")


def _one_line(exc: click.UsageError) -> click.ClickException:
    """click's usage error (usage, a hint, the message: four lines) as one line; a group
    called without a command still prints its help."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    path = exc.ctx.command_path if exc.ctx is not None else "nas-reid"
    message = " ".join(exc.format_message().split())  # a Choice's list comes on new lines
    return _UserFacingError(f"{message} (see {path} --help)")


class _Group(click.Group):
    """A click group whose commands report UserError and click's usage errors as one clean
    exit-2 line."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise _UserFacingError(str(exc)) from None
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except KeyboardInterrupt as exc:  # Ctrl-C: what the command kept and how to go on
            click.echo(str(exc) if isinstance(exc, Interrupted) else "interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="nas-reid")
def main() -> None:
    """Neural architecture search for person re-identification.

    The flow: `nas-reid search` finds attention cells and writes a genotype; `nas-reid retrain
    --genotype ...` trains its network (or one of the papers' reference models) and evaluates it;
    `nas-reid evaluate` ranks a dataset with a trained model; `nas-reid export` writes ONNX or
    TorchScript; `nas-reid latency-table` measures the per-block latencies a latency-aware
    search prices its networks with. Without --data, search and retrain use the built-in
    synthetic benchmark (no download).
    """


# --------------------------------------------------------------------------------------- data
DATASET_NAMES = ["market1501", "dukemtmc", "msmt17", "cuhk03", "occluded_duke", "synthreid"]


def _dataset_options(fn):
    fn = click.option(
        "--msmt17-combine-val", is_flag=True,
        help="MSMT17: append list_val.txt to the training split (not the standard protocol).",
    )(fn)
    fn = click.option(
        "--cuhk03-variant", type=click.Choice(["labeled", "detected"]), default="labeled",
        show_default=True, help="CUHK03: which bounding boxes to read.",
    )(fn)
    fn = click.option(
        "--root", type=click.Path(path_type=Path), default=None,
        help="Dataset folder, or a folder that holds it under its usual name. "
        "Optional for synthreid (default: the cached built-in benchmark).",
    )(fn)
    fn = click.option(  # the old name, hidden: --data as on search / retrain / evaluate / tune
        "--dataset", "dataset_alias", type=click.Choice(DATASET_NAMES), default=None,
        hidden=True,
    )(fn)
    fn = click.option(
        "--data", "dataset", type=click.Choice(DATASET_NAMES), default=None,
        help="Which dataset layout to read (required).",
    )(fn)
    return fn


def _dataset_name(dataset: str | None, alias: str | None) -> str:
    """``--data``, or its old name ``--dataset``."""
    if dataset is not None and alias is not None and dataset != alias:
        raise UserError(f"--data {dataset} and --dataset {alias} disagree; give --data only")
    if dataset is None and alias is None:
        raise UserError("Missing option '--data' (the dataset layout to read: "
                        f"{', '.join(DATASET_NAMES)})")
    return dataset or alias


def _load(dataset: str, root: Path | None, cuhk03_variant: str, msmt17_combine_val: bool):
    from .data import load_dataset

    options = {}
    if dataset == "cuhk03":
        options["variant"] = cuhk03_variant
    if dataset == "msmt17" and msmt17_combine_val:
        options["combine_val"] = True
    if root is None and dataset != "synthreid":
        raise UserError(f"--root is required for --data {dataset}")
    return load_dataset(dataset, root, **options), options


@main.group(cls=_Group, context_settings=CONTEXT)
def data() -> None:
    """Read, check and generate re-ID datasets."""


@data.command("check", context_settings=CONTEXT)
@_dataset_options
def data_check(dataset, dataset_alias, root, cuhk03_variant, msmt17_combine_val) -> None:
    """Print ids / images / cameras per split and compare them with the official counts."""
    from .data.check import check_dataset, format_check
    from .data.registry import official_counts

    dataset = _dataset_name(dataset, dataset_alias)
    ds, options = _load(dataset, root, cuhk03_variant, msmt17_combine_val)
    result = check_dataset(ds, official=official_counts(dataset, **options))
    click.echo(format_check(result))


@data.command("synth", context_settings=CONTEXT)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder to write (Market-1501 layout). Must not exist or be empty.")
@click.option("--ids", type=int, default=None, help="Number of identities (half train, half test).")
@click.option("--cameras", type=int, default=None, help="Number of cameras (2-9).")
@click.option("--images-per-id", type=int, default=None, help="Images rendered per identity.")
@click.option("--size", default=None, metavar="HxW", help="Image size, e.g. 128x64.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same bytes).")
@click.option("--workers", type=int, default=None, help="Worker processes (default: all cores).")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder once the new one is complete.")
def data_synth(out, ids, cameras, images_per_id, size, seed, workers, overwrite) -> None:
    """Generate the synthetic benchmark (synthreid) into a folder, deterministically."""
    from dataclasses import replace

    from .data.synthreid import SynthConfig, generate_synthreid

    changes = {k: v for k, v in
               dict(ids=ids, cameras=cameras, images_per_id=images_per_id, seed=seed).items()
               if v is not None}
    if size is not None:
        changes["height"], changes["width"] = _parse_size(size)
    config = replace(SynthConfig(), **changes)
    path = generate_synthreid(out, config, overwrite=overwrite, workers=workers,
                              progress=sys.stderr.isatty())
    click.echo(f"wrote synthreid benchmark to {path}")


@data.command("sheet", context_settings=CONTEXT)
@_dataset_options
@click.option("--split", type=click.Choice(["train", "query", "gallery"]), default="train",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="PNG file to write (replaced if it exists).")
@click.option("--ids", "num_ids", type=click.IntRange(min=1), default=8, show_default=True,
              help="Identities (rows).")
@click.option("--per-id", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per identity.")
def data_sheet(dataset, dataset_alias, root, cuhk03_variant, msmt17_combine_val, split, out,
               num_ids, per_id) -> None:
    """Write a contact sheet PNG: one row of images per identity, labelled with pid and camera."""
    from .viz.contact_sheet import make_contact_sheet

    dataset = _dataset_name(dataset, dataset_alias)
    _writable_file(out, overwrite=True, example="sheet.png")
    ds, _ = _load(dataset, root, cuhk03_variant, msmt17_combine_val)
    path = make_contact_sheet(ds.split(split), out, ids=num_ids, per_id=per_id,
                              title=f"{ds.name} / {split}")
    click.echo(f"wrote {path}")


# ------------------------------------------------------------------------------------- search
SEARCH_DATASETS = ["synthreid", "market1501", "dukemtmc", "msmt17", "cuhk03", "occluded_duke"]


DEVICE = click.Choice(["auto", "cpu", "cuda"])
AUTO_HELP = "auto: cuda when torch sees a GPU, else cpu."
WORKERS_HELP = "Default: 0 on cpu, on cuda min(8, the cores per process)."


def _auto_device(value: str) -> str:
    """``--device auto`` resolved: cuda when torch sees a GPU, else cpu. Each command calls it
    after its cheap checks (a misspelt YAML field is reported without importing torch)."""
    if value != "auto":
        return value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_workers(workers: int | None, device: str) -> int:
    """``--workers``: as given; else 0 on cpu (a loader process would take the cores the
    training threads use), on cuda min(8, the cores of this machine per torchrun process), so
    that image decoding keeps up with the GPU."""
    if workers is not None:
        return workers
    if device != "cuda":
        return 0
    import os

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(8, max(1, (os.cpu_count() or 1) // local))


def _default_threads(device: str) -> int | None:
    """torch's own default (the physical cores, or OMP_NUM_THREADS), shared by the torchrun
    processes of this machine (at least 1 each); on CUDA torch's own default. (Until
    2026-12-04 half the logical cores: the no-argument search took 12.4 min on 1 thread of an
    idle 2-core machine against 6.8 min on 2, docs/results.md.)"""
    if device != "cpu":
        return None
    import os

    import torch

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, torch.get_num_threads() // local)


def _set_threads(threads: int | None, device: str) -> None:
    """``torch.set_num_threads``: ``--threads``, else :func:`_default_threads`."""
    import torch

    threads = threads or _default_threads(device)
    if threads:
        torch.set_num_threads(threads)


@main.command("search", context_settings=CONTEXT)
@click.option("--space", default=None, metavar="YAML|NAME",
              help="Search-space YAML, or a shipped space's name: cpu_small, rga_dcs_ca; "
              "mobile_cpu and mobile_dnas also search the backbone. Default: cpu_small (with "
              "--resume: the run's own).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field of the space, e.g. --set schedule.cost.form=additive --set "
              "schedule.cost.target=3 (repeatable; values read as YAML; validated).")
@click.option("--data", type=click.Choice(SEARCH_DATASETS), default=None,
              help="Dataset whose training identities are searched on. Default: synthreid, the "
              "built-in benchmark (with --resume: the run's own).")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (required but for synthreid).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override the space's schedule.epochs. With --resume: the run's new total, "
              "at least the epochs it began (the schedules follow it from there on).")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help=f"{AUTO_HELP} cuda: one GPU per process (torchrun --nproc_per_node N for "
              "several).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder. Default: runs/search-<timestamp> under the current folder.")
@click.option("--resume", is_flag=True,
              help="Continue the search in --out from its last checkpoint.")
@click.option("--seed", type=int, default=None, help="Override the space's schedule.seed.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads. Default on cpu: torch's default, the physical cores (on a "
              "busy machine fewer threads can be faster). Results are reproducible for a given "
              "thread count.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help=f"Image-loading worker processes (results do not depend on it). {WORKERS_HELP}")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also checkpoint every N steps (0: once per epoch).")
def search_cmd(space, overrides, data, root, epochs, device, out, resume, seed, threads, workers,
               checkpoint_every) -> None:
    """Search attention cells, and a mobile backbone's widths, kernels, expansions and block
    skips when the space has one, and write a run folder with the genotype.

    The space's sampling.strategy says how: gumbel (GDAS) or softmax (DARTS) train the weights
    on one share of the training identities and the architecture on the other (held out);
    uniform (SPOS) trains single paths, then scores every sub-network on the held-out share;
    zero_cost trains nothing and scores every sub-network by its loss at initialisation. With
    no option it searches the small CPU space (zero_cost) on the built-in synthetic benchmark;
    --set sampling.strategy=gumbel runs GDAS there. Under torchrun it runs data-parallel (only
    rank 0 writes and prints). Ctrl-C checkpoints the step it is at and prints the command that
    resumes (exit 130).
    """
    import os

    _early_typo(space, "search space")
    from .search import search

    device = _auto_device(device)
    _set_threads(threads, device)
    result = search(space, data, root=root, out_dir=out, epochs=epochs, device=device,
                    resume=resume, seed=seed, overrides=list(overrides),
                    num_workers=_default_workers(workers, device),
                    checkpoint_every=checkpoint_every, progress=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    genotype = result.genotype
    click.echo(f"genotype: {result.genotype_path}")
    if genotype is not None:
        click.echo(f"  {genotype.summary()}")
    scored = result.metrics[-1].get("subnets") if result.metrics else None
    if result.decisions is not None and result.decisions.decisions:
        click.echo(f"  choices: {result.decisions.summary()}")
        for decision in result.decisions.unsettled:
            click.echo(f"    not settled: {decision.describe()}")
        if result.decisions.unsettled and result.decisions.resamples is not None:
            from .search.strategies import score_text

            what = score_text(scored or {}).too_close
            click.echo(f"    (the best sub-networks' {what} to separate: see "
                       f"{result.out_dir / 'subnets.csv'})")
        elif result.decisions.unsettled:
            click.echo("    (chosen by the last epoch's argmax; more epochs or a higher final "
                       "temperature, sampling.tau.end, may settle them)")
    best = result.best
    if scored:
        from .search.strategies import picked_line

        click.echo(f"  {picked_line(scored)}; run folder: {result.out_dir}")
    elif best.get("mAP") is not None:
        click.echo(f"  held-out mAP {100 * best['mAP']:.1f} / R1 {100 * best['R1']:.1f} "
                   f"(best, epoch {best['epoch']}); run folder: {result.out_dir}")
    else:
        click.echo(f"  run folder: {result.out_dir}")


# ------------------------------------------------------------------------------ pretrain
@main.command("pretrain", context_settings=CONTEXT)
@click.option("--backbone", type=click.Choice(["resnet18", "resnet50", "resnet_tiny"]),
              default="resnet18", show_default=True,
              help="resnet_tiny: for tests and smoke runs (docs/search.md).")
@click.option("--size", default="128x64", show_default=True, metavar="HxW",
              help="Input size: that of the spaces and genotypes that will use the weights.")
@click.option("--last-stride", type=click.Choice(["1", "2"]), default="1", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field of the pretrain_synthetic recipe (changes the cache key).")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help=AUTO_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads. Default on cpu: the physical cores (torch's default).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help=f"Image-loading worker processes (results do not depend on it). {WORKERS_HELP}")
def pretrain_cmd(backbone, size, last_stride, overrides, device, threads, workers) -> None:
    """Pretrain a backbone on the synthetic pretraining set, once per machine.

    The built-in benchmark's analogue of ImageNet weights: the baseline network trained on
    synthreid_pretrain (640 people disjoint from synthreid's, 8 cameras), cached under
    $NAS_REID_CACHE/pretrained (default ~/.cache/nas_reid). Spaces and recipes that say
    backbone.weights: synthetic use it, and train it on first use if this was not run; a cached
    result is printed without training. The file is a torchvision state_dict.
    """
    from .train.pretrain import find_pretrained, pretrain

    device = _auto_device(device)
    _set_threads(threads, device)
    h, w = _parse_size(size)
    cached = find_pretrained(backbone, (h, w), int(last_stride), overrides=list(overrides))
    result = cached or pretrain(backbone, (h, w), int(last_stride), overrides=list(overrides),
                                device=device, num_workers=_default_workers(workers, device),
                                progress=True,
                                log=lambda text: click.echo(text, err=True))
    held = result.info["heldout"]
    click.echo(f"{'already pretrained' if cached else 'pretrained'}: {result.path}")
    click.echo(f"  held-out (pretraining set's own query / gallery): mAP {100 * held['mAP']:.1f}, "
               f"R1 {100 * held['R1']:.1f}; {result.info['train_seconds'] / 60:.1f} min of training "
               f"on {result.info['device']} ({result.info['threads']} thread(s))")


# ------------------------------------------------------------------------------ latency-table
def _writable_file(out: Path, overwrite: bool, example: str = "latency.json") -> None:
    """Raise UserError unless ``out`` can be written as a new file (or replaced), before the
    work that produces it: a temporary file is created (and removed) where it will go."""
    from .fileio import check_writable

    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name (e.g. {out / example})")
    if out.exists() and not overwrite:
        raise UserError(f"--out {out} exists; add --overwrite to replace it")
    check_writable(out.expanduser().absolute().parent, f"--out {out}")


@main.command("latency-table", context_settings=CONTEXT)
@click.option("--space", required=True, metavar="YAML|NAME",
              help="Search-space YAML or a shipped name (cpu_small, mobile_cpu, mobile_dnas, "
              "rga_dcs_ca).")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help=f"{AUTO_HELP} Where to measure: the device the searched network will run on.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="JSON file to write (atomically).")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Images per forward. Default: the space's schedule.cost.latency.batch (1).")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed forwards per block. Default: the space's schedule.cost.latency."
              "warmup (10).")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Timed forwards per block (the entry is their median). Default: the space's "
              "schedule.cost.latency.repeats (30).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (CPU latencies depend on it). Default on cpu: half the "
              "cores, as nas-reid search uses.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def latency_table_cmd(space, device, out, batch, warmup, repeats, threads, overwrite) -> None:
    """Measure a latency lookup table of a search space on this machine (FBNet's LUT).

    Times every block a network of the space can hold (the stem, every inverted-residual
    configuration, the head, each candidate op at each width of its cell position, a fixed
    ResNet as one block), each alone on a random input of its shape in eval mode, and writes the
    median milliseconds with the device, torch version and settings. A search with
    schedule.cost.metric: latency and schedule.cost.latency.table: FILE prices its networks with
    it (the sum of their blocks') instead of measuring on the search's device, and the same seed
    then gives the same genotype. Prints the number of entries, the device, the time taken and
    the summed latency of the fastest and of the slowest network of the space.
    """
    import time

    _early_typo(space, "search space")
    from .search.cost import latency_bounds
    from .search.latency import measure_table, measurement_device
    from .space import load_space
    from .space.reference import search_space_path

    sspace = load_space(search_space_path(space))
    _writable_file(out, overwrite)
    device = _auto_device(device)
    dev = measurement_device(device)
    _set_threads(threads, device)
    cfg = sspace.schedule.cost.latency
    start = time.monotonic()
    table = measure_table(sspace, batch=batch or cfg.batch,
                          warmup=cfg.warmup if warmup is None else warmup,
                          repeats=repeats or cfg.repeats, device=dev, progress=sys.stderr.isatty())
    seconds = time.monotonic() - start
    fastest, slowest = latency_bounds(sspace, table)
    path = table.save(out)
    meta = table.meta
    click.echo(f"wrote {path}: {len(table.entries)} entries of search space {sspace.name!r}")
    click.echo(f"  device: {table.device}; batch {meta['batch']}, warmup {meta['warmup']}, "
               f"repeats {meta['repeats']}; measured in {seconds:.1f} s")
    click.echo(f"  network latency (sum of its blocks): fastest {fastest:.3f} ms, slowest "
               f"{slowest:.3f} ms")


# ------------------------------------------------------------------------------------ retrain
@main.command("retrain", context_settings=CONTEXT)
@click.option("--genotype", "genotype", default=None, metavar="JSON|RUN|NAME",
              help="A genotype.json, a search run folder, or a reference model: baseline, rga_s, "
              "rga_c, rga_sc, rib_dcs, rib_ca (required but with --resume).")
@click.option("--data", type=click.Choice(SEARCH_DATASETS), default=None,
              help="Dataset to train on. Default: synthreid, the built-in benchmark (with "
              "--resume: the run's own).")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (required but for synthreid).")
@click.option("--recipe", default=None, metavar="NAME|YAML",
              help="Training recipe: bot, synthetic, mobile, mobile_synthetic, or a YAML file. "
              "Default: synthetic on synthreid, bot otherwise; mobile_synthetic / mobile for a "
              "mobile (mobilenetv2) backbone.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field, e.g. --set loss.rib=0.1 --set batch.p=8 (repeatable).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override the recipe's epochs; its learning-rate warm-up and step milestones "
              "scale with them (said on stderr) unless --set gives them. With --resume: the "
              "run's new total, at least the epochs it began (the schedules follow it from there "
              "on).")
@click.option("--seed", type=int, default=None, help="Override the recipe's seed.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help=f"{AUTO_HELP} cuda: one GPU per process (torchrun --nproc_per_node N for "
              "several), bf16 "
              "and channels_last by default.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder. Default: runs/retrain-<timestamp> under the current folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--backbone-weights", type=click.Path(path_type=Path), default=None,
              metavar="FILE|synthetic|none",
              help="Backbone initialisation: a local torchvision state_dict file (e.g. ImageNet "
              "ResNet-50; nothing is downloaded), 'synthetic' (pretrained on the synthetic "
              "pretraining set, once per machine: nas-reid pretrain) or 'none' (random). "
              "Default: the recipe's backbone.weights (synthetic for the synthetic recipe, none "
              "for bot).")
@click.option("--rerank", is_flag=True, help="The final evaluation also reports re-ranking.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads. Default on cpu: the physical cores (torch's default).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help=f"Image-loading worker processes (results do not depend on it). {WORKERS_HELP}")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also checkpoint every N steps (0: once per epoch).")
def retrain_cmd(genotype, data, root, recipe, overrides, epochs, seed, device, out, resume,
                backbone_weights, rerank, threads, workers, checkpoint_every) -> None:
    """Train the network of a genotype and evaluate it.

    The backbone starts from the recipe's backbone.weights (the built-in benchmark's recipe:
    the synthetic pretraining; --backbone-weights FILE: an ImageNet state dict), the cells
    freshly initialised, as the papers train their attention networks.

    Builds the network from the genotype alone, trains it with the recipe on the training
    identities, evaluates on query / gallery every eval.every epochs, and writes a run folder
    (config.yaml, genotype.json, metrics.jsonl, TensorBoard events, checkpoints/last.pt and
    best.pt, results.json with the last model's evaluation). Ctrl-C checkpoints the step it is
    at and prints the command that resumes (exit 130).
    """
    import os

    _early_typo(recipe, "recipe")
    from .evaluation.evaluate import format_results
    from .train.loop import retrain

    device = _auto_device(device)
    _set_threads(threads, device)
    result = retrain(genotype, data, root=root, recipe=recipe, overrides=list(overrides),
                     out_dir=out, epochs=epochs, seed=seed, device=device, resume=resume,
                     backbone_weights=backbone_weights, rerank=rerank,
                     num_workers=_default_workers(workers, device),
                     checkpoint_every=checkpoint_every, progress=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    click.echo(f"run folder: {result.out_dir}  ({result.genotype.summary()}; "
               f"{result.num_parameters / 1e6:.2f} M parameters)")
    if result.results is not None:
        click.echo(format_results(result.results))
        best = result.best
        if best.get("mAP") is not None:
            click.echo(f"best evaluation: mAP {100 * best['mAP']:.1f} at epoch {best['epoch']} "
                       "(checkpoints/best.pt; chosen on the test split, so optimistic)")


# ----------------------------------------------------------------------------------- evaluate
@main.command("evaluate", context_settings=CONTEXT)
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="A model checkpoint (checkpoints/last.pt or best.pt of a retrain run), or a "
              "retrain run folder (its last.pt).")
@click.option("--data", type=click.Choice(SEARCH_DATASETS), default=None,
              help="Dataset whose query / gallery split is ranked. Default: the one the model "
              "was trained on (another one: a cross-domain evaluation).")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (default: the training data's, when --data is left out).")
@click.option("--cuhk03-variant", type=click.Choice(["labeled", "detected"]), default="labeled",
              show_default=True, help="CUHK03: which bounding boxes to read.")
@click.option("--rerank", is_flag=True, help="Also report k-reciprocal re-ranking (k1 20, k2 6, "
              "lambda 0.3).")
@click.option("--flip", is_flag=True, help="Average each image's feature with its mirror's.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for results.json and ranked_lists.png. Default: evaluation/<dataset>-"
              "<checkpoint> in the run folder.")
@click.option("--ranked", type=click.IntRange(min=0, max=64), default=8, show_default=True,
              help="Queries shown in ranked_lists.png (0: no picture).")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help=f"{AUTO_HELP} cuda: the features are computed under bf16 autocast (as in "
              "training).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads. Default on cpu: the physical cores (torch's default).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help=f"Image-loading worker processes. {WORKERS_HELP}")
def evaluate_cmd(checkpoint, data, root, cuhk03_variant, rerank, flip, out, ranked, device,
                 threads, workers) -> None:
    """Rank a dataset's query / gallery split with a trained model.

    Prints R1 / R5 / R10 / mAP / mINP (Market-1501 protocol, cosine distance on the BNNeck
    feature; with --rerank also after re-ranking) and writes results.json and a picture of
    some queries' top-10 gallery images (green: same identity, red: another).
    """
    import torch

    from .evaluation.evaluate import evaluate_model, format_results, ranked_lists, write_results
    from .engine.runtime import resolve_device
    from .train.checkpoint import load_model
    from .viz.ranked_list import plot_ranked_lists

    device = _auto_device(device)
    _set_threads(threads, device)
    dev = resolve_device(device, 0)
    loaded = load_model(checkpoint, dev)
    if data is None:  # the training dataset (its root too, unless --root says otherwise)
        saved = loaded.state.get("data") or {}
        data = saved.get("name")
        if root is None and saved.get("root"):
            root = Path(saved["root"])
    ds, _ = _load(data, root, cuhk03_variant, False)
    if out is None:
        run_dir = loaded.path.parent
        if run_dir.name == "checkpoints":
            run_dir = run_dir.parent
        out = run_dir / "evaluation" / f"{ds.name}-{loaded.path.stem}{'-flip' if flip else ''}"
    result = evaluate_model(loaded.model, ds, device=dev, flip=flip, rerank=rerank,
                            num_workers=_default_workers(workers, device),
                            autocast=torch.bfloat16 if dev.type == "cuda" else None)
    out.mkdir(parents=True, exist_ok=True)
    write_results(result, out / "results.json",
                  extra={"checkpoint": str(loaded.path), "genotype": loaded.genotype.summary(),
                         "epoch": loaded.state.get("epoch")})
    click.echo(format_results(result))
    click.echo(f"wrote {out / 'results.json'}")
    if ranked:
        picture = plot_ranked_lists(ranked_lists(result, max_queries=ranked), out / "ranked_lists.png",
                                    title=f"{ds.name}: {loaded.genotype.summary()}")
        click.echo(f"wrote {picture}")


# ------------------------------------------------------------------------------------- export
@main.command("export", context_settings=CONTEXT)
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="A model checkpoint (or a retrain run folder: its last.pt).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="File to write. Default: beside the checkpoint, <name>.onnx or "
              "<name>.torchscript.pt.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@click.option("--no-check", is_flag=True,
              help="Skip running the exported file against PyTorch.")
def export_cmd(checkpoint, fmt, out, overwrite, no_check) -> None:
    """Export a trained model for deployment: images (N, 3, H, W) -> features (N, D).

    The file maps normalised images at the genotype's input size to the retrieval feature
    (the BNNeck output); by default it is run once (onnxruntime / torch.jit) and its features
    compared with PyTorch's.
    """
    from .train.export import export_model

    result = export_model(checkpoint, fmt, out, check=not no_check, overwrite=overwrite)
    check = (f"; max |difference| to PyTorch {result.max_abs_diff:.2e}"
             if result.max_abs_diff is not None else "")
    click.echo(f"wrote {result.path} ({fmt}, input 3x{result.input_size[0]}x{result.input_size[1]}, "
               f"{result.feature_dim}-d features{check})")


# ----------------------------------------------------------------------------------- genotype
GENOTYPE_METAVAR = "FILE|RUN|NAME"
PICTURE_FORMATS = ["png", "svg", "pdf"]


def _formats_option(fn):
    return click.option(
        "--format", "formats", multiple=True, type=click.Choice(PICTURE_FORMATS),
        default=("png", "svg"), show_default=True,
        help="Picture format (repeatable): each picture is written once per format.")(fn)


@main.group("genotype", cls=_Group, context_settings=CONTEXT)
def genotype_group() -> None:
    """Look at genotypes: a text summary, pictures, a diff, the notebooks as HTML.

    Every command takes a genotype.json, a search or retrain run folder, or a reference model
    name (baseline, rga_s, rga_c, rga_sc, rib_dcs, rib_ca). What a genotype lacks (a reference
    has no probabilities, a retrain run no search history) is said, not an error.
    """


@genotype_group.command("show", context_settings=CONTEXT)
@click.argument("spec", metavar=GENOTYPE_METAVAR)
def genotype_show(spec) -> None:
    """Print a genotype: its backbone (a searched backbone stage by stage: width, kernel,
    expansion, kept blocks), its cells and edges, parameters and FLOPs of the backbone, each cell
    and the whole network, op counts, probabilities, provenance, which choices a search run had
    settled (unchanged over its last 3 architecture epochs, with a margin above twice its
    epoch-to-epoch movement), and the run's final figures."""
    from .viz.genotype_report import format_summary

    click.echo(format_summary(spec))


@genotype_group.command("plot", context_settings=CONTEXT)
@click.argument("spec", metavar=GENOTYPE_METAVAR)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder to write the pictures into (created; files of the same name are "
              "replaced).")
@_formats_option
def genotype_plot(spec, out, formats) -> None:
    """Draw a genotype or run: cells, architecture probabilities (final and over epochs), ops
    per epoch, cost per cell, a searched backbone (its choices, their probabilities and their
    evolution, the FLOPs per epoch), and a run's losses, evaluation, RIB and temperature curves.

    Writes one file per picture and format (cells.png, cells.svg, ...) and lists the pictures
    left out, with the reason (e.g. a reference genotype has no probabilities).
    """
    from .viz.genotype_figures import write_genotype_figures

    written, skipped = write_genotype_figures(spec, out, formats)
    for path in written:
        click.echo(f"wrote {path}")
    for stem, why in skipped.items():
        click.echo(f"skipped {stem}: {why}")


@genotype_group.command("diff", context_settings=CONTEXT)
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the side-by-side picture (diff.png, diff.svg) into this folder.")
@_formats_option
def genotype_diff(a, b, out, formats) -> None:
    """Compare genotype A with B, cell position by cell position.

    Prints the differences around the cells (search space, input size, backbone; a searched
    backbone stage by stage), the cells only in A or only in B, the edges added, removed or
    changed (op or parameters), and the change in parameters and FLOPs per cell, of the
    backbone and in total. A and B are each a FILE, RUN or NAME.
    """
    from .viz.genotype_diff import diff_genotypes, format_diff

    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    diff = diff_genotypes(a, b)
    click.echo(format_diff(diff))
    if out is not None:
        from .viz.figures import save_figure
        from .viz.genotype_plots import plot_genotype_diff

        out.mkdir(parents=True, exist_ok=True)
        for path in save_figure(plot_genotype_diff(diff), out / "diff", formats=formats):
            click.echo(f"wrote {path}")


@genotype_group.command("notebooks", context_settings=CONTEXT)
@click.argument("spec", metavar=GENOTYPE_METAVAR, required=False)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for each notebook's HTML page and executed .ipynb (created).")
@click.option("--compare", default=None, metavar=GENOTYPE_METAVAR,
              help="The genotype the visualization notebook compares with. Default: rga_sc.")
@click.option("--notebook", "notebooks", multiple=True, type=click.Path(path_type=Path),
              help="Run this notebook instead of the repository's notebooks/*.ipynb "
              "(repeatable).")
@click.option("--timeout", type=click.IntRange(min=1), default=600, show_default=True,
              help="Seconds a notebook cell may run.")
def genotype_notebooks(spec, out, compare, notebooks, timeout) -> None:
    """Run the notebooks on a run and save them as HTML pages for sharing.

    Executes notebooks/genotype_visualization.ipynb and notebooks/search_report.ipynb top to
    bottom on SPEC (default: the newest finished runs/search-*, else rga_sc) and writes
    <notebook>.html (pictures embedded) and the executed <notebook>.ipynb into --out. Needs
    the notebooks extra: pip install 'nas-reid[notebooks]'.
    """
    from .viz.notebooks import find_notebooks, render_notebooks

    paths = find_notebooks(notebooks or None)
    click.echo(f"running {len(paths)} notebook{'s' if len(paths) != 1 else ''} on "
               f"{spec or 'the default run'} ...", err=True)
    for path in render_notebooks(spec, out, notebooks=paths, compare=compare, timeout=timeout):
        click.echo(f"wrote {path}")


# --------------------------------------------------------------------------------------- tune
@main.command("tune", context_settings=CONTEXT)
@click.argument("tune_space", required=False, metavar="[TUNE_SPACE]")
@click.option("--genotype", default=None, metavar="JSON|RUN|NAME",
              help="Target retrain: what every trial retrains (a genotype.json, a search run "
              "folder or a reference name).")
@click.option("--space", "search_space", default=None, metavar="YAML|NAME",
              help="Target search: the search space every trial searches before its retrain "
              "(a YAML file or a shipped name). Default: cpu_small.")
@click.option("--data", type=click.Choice(SEARCH_DATASETS), default=None,
              help="Dataset whose training identities the trials use (train and validation). "
              "Default: synthreid.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (required but for synthreid).")
@click.option("--recipe", default=None, metavar="NAME|YAML",
              help="Retrain recipe every trial starts from. Default: synthetic on synthreid, "
              "bot otherwise; mobile_synthetic / mobile for a mobile (mobilenetv2) backbone.")
@click.option("--backend", type=click.Choice(["ray", "optuna"]), default="ray", show_default=True,
              help="ray: Ray Tune schedules the trials (in parallel, locally or on a cluster); "
              "optuna: one trial after another in this process, a line on stderr per trial "
              "and epoch.")
@click.option("--trials", type=click.IntRange(min=1), default=8, show_default=True,
              help="Trials the study holds in the end (with --resume the finished ones count).")
@click.option("--seed", type=int, default=0, show_default=True, help="TPE sampler seed.")
@click.option("--early-stopping", type=click.Choice(["asha", "median", "none"]), default="asha",
              show_default=True,
              help="Stop poor trials early on their per-epoch validation metric: ASHA "
              "(asynchronous successive halving) or the median rule, the same rule in both "
              "backends. Grace period (default: the recipe's warm-up plus a quarter of the "
              "epochs) and reduction factor: the tune space's early_stopping.")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage, any RDB URL (optuna-dashboard URL shows it). Default: "
              "sqlite:///<out>/study.db.")
@click.option("--study-name", default=None, help="Default: the tune space's name.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Study folder. Default: runs/tune-<timestamp>.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out: options left out are taken from its tune.yaml; "
              "unfinished trials continue from their last epoch.")
@click.option("--address", default=None, metavar="auto|ray://HOST:PORT|HOST:PORT",
              help="Ray: an existing cluster (default: RAY_ADDRESS, else a new local Ray). "
              "Through Ray Client (ray://) to another machine, --storage and --storage-path are "
              "required. A cluster with token authentication (ray start's default) needs "
              "RAY_AUTH_MODE=token and its token in the environment.")
@click.option("--storage-path", default=None, metavar="PATH|URI",
              help="Ray: where trials persist (checkpoints, results); give storage every node "
              "reaches on a cluster, and only trusted users can write (--resume unpickles Ray's "
              "tuner.pkl from it, which runs any code the file holds; it refuses any path but "
              "the one the study was created with). Default: <out>/ray.")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Ray: CPUs of each trial (its torch threads, rounded down).")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Ray: GPUs of each trial; a fraction (0.5) shares a GPU; above 0, trials "
              "train on cuda.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
              help="Ray: at most this many trials at once. Default: as the resources allow.")
@click.option("--device", type=DEVICE, default="auto", show_default=True,
              help=f"{AUTO_HELP} Optuna backend: where the trials train (Ray: set by "
              "--gpus-per-trial).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads of a trial. Default: ray, --cpus-per-trial; optuna, half "
              "the cores.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Image-loading processes of each trial. Default: 0 on cpu; on cuda, optuna "
              "min(8, the cores), ray --cpus-per-trial (at most 8).")
@click.option("--verbose", is_flag=True, help="Ray: its progress tables and the workers' logs.")
@click.pass_context
def tune_cmd(ctx, tune_space, genotype, search_space, data, root, recipe, backend, trials, seed,
             early_stopping, storage, study_name, out, resume, address, storage_path,
             cpus_per_trial, gpus_per_trial, max_concurrent, device, threads, workers,
             verbose) -> None:
    """Tune the hyper-parameters of retrains or searches with Optuna, scheduled by Ray Tune.

    TUNE_SPACE (a YAML file or a shipped name: retrain_small, search_small; default
    retrain_small with --genotype, search_small with --space) names the parameters, their
    Optuna distributions and the target. A trial retrains --genotype (target retrain), or
    searches --space and retrains what it finds (target search); it is scored after every
    epoch on a validation split of the training identities, never on the test query /
    gallery. A trial that fails is recorded and the others go on; Ctrl-C stops the run
    resumably (--resume).

    Writes into --out: trials.csv, best.yaml (the best trial's whole recipe or search space,
    ready for nas-reid retrain --recipe / nas-reid search --space), best_trial.yaml,
    optimization_history.png, param_importances.png, tune.yaml, and the Optuna study
    (study.db unless --storage).
    """
    from datetime import datetime

    for spec, what in ((tune_space, "tune space"), (search_space, "search space"),
                       (recipe, "recipe")):
        _early_typo(spec, what)
    device = _auto_device(device)
    from .hpo.study import read_settings

    if resume:
        if out is None:
            raise UserError("--resume needs --out: the study folder to continue")
        saved = read_settings(out)

        def given(name: str) -> bool:
            return ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)

        ray_saved = saved.get("ray") or {}
        filled = {
            "backend": saved["backend"], "trials": saved["trials"], "seed": saved["seed"],
            "early_stopping": saved["early_stopping"], "storage": saved["storage"],
            "study_name": saved["study"], "device": saved["device"],
            "storage_path": ray_saved.get("storage_path"),
            "cpus_per_trial": ray_saved.get("cpus_per_trial", cpus_per_trial),
            "gpus_per_trial": ray_saved.get("gpus_per_trial", gpus_per_trial),
            "max_concurrent": ray_saved.get("max_concurrent"),
        }
        values = dict(backend=backend, trials=trials, seed=seed, early_stopping=early_stopping,
                      storage=storage, study_name=study_name, device=device,
                      storage_path=storage_path, cpus_per_trial=cpus_per_trial,
                      gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent)
        values.update({k: v for k, v in filled.items() if not given(k)})
        backend, trials, seed, early_stopping = (values[k] for k in
                                                 ("backend", "trials", "seed", "early_stopping"))
        storage, study_name, device = values["storage"], values["study_name"], values["device"]
        storage_path, cpus_per_trial = values["storage_path"], values["cpus_per_trial"]
        gpus_per_trial, max_concurrent = values["gpus_per_trial"], values["max_concurrent"]
        if tune_space is None:
            tune_space = saved["tune_space"]
        if genotype is None and search_space is None:
            if saved["target"] == "retrain":
                from .space.genotype import Genotype

                genotype = saved["reference"] or Genotype.from_dict(saved["genotype"])
            else:
                search_space = saved["search_space"]
        if recipe is None:
            recipe = saved["recipe"]
        if data is None and root is None:
            data, root = saved["data"]["name"], saved["data"]["root"]
    else:
        if out is None:
            out = Path(f"runs/tune-{datetime.now():%Y%m%d-%H%M%S}")
        if genotype is None and search_space is None:
            raise UserError("give --genotype (tune retrains of it) or --space (tune searches of "
                            "that search space)")
        if tune_space is None:
            tune_space = "search_small" if search_space is not None else "retrain_small"
    common = dict(genotype=genotype, search_space=search_space, recipe=recipe, root=root,
                  out_dir=out, trials=trials, seed=seed, storage=storage, study_name=study_name,
                  resume=resume, early_stopping=early_stopping)
    if backend == "optuna":
        from .hpo import run_study

        for option in ("address", "storage_path", "max_concurrent", "cpus_per_trial",
                       "gpus_per_trial"):
            if ctx.get_parameter_source(option) not in (click.core.ParameterSource.DEFAULT, None):
                raise UserError(f"--{option.replace('_', '-')} is for --backend ray")
        _set_threads(threads, device)
        with _tune_ctrl_c(out):
            result = run_study(tune_space, data=data, device=device, progress=False, echo=True,
                               num_workers=_default_workers(workers, device), **common)
    else:
        from .hpo import run_tune

        explicit = ctx.get_parameter_source("device") != click.core.ParameterSource.DEFAULT
        if device == "cuda" and explicit and not gpus_per_trial > 0:
            raise UserError("--backend ray trains on cuda when a trial has a GPU share: give "
                            "--gpus-per-trial (e.g. 1 or 0.5) instead of --device cuda")
        with _tune_ctrl_c(out):
            result = run_tune(tune_space, data=data, address=address, storage_path=storage_path,
                              cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                              max_concurrent=max_concurrent, threads=threads,
                              num_workers=workers, progress=verbose, **common)
    _print_study(result)
    if result.interrupted:
        click.echo(f"interrupted: continue with nas-reid tune --resume --out {result.out_dir}",
                   err=True)
        ctx.exit(130)


@contextlib.contextmanager
def _tune_ctrl_c(out: Path):
    """Ctrl-C outside the backends' own handling (set-up, a second Ctrl-C): how to go on."""
    from .hpo.study import SETTINGS_FILE

    try:
        yield
    except KeyboardInterrupt:
        if (out / SETTINGS_FILE).is_file():
            raise Interrupted(f"interrupted: continue with nas-reid tune --resume --out {out}"
                              ) from None
        raise Interrupted(f"interrupted before the study in {out} started; nothing was kept"
                          ) from None


def _print_study(result) -> None:
    unfinished = f", {result.n_unfinished} unfinished" if result.n_unfinished else ""
    click.echo(f"study {result.study_name} ({result.backend}): {result.n_complete} complete, "
               f"{result.n_pruned} pruned, {result.n_failed} failed{unfinished}")
    if result.best_value is not None:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in result.best_params.items())
        click.echo(f"best validation {result.metric} {100 * result.best_value:.1f} %: {shown}")
    for name, path in result.files.items():
        click.echo(f"wrote {path}")
    for name, why in result.skipped.items():
        click.echo(f"skipped {name}: {why}")
    click.echo(f"study: optuna-dashboard {result.storage}")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like HxW (e.g. 128x64), got {text!r}") from None
    return h, w


if __name__ == "__main__":  # pragma: no cover
    main()
