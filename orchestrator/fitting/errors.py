"""The fitting package's own exceptions: what the numerical code raises when the runs cannot
support a fit. It knows nothing of the command line; the callers at the edge (orchestrator.cli,
orchestrator.sweep) turn a FitError into the one-line message a user reads."""

from __future__ import annotations

__all__ = ["FitError", "InsufficientData"]


class FitError(Exception):
    """The runs cannot support the fit asked for; the message says why, in one line."""


class InsufficientData(FitError, ValueError):
    """Too few points for a functional form; the message names what is missing.

    A ValueError too, as fit_approach3's callers (the adaptive planner) catch it as one."""
