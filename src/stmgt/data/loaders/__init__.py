"""Loaders: real traffic datasets (and your own city) -> :class:`~stmgt.data.panel.Panel`.

:func:`load` looks at a folder (or a single file), picks the format from the files it holds and
calls that format's loader; ``format=`` forces one. Every loader is a small module of its own,
documented with the file layout, units and missing-value convention of its source:

==========  ===============================================  =====================================
format      files                                            loader
==========  ===============================================  =====================================
panel       ``panel.npz`` (+ ``meta.json``)                  :meth:`Panel.load` (stmgt's own)
city        ``observations.csv|parquet``, ``edges.csv``,      :func:`~.city.load_city`
            optional ``nodes.csv``
tgcn        ``<prefix>_speed.csv`` + ``<prefix>_adj.csv``    :func:`~.tgcn.load_tgcn` (Los-loop)
metr        ``*.h5`` + ``adj_mx*.pkl``                       :func:`~.metr.load_metr` (METR-LA, PEMS-BAY)
pems        ``PEMS0X.npz`` (key ``data``) + ``PEMS0X.csv``   :func:`~.pems.load_pems`
hcmc        ``processed/all_runs_combined.parquet``          :func:`~.hcmc.load_hcmc`
            or ``runs/run_*/traffic_edges.json``
i94         ``Metro_Interstate_Traffic_Volume.csv``          :func:`~.i94.load_i94`
montevideo  ``montevideo_bus.json`` (node-link JSON)         :func:`~.montevideo.load_montevideo`
==========  ===============================================  =====================================

Options are passed to the loader; an option it does not take raises a one-line
:class:`~stmgt.errors.ConfigError` listing the ones it does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from stmgt.data.loaders.city import OBS_FILES, grid_findings, load_city, load_city_with_notes
from stmgt.data.loaders.hcmc import PARQUET, load_hcmc, run_folders
from stmgt.data.loaders.i94 import FILE as I94_FILE
from stmgt.data.loaders.i94 import load_i94
from stmgt.data.loaders.metr import load_metr
from stmgt.data.loaders.montevideo import FILE as MONTEVIDEO_FILE
from stmgt.data.loaders.montevideo import load_montevideo
from stmgt.data.loaders.pems import has_data_key, load_pems
from stmgt.data.loaders.tgcn import find_pair, load_tgcn
from stmgt.data.panel import PANEL_FILE, Panel
from stmgt.errors import ConfigError, DataError

#: Format name -> the files it expects (used in messages and ``stmgt data check --help``).
FORMATS: dict[str, str] = {
    "panel": "panel.npz (+ meta.json) written by Panel.save",
    "city": "observations.csv|parquet (timestamp,node_id,value), edges.csv, optional nodes.csv",
    "tgcn": "<prefix>_speed.csv + <prefix>_adj.csv (e.g. los_speed.csv, los_adj.csv)",
    "metr": "*.h5 pandas store + adj_mx*.pkl (METR-LA, PEMS-BAY)",
    "pems": "PEMS0X.npz with a 'data' array + PEMS0X.csv distances (from,to,cost)",
    "hcmc": "processed/all_runs_combined.parquet or runs/run_*/traffic_edges.json",
    "i94": "Metro_Interstate_Traffic_Volume.csv",
    "montevideo": "montevideo_bus.json (PyTorch Geometric Temporal node-link JSON)",
}


def _load_panel(path: str | Path) -> Panel:
    p = Path(path)
    return Panel.load(p.parent if p.is_file() else p)


LOADERS: dict[str, Callable[..., Panel]] = {
    "panel": _load_panel,
    "city": load_city,
    "tgcn": load_tgcn,
    "metr": load_metr,
    "pems": load_pems,
    "hcmc": load_hcmc,
    "i94": load_i94,
    "montevideo": load_montevideo,
}


def detect_format(path: str | Path) -> str:
    """The format of a folder or file (see :data:`FORMATS`); DataError when none matches."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        n = p.name
        if n == PANEL_FILE:
            return "panel"
        if n in OBS_FILES:
            return "city"
        if n == I94_FILE:
            return "i94"
        if n == MONTEVIDEO_FILE:
            return "montevideo"
        if n.endswith("_speed.csv"):
            return "tgcn"
        if p.suffix in (".h5", ".hdf5"):
            return "metr"
        if p.suffix == ".parquet" and p.parent.name == "processed":
            return "hcmc"
        if p.suffix == ".npz" and has_data_key(p):
            return "pems"
        raise DataError(f"{p}: unknown file type; {_expected()}")
    if (p / PANEL_FILE).is_file():
        return "panel"
    if any((p / f).is_file() for f in OBS_FILES):
        return "city"
    if (p / I94_FILE).is_file():
        return "i94"
    if (p / MONTEVIDEO_FILE).is_file():
        return "montevideo"
    if (p / PARQUET).is_file() or run_folders(p) or (p.name == "runs" and run_folders(p.parent)):
        return "hcmc"
    if any(p.glob("*.h5")) or any(p.glob("*.hdf5")):
        return "metr"
    if any(has_data_key(f) for f in p.glob("*.npz")):
        return "pems"
    if find_pair(p) is not None:
        return "tgcn"
    names = sorted(f.name for f in p.iterdir())[:8]
    found = ", ".join(names) or "nothing"
    raise DataError(f"{p}: cannot tell the data format (found: {found}); {_expected()}")


