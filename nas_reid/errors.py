"""Errors caused by what the user handed us (a path, a file, an option).

The CLI turns every :class:`UserError` into one line on stderr and exit code 2, without a
traceback. Library code raises the most specific subclass, with a message that names the
offending file, folder or field.

A :class:`UserError` raised in a ``DataLoader`` worker process reaches the main process
re-created from a message that carries the worker's traceback; the error keeps only the
original message (the traceback's last line).

:class:`Interrupted` is Ctrl-C: the CLI prints its message (what was kept, how to continue) and
exits with code 130.
"""

import difflib
import re
from typing import Sequence

_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")
_LAST_LINE = re.compile(r"^[\w.]+: ")


class UserError(Exception):
    """Bad input from the user: reported as one clear message, exit code 2."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and _WORKER.match(args[0]):
            last = args[0].rstrip().splitlines()[-1]
            args = (_LAST_LINE.sub("", last, count=1),)
        super().__init__(*args)


class DatasetError(UserError):
    """A dataset folder or file does not follow its documented layout."""


class EvaluationError(UserError):
    """Inputs to the ranking metrics are inconsistent or have no valid query."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a command; the message says where, what was kept and how to continue."""


def unknown_field(name: str, allowed: Sequence[str]) -> str:
    """The words for an unknown field ``name``: the closest allowed one, then all of them."""
    close = difflib.get_close_matches(str(name), list(allowed), n=1, cutoff=0.6)
    return ("unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
            + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
