"""File helpers: checks on output paths before any work is done (a one-line error instead of a traceback
at the end), and file digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from stmgt.errors import ConfigError


def _exists(p: Path, option: str) -> bool:
    try:
        p.stat()
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:  # e.g. a parent folder we may not enter
        raise ConfigError(f"{option}: cannot reach {p}: {e.strerror}") from None


def ensure_writable_dir(path: str | Path, option: str) -> Path:
    """Check that ``path`` is a folder this process can write into, or one it can create; return it.

    Nothing is created. ``option`` names where the path came from (``"--out"``, ``"run_dir"``) and starts the
    one-line :class:`~stmgt.errors.ConfigError` raised for an existing file, a path under a file, or a folder
    without write permission.
    """
    p = Path(path).expanduser()
    if _exists(p, option) and not p.is_dir():
        raise ConfigError(f"{option}: {p} is a file, not a folder; give a folder path")
    probe = p
    while not _exists(probe, option) and probe.parent != probe:
        probe = probe.parent  # the nearest folder (or file) that exists
    if not probe.is_dir():
        raise ConfigError(f"{option}: cannot create the folder {p}: {probe} is a file; give a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: cannot write in {probe} (permission denied); give a folder you can write to")
    return p


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
