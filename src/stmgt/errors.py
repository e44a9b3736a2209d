"""User-facing errors.

Every mistake a user can make with their input (a malformed file, a bad config value, a
history longer than the data) raises a subclass of :class:`StmgtError` whose message is one
line saying what is wrong, where, and how to fix it. The CLI prints that line and exits with
status 2 instead of showing a traceback.
"""

from __future__ import annotations


class StmgtError(Exception):
    """Base class of every error caused by user input; its message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DataError(StmgtError, ValueError):
    """Malformed or inconsistent data: shapes, timestamps, graph, splits, files."""


class ConfigError(StmgtError, ValueError):
    """An invalid configuration value or option combination."""


class RunError(StmgtError):
    """A run folder that is missing, incomplete or from an incompatible version."""
