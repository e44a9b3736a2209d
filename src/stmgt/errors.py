"""User-facing errors.

Every mistake a user can make with their input (a malformed file, a bad config value, a
history longer than the data) raises a subclass of :class:`StmgtError` whose message is one
line saying what is wrong, where, and how to fix it. The CLI prints that line and exits with
status 2 instead of showing a traceback.

Something a user should look at, but that does not stop the work (a mostly empty time grid, an
ignored column), is a :class:`StmgtWarning` raised through :func:`warn`: a one-line
:func:`warnings.warn` that the CLI prints as ``stmgt: warning: ...`` on stderr.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


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


class StmgtWarning(UserWarning):
    """A problem in user input that does not stop the work; its message is one line."""


def warn(message: str) -> None:
    """Emit ``message`` (squeezed to one line) as a :class:`StmgtWarning`."""
    warnings.warn(StmgtWarning(" ".join(str(message).split())), stacklevel=3)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, print every :class:`StmgtWarning` as ``stmgt: warning: ...`` on stderr.

    Each one is shown every time it is raised (not once per code location); other warnings are
    shown as usual.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("always", StmgtWarning)
        plain = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, StmgtWarning):
                print(f"stmgt: warning: {message}", file=sys.stderr)
            else:
                plain(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
