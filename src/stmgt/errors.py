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

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from stmgt.console import notice

# numpy >= 2 scalar reprs (``np.int64(3)``, ``np.str_('a')``, ``np.True_``) that an f-string's ``!r`` lets
# into a message; the user wrote 3 and 'a', so that is what the message shows.
_NUMPY_REPR = re.compile(r"""np\.[a-z]+\d*_?\(('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^()'"]*)\)""")
_NUMPY_BOOL = re.compile(r"np\.(True|False)_")


def plain(value) -> str:
    """``repr`` of a value as the user wrote it: numpy scalars (also inside lists/tuples) as Python's."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = str(value) if value.dtype.kind in "mM" else value.item()  # dates as written, not datetime(...)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(plain(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


class StmgtError(Exception):
    """Base class of every error caused by user input; its message is one line (numpy reprs unwrapped)."""

    def __init__(self, message: str):
        message = _NUMPY_BOOL.sub(r"\1", _NUMPY_REPR.sub(r"\1", str(message)))
        super().__init__(" ".join(message.split()))


class DataError(StmgtError, ValueError):
    """Malformed or inconsistent data: shapes, timestamps, graph, splits, files."""


class ConfigError(StmgtError, ValueError):
    """An invalid configuration value or option combination."""


class RunError(StmgtError):
    """A run folder that is missing, incomplete or from an incompatible version."""


class Interrupted(StmgtError):
    """Work stopped by a signal (SIGTERM from a scheduler, Ctrl-C) after saving what resumes it; the
    command exits with ``exit_code`` (128 + the signal's number: 143 for SIGTERM, 130 for SIGINT)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


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
        default_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, StmgtWarning):
                notice(f"stmgt: warning: {message}")  # on a line of its own, not after a status line
            else:
                default_show(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
