"""What long work prints on a terminal: durations, one live status line and the notices around it.

A :class:`StatusLine` redraws one line in place (``\\r``) and only where its stream is a terminal;
elsewhere (a log file, a pipe, CI) it writes nothing. :func:`notice` prints a line of its own
(an epoch's result, a kernel build starting, a warning) after clearing the status line that is
drawn, so that the two never share a line; the status line comes back at its next update.
"""

from __future__ import annotations

import os
import sys

_drawn: StatusLine | None = None
"""The status line on screen now (at most one per process)."""


def duration(seconds: float) -> str:
    """``0m41s``, ``7m10s``, ``1h02m05s``: whole seconds, minutes always shown."""
    s = max(0, int(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s"


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (False for a closed stream or one without ``isatty``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _width(stream) -> int | None:
    """The terminal's width in columns, or None where the stream has no terminal size (a test's stream)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None


class StatusLine:
    """One line redrawn in place on ``stream`` (default: stderr at the time of writing), drawn only
    where that stream is a terminal. Text longer than the terminal is cut, so it never wraps (a
    wrapped line cannot be redrawn in place)."""

    def __init__(self, stream=None):
        self._stream = stream
        self.live = is_terminal(self.stream)
        self.shown = 0  # characters of the line on screen

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def show(self, text: str) -> None:
        """Replace the line on screen with ``text`` (nothing where the stream is not a terminal)."""
        global _drawn
        if not self.live:
            return
        if _drawn is not None and _drawn is not self:
            _drawn.clear()
        width = _width(self.stream)
        if width:
            text = text[:width - 1]
        self.stream.write("\r" + text + " " * max(0, self.shown - len(text)))
        self.stream.flush()
        self.shown = len(text)
        _drawn = self

    def clear(self) -> None:
        """Erase the line (the cursor back at its start), if one is on screen."""
        global _drawn
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0
        if _drawn is self:
            _drawn = None


def notice(text: str, stream=None) -> None:
    """Print ``text`` as a line of its own on ``stream`` (default stderr), clearing the status line first."""
    if _drawn is not None:
        _drawn.clear()
    print(text, file=stream if stream is not None else sys.stderr, flush=True)
