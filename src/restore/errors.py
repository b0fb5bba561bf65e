"""Errors a user can cause and fix.

Every failure a user can provoke (a missing folder, a bad config value, a wrong checkpoint) is raised as a
`RestoreError`: the command line prints its message and hint and exits non-zero without a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RestoreError(Exception):
    """Base class: `message` says what was wrong, `hint` how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(RestoreError):
    """A config key, value, method, dataset or protocol name that is not valid."""


class DataError(RestoreError):
    """A dataset folder, split file or image that is missing, corrupt or inconsistent."""


class CheckpointError(RestoreError):
    """A checkpoint that cannot be read, is truncated, or belongs to another model or method."""


class DownloadError(RestoreError):
    """A download that failed, was corrupted, or cannot happen (offline)."""


class TokenizationError(RestoreError):
    """A text that does not fit the text encoder's context."""


class TrainingError(RestoreError):
    """A run that had to stop (e.g. a non-finite loss); what was computed before is kept."""

    exit_code = 3


class ResultsError(RestoreError):
    """A results database that cannot be opened or written."""


class RestoreWarning(UserWarning):
    """Something a user should see that does not stop the command (the CLI prints it as a `warning:` line)."""


class DataWarning(RestoreWarning):
    """Data that loads but looks wrong: duplicate entries, two labels sharing a class name."""
