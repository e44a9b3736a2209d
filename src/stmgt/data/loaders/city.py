"""Your own city: long-format observations, an edge list and optional node coordinates.

A folder with three plain files (see ``docs/your_own_city.md`` for a walk-through):

``observations.csv`` (or ``observations.parquet``, preferred when both exist)
    one row per reading, long format. Required columns ``timestamp, node_id, value``:

    * ``timestamp``: any date/time pandas parses (ISO 8601 ``2024-05-01 08:05:00`` is safest).
      Times are taken as local wall-clock time; a UTC offset, if present, is dropped (the local
      time is kept) so calendar features follow the city's day. ``03/04/2024``-style dates are
      read in the one order the file allows (a number above 12 first: day-first); when no date
      tells, ``dayfirst`` (or ``timestamp_format``) must say it
      (:func:`~stmgt.data.tables.parse_timestamps`).
    * ``node_id``: the sensor or road-segment name (read as text: ``007`` stays ``007``).
    * ``value``: the forecast target (speed, flow, ...), a number. An empty cell or one of
      :data:`~stmgt.data.tables.NA_TOKENS` (``NA, NaN, null, n/a, #N/A``, any case) means "not observed"; a missing row
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

This module also holds the small time-grid helpers the other loaders share (:func:`parse_interval`,
:func:`regular_grid`, :func:`most_common_gap`, :func:`fill_covariates`); reading the tables
(files, number, id and timestamp columns) is :mod:`stmgt.data.tables`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.panel import Panel
from stmgt.data.tables import (
    id_column,
    missing_cells,
    numeric_column,
    parse_timestamps,
    read_table,
    require_columns,
    row_location,
    row_position,
)
from stmgt.errors import DataError, warn

OBS_FILES = ("observations.parquet", "observations.csv")
EDGES_FILE = "edges.csv"
NODES_FILE = "nodes.csv"
REQUIRED = ("timestamp", "node_id", "value")
NOT_COVARIATES = {"lat", "lon", "latitude", "longitude", "node_name"}
MAX_EMPTY_RATIO = 50  # grid steps per distinct timestamp above which the interval is probably wrong
OPTIONS_FILE = "city.json"
MAX_GRID_CELLS = 50_000_000  # steps x nodes above which a grid is refused (memory)
MIN_COVERAGE = 0.5  # warn when fewer grid cells than this hold a reading
GAP_WARN_FRACTION = 0.25  # warn when no node reads for longer than this share of the span
GAP_ERROR_FRACTION = 0.5  # refuse a gap longer than this share of the span ...
OUTLIER_SHARE = 0.01  # ... when one side of it holds at most this share of the rows (outlier dates)
SNAP_TOLERANCE = 0.1  # an inferred grid moves readings at most this share of the interval
#: Intervals an inferred one is rounded to when within 5 %.
NICE_SECONDS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
                21600, 43200, 86400, 604800)


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
    return load_city_with_notes(path, None, interval=interval, name=name, units=units, symmetric=symmetric,
                                zero_is_missing=zero_is_missing, duplicates=duplicates, dayfirst=dayfirst,
                                timestamp_format=timestamp_format)


def load_city_with_notes(path: str | Path, notes: list[str] | None, *, name: str | None = None, **given) -> Panel:
    """:func:`load_city`, appending what ``stmgt data check`` reports to ``notes`` (one line each).

    ``given`` are :func:`load_city`'s options (``None`` = not given); ``notes`` may be ``None``.
    """
    folder, opts = _folder_options(path, given)
    obs_path = _observations_path(Path(path), folder)
    of = obs_path.name
    obs = _read_observations(obs_path)
    ts = parse_timestamps(obs["timestamp"], of, dayfirst=opts.get("dayfirst"),
                          timestamp_format=opts.get("timestamp_format"), notes=notes)
    nid = id_column(obs["node_id"], of, "node_id")
    val = _read_values(obs["value"], of, bool(opts.get("zero_is_missing", False)))
    cov_names, cov_cols = _covariate_columns(obs, ts, nid, of, notes)
    _check_duplicates(ts, nid, of, opts.get("duplicates", "error"))
    seen = list(dict.fromkeys(nid.tolist()))
    grid, pos, step = _time_grid(ts, nid, len(seen), of, opts.get("interval"), notes)
    node_ids, coords = _node_order(folder / NODES_FILE, seen, of)
    index = {n: i for i, n in enumerate(node_ids)}
    values, mask = _grid_values(val, pos, nid.map(index).to_numpy(dtype=np.int64), len(grid), len(node_ids),
                                step, of)
    edge_index, edge_weight = _read_edges(folder / EDGES_FILE, index, of,
                                          symmetric=bool(opts.get("symmetric", False)))
    return Panel(
        values=values[:, :, None],
        mask=mask[:, :, None],
        timestamps=grid.to_numpy(),
        edge_index=edge_index,
        edge_weight=edge_weight,
        node_ids=node_ids,
        covariates=_covariates_per_step(cov_names, cov_cols, pos, len(grid)),
        covariate_names=cov_names,
        coords=coords,
        name=name or folder.resolve().name,
        units=opts.get("units", ""),
    )


def _folder_options(path: str | Path, given: dict) -> tuple[Path, dict]:
    """``(folder, options)``: ``city.json`` overridden by the given (not ``None``) options, checked."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if not folder.is_dir():
        raise DataError(f"{p}: no such folder; point to the folder holding observations.csv and edges.csv")
    opts = read_options(folder)
    opts.update({k: v for k, v in given.items() if v is not None})
    duplicates = opts.get("duplicates", "error")
    if duplicates not in ("error", "mean"):
        raise DataError(f"duplicates={duplicates!r}: use 'error' or 'mean'")
    return folder, opts


