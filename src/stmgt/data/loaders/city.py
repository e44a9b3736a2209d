"""Your own city: long-format observations, an edge list and optional node coordinates.

A folder with three plain files (see ``docs/your_own_city.md`` for a walk-through):

``observations.csv`` (or ``observations.parquet``, preferred when both exist)
    one row per reading, long format. Required columns ``timestamp, node_id, value``:

    * ``timestamp``: any date/time pandas parses (ISO 8601 ``2024-05-01 08:05:00`` is safest).
      Times are taken as local wall-clock time; a UTC offset, if present, is dropped (the local
      time is kept) so calendar features follow the city's day. ``03/04/2024``-style dates are
      read in the one order the file allows (a number above 12 first: day-first); when no date
      tells, ``dayfirst`` (or ``timestamp_format``) must say it (:func:`_date_order`).
    * ``node_id``: the sensor or road-segment name (read as text: ``007`` stays ``007``).
    * ``value``: the forecast target (speed, flow, ...), a number. An empty cell or one of
      :data:`NA_TOKENS` (``NA, NaN, null, n/a, #N/A``, any case) means "not observed"; a missing row
      means the same; any other text is an error. ``0`` is a real reading unless
      ``zero_is_missing=True``.

    Every other column whose values are all numbers (e.g. ``temperature, precipitation,
    wind_speed``) becomes a global covariate. It must be city-wide (one value per timestamp; a
    column that differs between nodes at one timestamp is refused); it is averaged over the rows of
    each time step, then forward/back filled over steps without a reading. Columns of text, and
    ``lat``/``lon``, are ignored; a column without any value is ignored with a warning.
``edges.csv``
    ``source, target[, weight]``: directed edges between node ids of ``observations``. List both
    directions for a two-way road (or pass ``symmetric=True``). ``weight`` must be a finite,
    non-negative number. Self loops are dropped. A header-only file means "no graph".
``nodes.csv`` (optional)
    ``node_id, lat, lon`` in WGS84 degrees; when present it fixes the node order and gives the
    coordinates. Nodes listed here that have no observation are ignored.

``city.json`` (optional)
    loader options for this folder (:data:`FILE_OPTIONS`), e.g. ``{"dayfirst": true}``, so that
    training reads it the same way; keyword arguments win.

Time grid: the interval is inferred per node (:func:`infer_interval`), and each reading goes to the
nearest step of a grid on the clock (a warning says how many moved; one further than
:data:`SNAP_TOLERANCE` of the interval from every step is refused). With an explicit ``interval``
(e.g. ``"5min"``, ``"1h"``) the grid starts at the first timestamp and each reading goes to the step
at or before it (several readings of one node in one step are averaged). Grid steps without a
reading are masked (``mask=False``); values are never filled. Outlier dates (one side of a gap
longer than half the span holding at most 1 % of the rows) and grids above :data:`MAX_GRID_CELLS`
cells are refused before allocation; coverage below :data:`MIN_COVERAGE` and gaps longer than
:data:`GAP_WARN_FRACTION` of the span are warnings (:class:`~stmgt.errors.StmgtWarning`).

Every format problem raises a one-line :class:`~stmgt.errors.DataError` naming the file, the line
(``line 1`` is the CSV header) or column, and the fix.

This module also holds the small helpers the other loaders share (:func:`parse_interval`,
:func:`regular_grid`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.panel import Panel
from stmgt.errors import ConfigError, DataError, warn

OBS_FILES = ("observations.parquet", "observations.csv")
EDGES_FILE = "edges.csv"
NODES_FILE = "nodes.csv"
REQUIRED = ("timestamp", "node_id", "value")
NOT_COVARIATES = {"lat", "lon", "latitude", "longitude", "node_name"}
MAX_EMPTY_RATIO = 50  # grid steps per distinct timestamp above which the interval is probably wrong
OPTIONS_FILE = "city.json"
#: Cell texts read as "not observed" (case-insensitive); any other text in a number column is an error.
NA_TOKENS = ("", "NA", "NaN", "null", "n/a", "#N/A")
_NA_LOWER = frozenset(t.lower() for t in NA_TOKENS)
_NA_VALUES = sorted({v for t in NA_TOKENS for v in (t, t.lower(), t.upper(), t.title())})
MAX_GRID_CELLS = 50_000_000  # steps x nodes above which a grid is refused (memory)
MIN_COVERAGE = 0.5  # warn when fewer grid cells than this hold a reading
GAP_WARN_FRACTION = 0.25  # warn when no node reads for longer than this share of the span
GAP_ERROR_FRACTION = 0.5  # refuse a gap longer than this share of the span ...
OUTLIER_SHARE = 0.01  # ... when one side of it holds at most this share of the rows (outlier dates)
SNAP_TOLERANCE = 0.1  # an inferred grid moves readings at most this share of the interval
#: Intervals an inferred one is rounded to when within 5 %.
NICE_SECONDS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
                21600, 43200, 86400, 604800)
_DMY = r"^(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})(?!\d)"


# ---------------------------------------------------------------------- shared helpers
def parse_interval(interval: str | pd.Timedelta | np.timedelta64, where: str = "interval") -> pd.Timedelta:
    """``"5min"``, ``"1h"``, ``"30 minutes"`` or a timedelta -> a positive :class:`pandas.Timedelta`."""
    try:
        td = pd.Timedelta(interval)
    except (TypeError, ValueError):
        td = None
    if td is None or pd.isna(td) or td <= pd.Timedelta(0):
        raise DataError(f"{where}: {interval!r} is not a positive time interval; use e.g. '5min', '1h'")
    return td


def regular_grid(start, stop, interval: pd.Timedelta) -> pd.DatetimeIndex:
    """Every ``interval`` from ``start`` to ``stop`` inclusive."""
    n = int((pd.Timestamp(stop) - pd.Timestamp(start)) // interval) + 1
    return pd.DatetimeIndex(pd.Timestamp(start) + interval * np.arange(n)).astype("datetime64[ns]")


def most_common_gap(times: np.ndarray) -> pd.Timedelta:
    """The most frequent positive gap between sorted distinct times (the smallest one on ties)."""
    t = np.unique(np.asarray(times, dtype="datetime64[ns]").astype(np.int64))
    d = np.diff(t)
    d = d[d > 0]
    if d.size == 0:
        raise ValueError("fewer than two distinct times")
    vals, counts = np.unique(d, return_counts=True)
    return pd.Timedelta(int(vals[np.argmax(counts)]), unit="ns")


def fmt_interval(td: pd.Timedelta) -> str:
    """``5min``, ``1h``, ``3s``, ``1d`` (or pandas' spelling for sub-second intervals)."""
    td = pd.Timedelta(td)
    if td.value % 1_000_000_000:
        return str(td)
    sec = int(td.total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if sec % n == 0:
            return f"{sec // n}{unit}"
    return str(td)  # pragma: no cover


def _duration(ns: int) -> str:
    """A gap in words: ``45 min``, ``3.5 h``, ``120.0 days``."""
    sec = ns / 1e9
    if sec >= 86400:
        return f"{sec / 86400:.1f} days"
    if sec >= 3600:
        return f"{sec / 3600:.1f} h"
    if sec >= 60:
        return f"{sec / 60:.0f} min"
    return f"{sec:g} s"


def infer_interval(times, nodes) -> pd.Timedelta:
    """The grid interval: the robust mode of the gaps between each node's consecutive readings.

    Gaps are pooled over nodes (so sensors that report a few seconds apart do not make a
    seconds-long grid); gaps within 5 % of each other count together (clock jitter), a gap that
    is a whole multiple of a frequent shorter one (a missed reading) counts for the shorter one,
    and the result is rounded to a round interval (5 min, 1 h...) within 5 %, else to the second.
    When no node has two readings, the most common gap between distinct times is used.
    """
    t = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
    c = pd.factorize(pd.Series(np.asarray(nodes)))[0]
    o = np.lexsort((t, c))
    t, c = t[o], c[o]
    d = np.diff(t)[np.diff(c) == 0]
    d = np.sort(d[d > 0])
    if d.size == 0:
        return most_common_gap(t)
    vals = np.unique(d)
    support = np.searchsorted(d, vals * 1.05, "right") - np.searchsorted(d, vals * 0.95, "left")
    best = float(vals[int(np.argmax(support))])
    for u, n in zip(vals.tolist(), support.tolist()):  # a frequent shorter gap that divides the mode
        if u >= best * 0.95 or n < 0.05 * d.size:
            continue
        r = best / u
        if abs(r - round(r)) <= 0.05 * round(r):
            best = float(u)
            break
    win = d[(d >= best * 0.95) & (d <= best * 1.05)]
    mid = float(np.median(win))
    nice = min(NICE_SECONDS, key=lambda x: abs(x * 1e9 - mid)) * 1e9
    if abs(nice - mid) <= 0.05 * mid:
        return pd.Timedelta(int(nice), unit="ns")
    if mid >= 1e9:
        return pd.Timedelta(int(round(mid / 1e9)), unit="s")
    return pd.Timedelta(int(round(mid)), unit="ns")


def fill_covariates(frame: pd.DataFrame) -> pd.DataFrame:
    """Forward- then back-fill covariate gaps (so a panel's covariates have no NaN)."""
    return frame.ffill().bfill()


# ---------------------------------------------------------------------- file reading
def _pos(file: str, i: int) -> str:
    """Human position of data row ``i`` (0-based): CSV line numbers count the header as line 1."""
    return f"line {i + 2}" if file.endswith(".csv") else f"row {i}"


def _where(file: str, i: int) -> str:
    return f"{file} {_pos(file, i)}"


def _shown(x) -> str:
    """A cell for a message: text quoted, numbers plain (never ``np.float64(...)``)."""
    if hasattr(x, "item") and not isinstance(x, str):
        x = x.item()
    return repr(x) if isinstance(x, str) else str(x)


def _read_table(path: Path, *, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV or parquet file as a frame; only the :data:`NA_TOKENS` (any case) become missing."""
    if path.stat().st_size == 0:
        raise DataError(
            f"{path}: the file is empty; it needs a header row and data rows (see docs/your_own_city.md)"
        )
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                df = pd.read_csv(path, dtype={c: str for c in text_columns}, skipinitialspace=True,
                                 keep_default_na=False, na_values=_NA_VALUES, index_col=False)
            if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
                df = None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = path.suffix[1:].upper()
        raise DataError(f"{path}: cannot be read as {kind} ({msg}); save it as UTF-8 {kind}") from None
    if df is None:
        _too_many_fields(path)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _too_many_fields(path: Path) -> None:
    """Name the first CSV line with more fields than the header (pandas would shift or drop them)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f, skipinitialspace=True)
        header = next(rows, [])
        for n, row in enumerate(rows, start=2):
            if len(row) > len(header):
                raise DataError(
                    f"{path.name} line {n}: {len(row)} fields but the header has {len(header)}; quote values that"
                    " contain commas (\"41,5\"), use '.' as the decimal point, or add the missing column name"
                )
    raise DataError(f"{path.name}: some lines have more fields than the header; make every line match it")


def _require(df: pd.DataFrame, cols: tuple[str, ...], file: str, hint: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise DataError(
            f"{file}: missing column(s) {', '.join(missing)}; found: {found}. {hint}"
        )


def _blank(col: pd.Series) -> np.ndarray:
    """Cells that mean "not observed": missing, or one of :data:`NA_TOKENS` (any case, spaces ignored)."""
    blank = col.isna().to_numpy()
    if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        blank = blank | col.astype(str).str.strip().str.lower().isin(_NA_LOWER).to_numpy()
    return blank


def _numeric(
    col: pd.Series, file: str, name: str, *, allow_missing: bool,
    hint: str = " or leave the cell empty (empty, NA, NaN, null, n/a and #N/A mean missing)",
) -> np.ndarray:
    """Column -> float64; a non-number (text, inf) raises naming the first bad row."""
    raw = col
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        num = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce")
    else:
        num = pd.to_numeric(raw, errors="coerce")
    num = num.astype("float64").to_numpy(copy=True)
    blank = _blank(raw)
    bad = (~np.isfinite(num) & ~blank) | (np.isinf(num))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{_where(file, i)}: {name} {_shown(raw.iloc[i])} is not a number; write a plain number"
            f" (decimal point '.'){hint if allow_missing else ''}"
        )
    if not allow_missing and blank.any():
        i = int(np.argmax(blank))
        raise DataError(f"{_where(file, i)}: {name} is empty; every row needs a {name}")
    num[blank] = np.nan
    return num


def _to_datetime(text: pd.Series, **kw) -> pd.Series:
    """:func:`pandas.to_datetime` without its format-inference warnings (and mixed offsets -> UTC)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ts = pd.to_datetime(text, errors="coerce", **kw)
        except (ValueError, TypeError):  # mixed UTC offsets
            ts = pd.to_datetime(text, errors="coerce", utc=True, **kw)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_localize(None)  # keep the local wall-clock time
    try:
        return ts.astype("datetime64[ns]")
    except (ValueError, OverflowError):  # a year outside 1677..2262: not a usable date here
        ok = ts.notna() & (ts >= pd.Timestamp.min) & (ts <= pd.Timestamp.max)
        return ts.where(ok).astype("datetime64[ns]")


def _date_order(text: pd.Series, file: str, dayfirst: bool | None, notes: list[str] | None) -> bool | None:
    """Check ``dd/mm/yyyy`` vs ``mm/dd/yyyy`` dates: refuse ambiguous or contradicting ones.

    Returns ``dayfirst`` to parse with: the given one, or the only order the data allow.
    """
    parts = text.str.extract(_DMY)
    has = parts[0].notna().to_numpy()
    if not has.any():
        return dayfirst
    a = pd.to_numeric(parts[0], errors="coerce").fillna(0).to_numpy()
    b = pd.to_numeric(parts[2], errors="coerce").fillna(0).to_numpy()
    day_first = has & (a > 12) & (b <= 12)  # only dd/mm fits
    month_first = has & (b > 12) & (a <= 12)  # only mm/dd fits

    def ex(mask: np.ndarray) -> str:
        i = int(np.argmax(mask))
        return f"{_pos(file, i)} {text.iloc[i]!r}"

    iso = "or write ISO 8601 dates (2024-05-01 08:05)"
    if dayfirst is True and month_first.any():
        raise DataError(
            f"{file} {ex(month_first)}: this date cannot be day-first (dd/mm/yyyy), as dayfirst=True says;"
            f" fix the row, or drop dayfirst if the file is month-first, {iso}"
        )
    if dayfirst is False and day_first.any():
        raise DataError(
            f"{file} {ex(day_first)}: this date cannot be month-first (mm/dd/yyyy), as dayfirst=False says;"
            f" fix the row, or pass dayfirst=True if the file is day-first, {iso}"
        )
    if dayfirst is None:
        if day_first.any() and month_first.any():
            raise DataError(
                f"{file}: dates mix day-first ({ex(day_first)}) and month-first ({ex(month_first)});"
                f" write every date in one order, {iso}"
            )
        if day_first.any():
            dayfirst, why = True, f"day-first (dd/mm/yyyy), as {ex(day_first)} shows"
        elif month_first.any():
            dayfirst, why = False, f"month-first (mm/dd/yyyy), as {ex(month_first)} shows"
        else:
            raise DataError(
                f"{file}: dates such as {ex(has)} can be read day-first or month-first and no day above 12"
                " tells which; say which with dayfirst=True (dd/mm/yyyy) or dayfirst=False (mm/dd/yyyy)"
                ' (stmgt data check --dayfirst / --no-dayfirst, or {"dayfirst": true} in city.json),'
                f" {iso}"
            )
    else:
        why = f"{'day' if dayfirst else 'month'}-first, as dayfirst={dayfirst} says"
    if notes is not None:
        notes.append(f"dates: {why}")
    return dayfirst


def _timestamps(
    col: pd.Series, file: str, *, dayfirst: bool | None = None, timestamp_format: str | None = None,
    notes: list[str] | None = None,
) -> pd.Series:
    """Column -> ``datetime64[ns]`` local times; one-line DataError naming the first bad row.

    ``timestamp_format`` (strftime codes, e.g. ``"%d/%m/%Y %H:%M"``) is used exactly when given.
    Otherwise pandas reads each row, and ``dd/mm`` vs ``mm/dd`` dates are checked by
    :func:`_date_order`: ambiguous ones (no day above 12) need ``dayfirst``.
    """
    if dayfirst is not None and timestamp_format is not None:
        raise ConfigError("give dayfirst or timestamp_format, not both (a format already fixes the order)")
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        ts = col
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_localize(None)  # keep the local wall-clock time
        ts = ts.astype("datetime64[ns]")
    else:
        text = col.astype("string").str.strip()
        empty = text.isna() | (text == "")
        if empty.any():
            i = int(np.argmax(empty.to_numpy()))
            raise DataError(f"{_where(file, i)}: timestamp is empty; every row needs a timestamp")
        text = text.astype(str).reset_index(drop=True)
        if timestamp_format is not None:
            try:
                ts = _to_datetime(text, format=timestamp_format)
            except (ValueError, TypeError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(
                    f"timestamp_format {timestamp_format!r} is not a date format ({msg}); use strftime"
                    " codes, e.g. '%d/%m/%Y %H:%M'"
                ) from None
            bad = ts.isna().to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{_where(file, i)}: timestamp {text.iloc[i]!r} does not match timestamp_format"
                    f" {timestamp_format!r}; fix the row or the format"
                )
            if notes is not None:
                notes.append(f"dates: read with timestamp_format {timestamp_format!r}")
        else:
            order = _date_order(text, file, dayfirst, notes)
            ts = _to_datetime(text, dayfirst=bool(order))
            bad = ts.isna().to_numpy()
            if bad.any():  # rows in another layout than the first one: try them one by one
                ts[bad] = _to_datetime(text[bad], format="mixed", dayfirst=bool(order)).to_numpy()
                bad = ts.isna().to_numpy()
                if bad.any():
                    i = int(np.argmax(bad))
                    raise DataError(
                        f"{_where(file, i)}: timestamp {text.iloc[i]!r} is not a date/time; write it as"
                        " ISO 8601, e.g. 2024-05-01 08:05:00"
                    )
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise DataError(f"{_where(file, i)}: timestamp is empty; every row needs a timestamp")
    return ts.astype("datetime64[ns]").reset_index(drop=True)


def _ids(col: pd.Series, file: str, name: str) -> pd.Series:
    s = col.astype("string").str.strip()
    empty = s.isna() | (s == "")
    if empty.any():
        i = int(np.argmax(empty.to_numpy()))
        raise DataError(f"{_where(file, i)}: {name} is empty; every row needs a {name}")
    return s.astype(str).reset_index(drop=True)


# ---------------------------------------------------------------------- the loader
#: Options a folder's ``city.json`` may set (keyword arguments win over it), and their JSON types.
FILE_OPTIONS: dict[str, type] = {
    "interval": str, "dayfirst": bool, "timestamp_format": str, "units": str, "symmetric": bool,
    "zero_is_missing": bool, "duplicates": str,
}


def read_options(folder: Path) -> dict:
    """The loader options in ``folder/city.json`` (``{}`` when there is none)."""
    f = Path(folder) / OPTIONS_FILE
    if not f.is_file():
        return {}
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f'{f}: not valid JSON ({msg}); write an object such as {{"dayfirst": true}}') from None
    if not isinstance(raw, dict):
        raise DataError(f'{f}: must hold one JSON object such as {{"dayfirst": true, "interval": "5min"}}')
    for k, v in raw.items():
        if k not in FILE_OPTIONS:
            raise DataError(f"{f}: unknown option {k!r}; the options are: {', '.join(FILE_OPTIONS)}")
        t = FILE_OPTIONS[k]
        if not isinstance(v, t) or (t is str and isinstance(v, bool)):
            want = "true or false" if t is bool else "a string"
            raise DataError(f"{f}: {k} must be {want}, got {json.dumps(v)}")
    return raw


def load_city(
    path: str | Path,
    *,
    interval: str | pd.Timedelta | None = None,
    name: str | None = None,
    units: str | None = None,
    symmetric: bool | None = None,
    zero_is_missing: bool | None = None,
    duplicates: str | None = None,
    dayfirst: bool | None = None,
    timestamp_format: str | None = None,
) -> Panel:
    """Load a city folder (``observations.csv|parquet``, ``edges.csv``, optional ``nodes.csv``).

    Every option left at ``None`` is taken from the folder's ``city.json`` when it sets it (e.g.
    ``{"dayfirst": true, "interval": "5min"}``), else from the default below.

    Args:
        path: the folder, or the observations file inside it.
        interval: grid interval such as ``"5min"``; default: inferred (see :func:`infer_interval`).
        name: dataset name; default: the folder name.
        units: units of ``value`` for reports (e.g. ``"km/h"``); default none.
        symmetric: also add ``target -> source`` for every edge that lacks its reverse (default False).
        zero_is_missing: treat ``value == 0`` as not observed (loop detectors often write 0).
        duplicates: what to do with two rows for the same (timestamp, node_id): ``"error"``
            (default) or ``"mean"`` (average them).
        dayfirst: ``True`` reads ``03/04/2024`` as 3 April (dd/mm/yyyy), ``False`` as March 4
            (mm/dd/yyyy). Needed only when no date in the file has a day above 12.
        timestamp_format: strftime codes every timestamp follows, e.g. ``"%d.%m.%Y %H:%M"``.
    """
    return _load_city(path, None, interval=interval, name=name, units=units, symmetric=symmetric,
                      zero_is_missing=zero_is_missing, duplicates=duplicates, dayfirst=dayfirst,
                      timestamp_format=timestamp_format)


def _load_city(path: str | Path, notes: list[str] | None, *, name: str | None = None, **given) -> Panel:
    """:func:`load_city`, appending what ``stmgt data check`` reports to ``notes``."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if not folder.is_dir():
        raise DataError(f"{p}: no such folder; point to the folder holding observations.csv and edges.csv")
    opts = read_options(folder)
    opts.update({k: v for k, v in given.items() if v is not None})
    interval = opts.get("interval")
    units = opts.get("units", "")
    symmetric = bool(opts.get("symmetric", False))
    zero_is_missing = bool(opts.get("zero_is_missing", False))
    duplicates = opts.get("duplicates", "error")
    if duplicates not in ("error", "mean"):
        raise DataError(f"duplicates={duplicates!r}: use 'error' or 'mean'")
    obs_path = p if p.is_file() else next((folder / f for f in OBS_FILES if (folder / f).is_file()), None)
    if obs_path is None:
        raise DataError(
            f"{folder}: no observations.csv or observations.parquet; create one with columns"
            " timestamp,node_id,value (see docs/your_own_city.md)"
        )
    of = obs_path.name
    obs = _read_table(obs_path, text_columns=("node_id",))
    _require(obs, REQUIRED, of, "Rename your columns to timestamp,node_id,value.")
    if len(obs) == 0:
        raise DataError(f"{of}: has a header but no rows; add one row per reading (timestamp,node_id,value)")
    obs = obs.reset_index(drop=True)

    ts = _timestamps(obs["timestamp"], of, dayfirst=opts.get("dayfirst"),
                     timestamp_format=opts.get("timestamp_format"), notes=notes)
    nid = _ids(obs["node_id"], of, "node_id")
    val = _numeric(obs["value"], of, "value", allow_missing=True)
    if zero_is_missing:
        val[val == 0] = np.nan
    if not np.isfinite(val).any():
        what = "empty or 0" if zero_is_missing else "empty"
        raise DataError(f"{of}: column value holds no reading (all {what}); fill in the readings")

    # covariates: the other numeric columns, city-wide (one value per timestamp)
    cov_names, cov_cols, text_cols = [], [], []
    for c in obs.columns:
        if c in REQUIRED or c.lower() in NOT_COVARIATES:
            continue
        col = obs[c]
        if _blank(col).all():
            warn(f"{of}: column {c!r} has no value in any row; it is ignored (fill it in to use it as a"
                 " covariate, or delete it)")
            continue
        parsed = pd.to_numeric(col, errors="coerce")
        if parsed.notna().sum() == 0:
            text_cols.append(c)  # a text column: not a covariate
            continue
        cov_cols.append(_numeric(col, of, c, allow_missing=True))
        cov_names.append(c)
    for c, v in zip(cov_names, cov_cols):
        _check_city_wide(v, ts, nid, of, c)
    if notes is not None and text_cols:
        notes.append(f"ignored text column(s): {', '.join(text_cols)}")

    # duplicate (timestamp, node_id) rows
    key = pd.DataFrame({"t": ts, "n": nid})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any() and duplicates == "error":
        rows = np.flatnonzero(dup)
        first = rows[0]
        second = next(r for r in rows[1:] if ts[r] == ts[first] and nid[r] == nid[first])
        raise DataError(
            f"{of}: {_pos(of, first)} and {_pos(of, second)} are both"
            f" readings of node {nid[first]!r} at {ts[first]}; keep one row per (timestamp, node_id)"
            " (e.g. average them first) or pass duplicates='mean'"
        )

    # the time grid: step k of every row, before anything of size T x N is allocated
    tn = ts.to_numpy().astype("datetime64[ns]").astype(np.int64)
    distinct = np.unique(tn)
    if interval is None:
        if distinct.size < 2:
            only = pd.Timestamp(distinct[0])
            raise DataError(f"{of}: all readings share one timestamp ({only}); a series needs at least 2")
        step = infer_interval(tn, nid.to_numpy())
        origin, pos = _snap(tn, step, of)
        how = "inferred from each node's consecutive readings"
    else:
        step = parse_interval(interval, "interval")
        origin = int(distinct[0])
        pos = (tn - origin) // step.value
        how = "given; each reading goes to the step at or before it"
    T = int(pos.max()) + 1
    if T < 2:
        raise DataError(
            f"{of}: the data span less than one interval ({fmt_interval(step)}); need at least 2 time steps"
        )
    grid = pd.DatetimeIndex(origin + step.value * np.arange(T, dtype=np.int64)).astype("datetime64[ns]")
    seen = list(dict.fromkeys(nid.tolist()))
    _check_grid(pos, tn, len(seen), step, of)
    if notes is not None:
        notes.insert(0, f"interval: {fmt_interval(step)} ({how})")

    # nodes: nodes.csv order when present, else first appearance in observations
    nodes_path = folder / NODES_FILE
    coords = None
    if nodes_path.is_file():
        order, coords_by_id = _read_nodes(nodes_path)
        missing = [n for n in seen if n not in coords_by_id]
        if missing:
            raise DataError(
                f"{NODES_FILE}: node {missing[0]!r} of {of} has no row; add '{missing[0]},lat,lon'"
                f" ({len(missing)} node(s) missing) or delete {NODES_FILE}"
            )
        observed = set(seen)
        node_ids = [n for n in order if n in observed]
        coords = np.array([coords_by_id[n] for n in node_ids], dtype=np.float64)
    else:
        node_ids = seen
    index = {n: i for i, n in enumerate(node_ids)}
    col = nid.map(index).to_numpy(dtype=np.int64)

    N = len(node_ids)
    total = np.zeros((T, N))
    count = np.zeros((T, N))
    ok = np.isfinite(val)
    np.add.at(total, (pos[ok], col[ok]), val[ok])
    np.add.at(count, (pos[ok], col[ok]), 1)
    mask = count > 0
    values = np.where(mask, total / np.maximum(count, 1), np.nan)
    coverage = float(mask.mean())
    if coverage < MIN_COVERAGE:
        warn(f"{of}: only {coverage:.1%} of the grid ({T} steps x {N} nodes, every {fmt_interval(step)}) holds"
             f" a reading; check the interval (pass the real one if {fmt_interval(step)} is wrong) and that"
             " node ids are spelled the same in every row")

    covariates = None
    if cov_names:
        cov = pd.DataFrame(np.stack(cov_cols, 1), columns=cov_names)
        cov["_pos"] = pos
        per_step = cov.groupby("_pos").mean().reindex(range(T))
        per_step = fill_covariates(per_step)
        covariates = per_step[cov_names].to_numpy(np.float32)

    edge_index, edge_weight = _read_edges(folder / EDGES_FILE, index, of, symmetric=symmetric)
    return Panel(
        values=values[:, :, None],
        mask=mask[:, :, None],
        timestamps=grid.to_numpy(),
        edge_index=edge_index,
        edge_weight=edge_weight,
        node_ids=node_ids,
        covariates=covariates,
        covariate_names=cov_names,
        coords=coords,
        name=name or folder.resolve().name,
        units=units,
    )


def _check_city_wide(v: np.ndarray, ts: pd.Series, nid: pd.Series, of: str, name: str) -> None:
    """A covariate must hold one value per timestamp (it is city-wide); refuse a per-node column."""
    rows = np.flatnonzero(np.isfinite(v))
    if rows.size < 2:
        return
    t = ts.to_numpy()[rows]
    g = pd.Series(v[rows]).groupby(t)
    lo = g.transform("min").to_numpy()
    hi = g.transform("max").to_numpy()
    bad = (hi - lo) > 1e-6 * np.maximum(1.0, np.abs(hi))
    if not bad.any():
        return
    k = int(np.argmax(bad))
    same = rows[t == t[k]]
    i, j = int(same[np.argmin(v[same])]), int(same[np.argmax(v[same])])
    raise DataError(
        f"{of}: column {name!r} differs between rows of the same time {pd.Timestamp(t[k])} ({_pos(of, i)},"
        f" node {nid[i]!r}: {v[i]:g}; {_pos(of, j)}, node {nid[j]!r}: {v[j]:g}); numeric columns other than"
        " value are city-wide covariates with one value per timestamp: delete the column (per-node"
        " covariates are not supported) or make it the same on every row of a timestamp"
    )


def _snap(tn: np.ndarray, step: pd.Timedelta, of: str) -> tuple[int, np.ndarray]:
    """``(origin, step k of each row)`` on an inferred grid: each reading goes to the nearest step.

    The grid is the clock-aligned one (steps at whole multiples of the interval since midnight,
    when the interval divides a day) if every reading is near one of its steps, else the one at the
    most common offset of the readings. A reading further than :data:`SNAP_TOLERANCE` of the
    interval from every step is refused (the interval is not the data's).
    """
    s = int(step.value)
    t0 = int(tn.min())
    rel = tn - t0
    off = (rel + s // 2) % s - s // 2  # offset from t0's grid, in [-s/2, s/2)
    if s >= 1_000_000_000:
        off = np.round(off / 1e9).astype(np.int64) * 1_000_000_000
    vals, counts = np.unique(off, return_counts=True)
    top = vals[counts == counts.max()]
    candidates = [int(top[np.argmin(np.abs(top))])]  # the most common offset (the smallest one on ties)
    day = 86_400_000_000_000
    if day % s == 0:
        clock = (0 - t0) % s  # t0 + clock is on the clock-aligned grid
        candidates.insert(0, clock if clock <= s // 2 else clock - s)
    for m in candidates:
        k = np.floor_divide(rel - m + s // 2, s)
        resid = rel - m - k * s
        far = np.abs(resid) > SNAP_TOLERANCE * s
        if not far.any():
            break
    if far.any():
        rows = np.flatnonzero(far)
        ex = ", ".join(f"{_pos(of, int(i))} {pd.Timestamp(tn[i])}" for i in rows[:3])
        raise DataError(
            f"{of}: {rows.size} reading(s) fall between the steps of the {fmt_interval(step)} interval found in"
            f" the data ({ex}); fix those timestamps, or pass the interval to use (interval='{fmt_interval(step)}'"
            " or --interval) to put every reading in the step at or before it"
        )
    moved = np.flatnonzero(resid != 0)
    if moved.size:
        i = int(moved[np.argmax(np.abs(resid[moved]))])
        warn(f"{of}: {moved.size} reading(s) are up to {_duration(abs(int(resid[i])))} off the"
             f" {fmt_interval(step)} grid; each was moved to the nearest step (e.g. {_pos(of, i)}"
             f" {pd.Timestamp(tn[i])})")
    k0 = int(k.min())
    return t0 + m + k0 * s, (k - k0).astype(np.int64)


def _check_grid(pos: np.ndarray, tn: np.ndarray, n_nodes: int, step: pd.Timedelta, of: str) -> None:
    """Refuse outlier dates and oversized grids, warn about long gaps, before allocating the grid."""
    T = int(pos.max()) + 1
    steps = np.unique(pos)
    gaps = np.diff(steps)
    gap = ""
    if gaps.size and gaps.max() > 1:
        g = int(np.argmax(gaps))
        a, b = int(steps[g]), int(steps[g + 1])
        frac = (b - a) / max(T - 1, 1)
        dur = _duration((b - a) * step.value)
        left = pos <= a
        first_after = int(np.flatnonzero(pos == b)[0])
        last_before = int(np.flatnonzero(pos == a)[0])
        gap = (f"no reading for {dur} between {pd.Timestamp(tn[last_before])} ({_pos(of, last_before)}) and"
               f" {pd.Timestamp(tn[first_after])} ({_pos(of, first_after)})")
        small = left if left.sum() <= (~left).sum() else ~left
        if frac > GAP_ERROR_FRACTION and small.sum() <= OUTLIER_SHARE * pos.size:
            rows = np.flatnonzero(small)
            ex = ", ".join(f"{_pos(of, int(i))} {pd.Timestamp(tn[i])}" for i in rows[:3])
            raise DataError(
                f"{of}: {rows.size} row(s) lie {dur} away from the other {pos.size - rows.size} ({ex}), so the"
                f" time grid would be {frac:.0%} empty; fix their dates (a typo?) or delete them"
            )
        if frac > GAP_WARN_FRACTION and b - a > 2:  # (a single missing step is not worth a warning)
            warn(f"{of}: {gap}, {frac:.0%} of the span; those steps stay masked (not observed); check the"
                 " dates if that is unexpected")
    if T * n_nodes > MAX_GRID_CELLS:
        raise DataError(
            f"{of}: the time grid would hold {T:,} steps x {n_nodes:,} nodes = {T * n_nodes:,} cells, above the"
            f" limit of {MAX_GRID_CELLS:,}{'; ' + gap if gap else ''}; pass a coarser interval (e.g."
            " interval='1h') or split the data"
        )
    if T > MAX_EMPTY_RATIO * steps.size and T > 100_000:
        raise DataError(
            f"{of}: an interval of {fmt_interval(step)} makes {T} steps for {steps.size} distinct timestamps;"
            " pass the real interval, e.g. interval='5min'"
        )


def grid_findings(panel: Panel) -> list[str]:
    """Coverage and the longest stretch without any reading, for ``stmgt data check``."""
    m = panel.mask[..., 0]
    T, N = m.shape
    out = [f"coverage: {m.mean():.1%} of {T} steps x {N} nodes hold a reading"]
    any_obs = m.any(axis=1)
    best, run, end = 0, 0, 0
    for i, o in enumerate(any_obs.tolist()):
        run = 0 if o else run + 1
        if run > best:
            best, end = run, i
    if best == 0:
        out.append("longest gap: none (every step has a reading)")
    else:
        step = panel.timestamps[1] - panel.timestamps[0]
        start = pd.Timestamp(panel.timestamps[end - best + 1])
        stop = pd.Timestamp(panel.timestamps[end])
        dur = _duration(int(best * step.astype("timedelta64[ns]").astype(np.int64)))
        out.append(f"longest gap: {best} step(s) ({dur}) without any reading, {start} to {stop}")
    return out


def _read_nodes(path: Path) -> tuple[list[str], dict[str, tuple[float, float]]]:
    f = NODES_FILE
    df = _read_table(path, text_columns=("node_id",))
    df = df.rename(columns={"latitude": "lat", "longitude": "lon"})
    _require(df, ("node_id", "lat", "lon"), f, "nodes.csv needs node_id,lat,lon (degrees WGS84).")
    ids = _ids(df["node_id"], f, "node_id")
    lat = _numeric(df["lat"], f, "lat", allow_missing=False)
    lon = _numeric(df["lon"], f, "lon", allow_missing=False)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise DataError(f"{_where(f, i)}: node_id {ids[i]!r} is listed twice; keep one row per node")
    bad = (np.abs(lat) > 90) | (np.abs(lon) > 180)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{_where(f, i)}: lat {lat[i]}, lon {lon[i]} is not a WGS84 position; give degrees"
            " (lat in [-90, 90], lon in [-180, 180])"
        )
    return ids.tolist(), {n: (a, b) for n, a, b in zip(ids, lat, lon)}


def _read_edges(
    path: Path, index: dict[str, int], obs_file: str, *, symmetric: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    f = EDGES_FILE
    if not path.is_file():
        raise DataError(
            f"{path.parent}: no {f}; create it with columns source,target[,weight] naming node ids of"
            f" {obs_file} (a header-only file means no graph)"
        )
    df = _read_table(path, text_columns=("source", "target"))
    _require(df, ("source", "target"), f, "edges.csv needs source,target and an optional weight.")
    if len(df) == 0:
        return np.zeros((2, 0), np.int64), None
    src = _ids(df["source"], f, "source")
    dst = _ids(df["target"], f, "target")
    for name, s in (("source", src), ("target", dst)):
        unknown = ~s.isin(list(index)).to_numpy()
        if unknown.any():
            i = int(np.argmax(unknown))
            raise DataError(
                f"{_where(f, i)}: {name} {s[i]!r} is not a node_id in {obs_file}; fix the id or delete the"
                " row"
            )
    weight = None
    if "weight" in df.columns:
        weight = _numeric(df["weight"], f, "weight", allow_missing=True, hint="")
        bad = ~np.isfinite(weight)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{_where(f, i)}: weight is empty/NaN; give every edge a number or drop the weight column"
            )
        if (weight < 0).any():
            i = int(np.argmax(weight < 0))
            raise DataError(f"{_where(f, i)}: weight {weight[i]} is negative; edge weights must be >= 0")
    a = src.map(index).to_numpy(np.int64)
    b = dst.map(index).to_numpy(np.int64)
    pairs = pd.DataFrame({"a": a, "b": b})
    dup = pairs.duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        j = int(np.flatnonzero((a == a[i]) & (b == b[i]))[0])
        raise DataError(
            f"{f}: {_pos(f, j)} and {_pos(f, i)} both give edge {src[i]} -> {dst[i]}; keep one row per edge"
        )
    keep = a != b  # self loops carry no information for message passing
    a, b = a[keep], b[keep]
    w = None if weight is None else weight[keep]
    if symmetric:
        have = set(zip(a.tolist(), b.tolist()))
        extra = [k for k, (x, y) in enumerate(zip(a.tolist(), b.tolist())) if (y, x) not in have]
        a, b = np.concatenate([a, b[extra]]), np.concatenate([b, a[extra]])
        if w is not None:
            w = np.concatenate([w, w[extra]])
    return np.stack([a, b]).astype(np.int64), None if w is None else w.astype(np.float32)
