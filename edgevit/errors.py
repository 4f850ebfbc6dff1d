"""User-facing errors.

Every problem caused by the user's input (unknown model, corrupt file, bad option, a model that does not
meet a budget) is raised as an `EdgevitError`. The CLI prints its message as one line and exits with
`exit_code` (2 by default); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgevitError(Exception):
    """An error the user can act on: printed as one line, exit code 2."""

    exit_code = 2


class ParityError(EdgevitError):
    """A compiled/exported artifact does not reproduce its reference within tolerance."""

    exit_code = 1