def _observations_path(p: Path, folder: Path) -> Path:
    """The observations file: ``p`` itself, else the first of :data:`OBS_FILES` in ``folder``."""
    obs_path = p if p.is_file() else next((folder / f for f in OBS_FILES if (folder / f).is_file()), None)
    if obs_path is None:
        raise DataError(
            f"{folder}: no observations.csv or observations.parquet; create one with columns"
            " timestamp,node_id,value (see docs/your_own_city.md)"
        )
    return obs_path


def _read_observations(obs_path: Path) -> pd.DataFrame:
    """The observations table (index ``0..rows-1``); refused without the required columns or rows."""
    of = obs_path.name
    obs = read_table(obs_path, text_columns=("node_id",))
    require_columns(obs, REQUIRED, of, "Rename your columns to timestamp,node_id,value.")
    if len(obs) == 0:
        raise DataError(f"{of}: has a header but no rows; add one row per reading (timestamp,node_id,value)")
    return obs.reset_index(drop=True)


def _read_values(col: pd.Series, of: str, zero_is_missing: bool) -> np.ndarray:
    """The ``value`` column as ``float64 [rows]`` (NaN = not observed); refused when none is observed."""
    val = numeric_column(col, of, "value", allow_missing=True)
    if zero_is_missing:
        val[val == 0] = np.nan
    if not np.isfinite(val).any():
        what = "empty or 0" if zero_is_missing else "empty"
        raise DataError(f"{of}: column value holds no reading (all {what}); fill in the readings")
    return val


def _covariate_columns(
    obs: pd.DataFrame, ts: pd.Series, nid: pd.Series, of: str, notes: list[str] | None
) -> tuple[list[str], list[np.ndarray]]:
    """``(names, float64 [rows] columns)`` of the numeric, city-wide other columns (the covariates)."""
    cov_names, cov_cols, text_cols = [], [], []
    for c in obs.columns:
        if c in REQUIRED or c.lower() in NOT_COVARIATES:
            continue
        col = obs[c]
        if missing_cells(col).all():
            warn(f"{of}: column {c!r} has no value in any row; it is ignored (fill it in to use it as a"
                 " covariate, or delete it)")
            continue
        parsed = pd.to_numeric(col, errors="coerce")
        if parsed.notna().sum() == 0:
            text_cols.append(c)  # a text column: not a covariate
            continue
        cov_cols.append(numeric_column(col, of, c, allow_missing=True))
        cov_names.append(c)
    for c, v in zip(cov_names, cov_cols):
        _check_city_wide(v, ts, nid, of, c)
    if notes is not None and text_cols:
        notes.append(f"ignored text column(s): {', '.join(text_cols)}")
    return cov_names, cov_cols


