"""What a search or retrain says on stderr while it sets up, before its first epoch.

Every line goes through :func:`say` (``tqdm.write``, so it never breaks a progress bar), only
with ``progress`` on rank 0. The loops say:

- :func:`announce_data`: that the built-in benchmark is being generated, when it will be
  (its first use on this machine), before the seconds that takes;
- :func:`run_folder_lines`: once every input has been checked, the run folder (new, or
  resumed at which epoch) and the TensorBoard command that shows it;
- each slow set-up step as it starts (the RIB's cluster fit, the first checkpoint).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def say(enabled: bool, text: str) -> None:
    """``text`` on stderr when ``enabled``."""
    if enabled:
        tqdm.write(text, file=sys.stderr)


def announce_data(enabled: bool, data: Any, root: str | os.PathLike | None,
                  saved: Any = None) -> None:
    """Say so when resolving ``data`` (:func:`~nas_reid.data.resolve_dataset`'s arguments) is
    about to generate the built-in benchmark into its cache."""
    if not enabled or root is not None or saved is not None or data not in (None, "synthreid"):
        return
    from nas_reid.data.synthreid import INFO_FILE, synthreid_cache_dir

    folder = synthreid_cache_dir()
    if not (folder / INFO_FILE).is_file():
        say(True, f"data: generating the built-in benchmark synthreid into {folder} (first use "
                  "on this machine; a few seconds) ...")


def run_folder_lines(out: Path, kind: str, resumed_epoch: int | None, epochs: int) -> list[str]:
    """The run folder of a ``kind`` run (new, or resumed after ``resumed_epoch`` of ``epochs``)
    and the command that shows its TensorBoard curves."""
    where = (f"resuming after epoch {resumed_epoch} of {epochs}" if resumed_epoch is not None
             else f"new, {epochs} epoch{'s' if epochs != 1 else ''}")
    return [f"{kind} run folder: {out} ({where})",
            f"  curves: tensorboard --logdir {out / 'tensorboard'}"]