def _expected() -> str:
    return "expected one of: " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()) + " (or pass format=)"


def load(path: str | Path, format: str | None = None, **options) -> Panel:  # noqa: A002 - CLI name
    """Load any supported dataset folder or file as a :class:`Panel`.

    Args:
        path: a folder (or one file) in one of :data:`FORMATS`.
        format: force a format instead of detecting it.
        **options: passed to the format's loader (e.g. ``interval="5min"`` for ``city``).
    """
    return LOADERS[_checked_format(path, format, options)](path, **options)


def _checked_format(path: str | Path, format: str | None, options: dict) -> str:  # noqa: A002
    """The format of ``path`` (``format`` when given) once the path exists and the options are the loader's."""
    if format is None:
        format = detect_format(path)
    elif format not in LOADERS:
        raise ConfigError(f"format={format!r} is unknown; choose one of {', '.join(FORMATS)}")
    elif not Path(path).exists():
        raise DataError(f"{path}: no such file or folder")
    check_options(format, options)
    return format


def check_options(format: str, options: dict, where: str = "") -> None:  # noqa: A002
    """One-line :class:`~stmgt.errors.ConfigError` unless every key of ``options`` is an option of the
    ``format`` loader (its keyword-only parameters); ``where`` prefixes the message (``"data.options: "``)."""
    params = inspect.signature(LOADERS[format]).parameters.items()
    accepted = [k for k, v in params if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ConfigError(
            f"{where}the {format} loader has no option {unknown[0]!r};"
            f" its options are: {', '.join(accepted) or 'none'}"
        )


def check(path: str | Path, format: str | None = None, **options) -> tuple[Panel, list[str]]:  # noqa: A002
    """:func:`load`, plus the findings ``stmgt data check`` prints under the summary.

    The findings are one-line strings: the interval and how it was found, the dates' order, the
    coverage of the grid and its longest stretch without any reading. Problems that do not stop
    loading are :class:`~stmgt.errors.StmgtWarning` warnings, raised while loading.
    """
    format = _checked_format(path, format, options)
    if format != "city":
        panel = LOADERS[format](path, **options)
        notes = [f"interval: {panel.interval_minutes:g} min"]
    else:
        notes = []  # the city loader says how it read the interval and the dates
        panel = load_city_with_notes(path, notes, **options)
    return panel, notes + grid_findings(panel)


__all__ = [
    "FORMATS",
    "check",
    "LOADERS",
    "detect_format",
    "load",
    "load_city",
    "load_hcmc",
    "load_i94",
    "load_metr",
    "load_montevideo",
    "load_pems",
    "load_tgcn",
]
