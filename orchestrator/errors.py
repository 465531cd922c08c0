"""The one exception type that reaches a user as a one-line message and exit status 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user (spec, data path, results directory, SQL, column name).

    The message is one line naming the field or file, the value and what was expected; the
    CLI prints it on stderr with no traceback and exits with status 2.
    """