def _check_duplicates(ts: pd.Series, nid: pd.Series, of: str, duplicates: str) -> None:
    """With ``duplicates="error"``, refuse two rows for one (timestamp, node_id), naming both."""
    key = pd.DataFrame({"t": ts, "n": nid})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any() and duplicates == "error":
        rows = np.flatnonzero(dup)
        first = rows[0]
        second = next(r for r in rows[1:] if ts[r] == ts[first] and nid[r] == nid[first])
        raise DataError(
            f"{of}: {row_position(of, first)} and {row_position(of, second)} are both"
            f" readings of node {nid[first]!r} at {ts[first]}; keep one row per (timestamp, node_id)"
            " (e.g. average them first) or pass duplicates='mean'"
        )


def _time_grid(
    ts: pd.Series, nid: pd.Series, n_nodes: int, of: str, interval, notes: list[str] | None
) -> tuple[pd.DatetimeIndex, np.ndarray, pd.Timedelta]:
    """``(grid [T], step k of each row int64 [rows], interval)``, checked before anything ``T x N``
    is allocated; the interval is inferred (nearest step) or given (step at or before)."""
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
    _check_grid(pos, tn, n_nodes, step, of)
    if notes is not None:
        notes.insert(0, f"interval: {fmt_interval(step)} ({how})")
    return grid, pos, step


def _node_order(nodes_path: Path, seen: list[str], of: str) -> tuple[list[str], np.ndarray | None]:
    """``(node ids, coords [N, 2] or None)``: ``nodes.csv`` order when present, else first appearance."""
    if not nodes_path.is_file():
        return seen, None
    order, coords_by_id = _read_nodes(nodes_path)
    missing = [n for n in seen if n not in coords_by_id]
    if missing:
        raise DataError(
            f"{NODES_FILE}: node {missing[0]!r} of {of} has no row; add '{missing[0]},lat,lon'"
            f" ({len(missing)} node(s) missing) or delete {NODES_FILE}"
        )
    observed = set(seen)
    node_ids = [n for n in order if n in observed]
    return node_ids, np.array([coords_by_id[n] for n in node_ids], dtype=np.float64)


