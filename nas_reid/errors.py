"""Errors caused by what the user handed us (a path, a file, an option).

The CLI turns every :class:`UserError` into one line on stderr and exit code 2, without a
traceback. Library code raises the most specific subclass, with a message that names the
offending file, folder or field.

:class:`Interrupted` is Ctrl-C: the CLI prints its message (what was kept, how to continue) and
exits with code 130.
"""


class UserError(Exception):
    """Bad input from the user: reported as one clear message, exit code 2."""


class DatasetError(UserError):
    """A dataset folder or file does not follow its documented layout."""


class EvaluationError(UserError):
    """Inputs to the ranking metrics are inconsistent or have no valid query."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a command; the message says where, what was kept and how to continue."""
