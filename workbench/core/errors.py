"""The error kinds the CLI maps to exit codes and the app maps to notifications."""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class: an error with a message meant for the user, shown as one line."""


class InputError(WorkbenchError):
    """Bad arguments or unreadable input (exit code 2 in batch mode)."""


class JobFailed(WorkbenchError):
    """A job ran and failed (exit code 1 in batch mode); the report records the step."""


class Cancelled(WorkbenchError):
    """Raised inside a job by ``ctx.check_cancelled()`` once the user asked to stop."""