def _grid_values(
    val: np.ndarray, pos: np.ndarray, col: np.ndarray, T: int, N: int, step: pd.Timedelta, of: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(values [T, N] float64 (NaN unobserved), mask [T, N] bool)``: the mean reading per cell;
    warns when fewer than :data:`MIN_COVERAGE` of the cells hold one."""
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
    return values, mask


def _covariates_per_step(
    cov_names: list[str], cov_cols: list[np.ndarray], pos: np.ndarray, T: int
) -> np.ndarray | None:
    """``[T, C]`` float32 covariates: the mean over each step's rows, gaps filled; ``None`` without any."""
    if not cov_names:
        return None
    cov = pd.DataFrame(np.stack(cov_cols, 1), columns=cov_names)
    cov["_pos"] = pos
    per_step = cov.groupby("_pos").mean().reindex(range(T))
    per_step = fill_covariates(per_step)
    return per_step[cov_names].to_numpy(np.float32)


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
        f"{of}: column {name!r} differs between rows of the same time {pd.Timestamp(t[k])} ({row_position(of, i)},"
        f" node {nid[i]!r}: {v[i]:g}; {row_position(of, j)}, node {nid[j]!r}: {v[j]:g}); numeric columns other than"
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
        ex = ", ".join(f"{row_position(of, int(i))} {pd.Timestamp(tn[i])}" for i in rows[:3])
        raise DataError(
            f"{of}: {rows.size} reading(s) fall between the steps of the {fmt_interval(step)} interval found in"
            f" the data ({ex}); fix those timestamps, or pass the interval to use (interval='{fmt_interval(step)}'"
            " or --interval) to put every reading in the step at or before it"
        )
    moved = np.flatnonzero(resid != 0)
    if moved.size:
        i = int(moved[np.argmax(np.abs(resid[moved]))])
        warn(f"{of}: {moved.size} reading(s) are up to {_duration(abs(int(resid[i])))} off the"
             f" {fmt_interval(step)} grid; each was moved to the nearest step (e.g. {row_position(of, i)}"
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
        gap = (f"no reading for {dur} between {pd.Timestamp(tn[last_before])} ({row_position(of, last_before)}) and"
               f" {pd.Timestamp(tn[first_after])} ({row_position(of, first_after)})")
        small = left if left.sum() <= (~left).sum() else ~left
        if frac > GAP_ERROR_FRACTION and small.sum() <= OUTLIER_SHARE * pos.size:
            rows = np.flatnonzero(small)
            ex = ", ".join(f"{row_position(of, int(i))} {pd.Timestamp(tn[i])}" for i in rows[:3])
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
    """``(node ids in file order, id -> (lat, lon))`` from ``nodes.csv``; duplicates and non-WGS84 refused."""
    f = NODES_FILE
    df = read_table(path, text_columns=("node_id",))
    df = df.rename(columns={"latitude": "lat", "longitude": "lon"})
    require_columns(df, ("node_id", "lat", "lon"), f, "nodes.csv needs node_id,lat,lon (degrees WGS84).")
    ids = id_column(df["node_id"], f, "node_id")
    lat = numeric_column(df["lat"], f, "lat", allow_missing=False)
    lon = numeric_column(df["lon"], f, "lon", allow_missing=False)
    dup = ids.duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise DataError(f"{row_location(f, i)}: node_id {ids[i]!r} is listed twice; keep one row per node")
    bad = (np.abs(lat) > 90) | (np.abs(lon) > 180)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{row_location(f, i)}: lat {lat[i]}, lon {lon[i]} is not a WGS84 position; give degrees"
            " (lat in [-90, 90], lon in [-180, 180])"
        )
    return ids.tolist(), {n: (a, b) for n, a, b in zip(ids, lat, lon)}


def _read_edges(
    path: Path, index: dict[str, int], obs_file: str, *, symmetric: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(edge_index [2, E] int64, edge_weight [E] float32 or None)`` from ``edges.csv``: unknown ids,
    bad weights and duplicate edges refused, self loops dropped, reverses added when ``symmetric``."""
    f = EDGES_FILE
    if not path.is_file():
        raise DataError(
            f"{path.parent}: no {f}; create it with columns source,target[,weight] naming node ids of"
            f" {obs_file} (a header-only file means no graph)"
        )
    df = read_table(path, text_columns=("source", "target"))
    require_columns(df, ("source", "target"), f, "edges.csv needs source,target and an optional weight.")
    if len(df) == 0:
        return np.zeros((2, 0), np.int64), None
    src = id_column(df["source"], f, "source")
    dst = id_column(df["target"], f, "target")
    for name, s in (("source", src), ("target", dst)):
        unknown = ~s.isin(list(index)).to_numpy()
        if unknown.any():
            i = int(np.argmax(unknown))
            raise DataError(
                f"{row_location(f, i)}: {name} {s[i]!r} is not a node_id in {obs_file}; fix the id or delete the"
                " row"
            )
    weight = None
    if "weight" in df.columns:
        weight = numeric_column(df["weight"], f, "weight", allow_missing=True, hint="")
        bad = ~np.isfinite(weight)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{row_location(f, i)}: weight is empty/NaN; give every edge a number or drop the weight column"
            )
        if (weight < 0).any():
            i = int(np.argmax(weight < 0))
            raise DataError(f"{row_location(f, i)}: weight {weight[i]} is negative; edge weights must be >= 0")
    a = src.map(index).to_numpy(np.int64)
    b = dst.map(index).to_numpy(np.int64)
    pairs = pd.DataFrame({"a": a, "b": b})
    dup = pairs.duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        j = int(np.flatnonzero((a == a[i]) & (b == b[i]))[0])
        raise DataError(
            f"{f}: {row_position(f, j)} and {row_position(f, i)} both give edge {src[i]} -> {dst[i]};"
            " keep one row per edge"
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
