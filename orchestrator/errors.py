"""The exception types that reach a user as a one-line message and exit status 2.

``UserError`` is bad input named at the edge (spec, path, column, SQL). ``FitError`` is what
the numerical fitting code raises when the runs cannot support a fit: it knows nothing of the
command line, and the callers at the edge (orchestrator.cli, orchestrator.sweep) print it as
the same one line.
"""

from __future__ import annotations

__all__ = ["UserError", "FitError", "InsufficientData"]


class UserError(Exception):
    """Bad input from the user (spec, data path, results directory, SQL, column name).

    The message is one line naming the field or file, the value and what was expected; the
    CLI prints it on stderr with no traceback and exits with status 2.
    """


class FitError(Exception):
    """The runs cannot support the fit asked for; the message says why, in one line."""


class InsufficientData(FitError, ValueError):
    """Too few points for a functional form; the message names what is missing.

    A ValueError too, as fit_approach3's callers (the adaptive planner) catch it as one."""
