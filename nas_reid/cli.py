"""The ``nas-reid`` command line: a thin shell over the library's public functions.

Every :class:`~nas_reid.errors.UserError` raised below a command becomes one line on stderr
(``Error: ...``) and exit code 2, with no traceback; click's own usage errors exit 2 as well.
Heavy imports (torch, the generators) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _UserFacingError(click.ClickException):
    exit_code = 2


class _Group(click.Group):
    """A click group whose commands report UserError as a clean exit-2 message."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise _UserFacingError(str(exc)) from None


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="nas-reid")
def main() -> None:
    """Neural architecture search for person re-identification.

    Start with `nas-reid data synth` or `nas-reid data check --dataset synthreid`: the built-in
    synthetic benchmark needs no download.
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
    fn = click.option(
        "--dataset", "dataset", required=True, type=click.Choice(DATASET_NAMES),
        help="Which dataset layout to read.",
    )(fn)
    return fn


def _load(dataset: str, root: Path | None, cuhk03_variant: str, msmt17_combine_val: bool):
    from .data import load_dataset

    options = {}
    if dataset == "cuhk03":
        options["variant"] = cuhk03_variant
    if dataset == "msmt17" and msmt17_combine_val:
        options["combine_val"] = True
    if root is None and dataset != "synthreid":
        raise UserError(f"--root is required for --dataset {dataset}")
    return load_dataset(dataset, root, **options), options


@main.group(cls=_Group, context_settings=CONTEXT)
def data() -> None:
    """Read, check and generate re-ID datasets."""


@data.command("check", context_settings=CONTEXT)
@_dataset_options
def data_check(dataset, root, cuhk03_variant, msmt17_combine_val) -> None:
    """Print ids / images / cameras per split and compare them with the official counts."""
    from .data.check import check_dataset, format_check
    from .data.registry import official_counts

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
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG file to write.")
@click.option("--ids", "num_ids", type=int, default=8, show_default=True, help="Identities (rows).")
@click.option("--per-id", type=int, default=8, show_default=True, help="Images per identity.")
def data_sheet(dataset, root, cuhk03_variant, msmt17_combine_val, split, out, num_ids, per_id) -> None:
    """Write a contact sheet PNG: one row of images per identity, labelled with pid and camera."""
    from .viz.contact_sheet import make_contact_sheet

    ds, _ = _load(dataset, root, cuhk03_variant, msmt17_combine_val)
    path = make_contact_sheet(ds.split(split), out, ids=num_ids, per_id=per_id,
                              title=f"{ds.name} / {split}")
    click.echo(f"wrote {path}")


# ------------------------------------------------------------------------------------- search
SEARCH_DATASETS = ["synthreid", "market1501", "dukemtmc", "msmt17", "cuhk03", "occluded_duke"]


def _default_threads(device: str) -> int | None:
    """Half the CPU cores (at least 1), shared by the torchrun processes of this machine; on
    CUDA torch's own default."""
    if device != "cpu":
        return None
    import os

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, (os.cpu_count() or 2) // 2 // local)


@main.command("search", context_settings=CONTEXT)
@click.option("--space", type=click.Path(path_type=Path), default=None,
              help="Search-space YAML. Default: search_spaces/cpu_small.yaml (with --resume: "
              "the run's own).")
@click.option("--data", type=click.Choice(SEARCH_DATASETS), default=None,
              help="Dataset whose training identities are searched on. Default: synthreid, the "
              "built-in benchmark (with --resume: the run's own).")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (required but for synthreid).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override the space's schedule.epochs.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: one GPU per process (torchrun --nproc_per_node N for several).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder. Default: runs/search-<timestamp> under the current folder.")
@click.option("--resume", is_flag=True,
              help="Continue the search in --out from its last checkpoint.")
@click.option("--seed", type=int, default=None, help="Override the space's schedule.seed.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads. Default on cpu: half the cores (a shared or busy machine "
              "runs small ops much faster with fewer threads). Results are reproducible for a "
              "given thread count.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Image-loading worker processes (results do not depend on it).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also checkpoint every N steps (0: once per epoch).")
def search_cmd(space, data, root, epochs, device, out, resume, seed, threads, workers,
               checkpoint_every) -> None:
    """Search attention cells (DNAS) and write a run folder with the genotype.

    The weights train on one share of the training identities, the architecture on the other
    (held out) share. With no option it searches the small CPU space on the built-in
    synthetic benchmark. Under torchrun it runs data-parallel (only rank 0 writes and prints).
    """
    import os

    import torch

    from .search import search

    threads = threads or _default_threads(device)
    if threads:
        torch.set_num_threads(threads)
    result = search(space, data, root=root, out_dir=out, epochs=epochs, device=device,
                    resume=resume, seed=seed, num_workers=workers,
                    checkpoint_every=checkpoint_every, progress=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    genotype = result.genotype
    click.echo(f"genotype: {result.genotype_path}")
    if genotype is not None:
        click.echo(f"  {genotype.summary()}")
    best = result.best
    if best.get("mAP") is not None:
        click.echo(f"  held-out mAP {100 * best['mAP']:.1f} / R1 {100 * best['R1']:.1f} "
                   f"(best, epoch {best['epoch']}); run folder: {result.out_dir}")
    else:
        click.echo(f"  run folder: {result.out_dir}")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like HxW (e.g. 128x64), got {text!r}") from None
    return h, w


if __name__ == "__main__":  # pragma: no cover
    main()
