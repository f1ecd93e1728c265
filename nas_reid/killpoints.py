"""A test-only hook: the process signals itself at a named point of a run, so the kill and
Ctrl-C tests stop a real process at a chosen moment, deterministically.

``NAS_REID_KILL_AT="<point>[@<n>][=<signal>][,...]"`` makes the process send itself
``<signal>`` (``KILL``, the default, or another name such as ``INT``) the ``n``-th time
(default the first) it reaches ``<point>`` (to its whole process group when it leads one, as
a terminal's Ctrl-C does: data-loading workers get it too):

===================  ===========================================================================
``setup``            a fresh run's ``config.yaml`` and run files are written, no checkpoint yet
``step``             a training step is done and counted, its checkpoint (if one is due) not yet
``checkpoint``       a checkpoint is due and not yet written (the records before it are)
``write:<name>``     an atomic write of the file ``<name>`` is complete under its temporary name,
                     not yet renamed (:func:`nas_reid.fileio.atomic_write_bytes`)
===================  ===========================================================================

Unset (always, outside the tests), :func:`reached` only reads the environment.
"""

from __future__ import annotations

import os
import signal

ENV = "NAS_REID_KILL_AT"
_reached: dict[str, int] = {}


def reached(point: str) -> None:
    """Count ``point``; signal this process if ``NAS_REID_KILL_AT`` names this occurrence."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    count = _reached[point] = _reached.get(point, 0) + 1
    for entry in spec.split(","):
        where, _, name = entry.partition("=")
        at, _, nth = where.partition("@")
        if at == point and count == int(nth or 1):
            sig = getattr(signal, f"SIG{name or 'KILL'}")
            if os.getpgid(0) == os.getpid():
                os.killpg(os.getpid(), sig)
            else:
                os.kill(os.getpid(), sig)
