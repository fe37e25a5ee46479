"""The one exception type for a user's mistake.

The library raises :class:`UsageError` when what it was given cannot work (a bad flag value, a
file that is not an mmgen dataset, a checkpoint that does not match) with a message that names
what was wrong and what would be right. The command line prints such errors, and the
operating system's errors on the user's paths, as one line with exit code 2. Every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A user's mistake: the message says what was wrong and what would be right.

    It subclasses ``ValueError`` so that library callers catching ``ValueError`` keep working.
    """
