"""Your own city: long-format observations, an edge list and optional node coordinates.

A folder with three plain files (see ``docs/your_own_city.md`` for a walk-through):

``observations.csv`` (or ``observations.parquet``, preferred when both exist)
    one row per reading, long format. Required columns ``timestamp, node_id, value``:

    * ``timestamp``: any date/time pandas parses (ISO 8601 ``2024-05-01 08:05:00`` is safest).
      Times are taken as local wall-clock time; a UTC offset, if present, is dropped (the local
      time is kept) so calendar features follow the city's day.
    * ``node_id``: the sensor or road-segment name (read as text: ``007`` stays ``007``).
    * ``value``: the forecast target (speed, flow, ...), a number. An empty cell or ``NaN``
      means "not observed"; a missing row means the same. ``0`` is a real reading unless
      ``zero_is_missing=True``.

    Every other column whose values are all numbers (e.g. ``temperature, precipitation,
    wind_speed``) becomes a global covariate: averaged over the rows of each time step, then
    forward/back filled over steps without a reading. Columns of text, and ``lat``/``lon``, are
    ignored.
``edges.csv``
    ``source, target[, weight]``: directed edges between node ids of ``observations``. List both
    directions for a two-way road (or pass ``symmetric=True``). ``weight`` must be a finite,
    non-negative number. Self loops are dropped. A header-only file means "no graph".
``nodes.csv`` (optional)
    ``node_id, lat, lon`` in WGS84 degrees; when present it fixes the node order and gives the
    coordinates. Nodes listed here that have no observation are ignored.

Time grid: the interval is the most common gap between consecutive distinct timestamps (or the
``interval`` argument, e.g. ``"5min"``, ``"1h"``). The grid starts at the first timestamp; each
reading goes to the grid step at or before it, so readings a few seconds late still land on their
step (several readings of one node in one step are averaged). Grid steps without a reading are
masked (``mask=False``); values are never filled.

Every format problem raises a one-line :class:`~stmgt.errors.DataError` naming the file, the line
(``line 1`` is the CSV header) or column, and the fix.

This module also holds the small helpers the other loaders share (:func:`parse_interval`,
:func:`regular_grid`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.panel import Panel
from stmgt.errors import DataError

OBS_FILES = ("observations.parquet", "observations.csv")
EDGES_FILE = "edges.csv"
NODES_FILE = "nodes.csv"
REQUIRED = ("timestamp", "node_id", "value")
NOT_COVARIATES = {"lat", "lon", "latitude", "longitude", "node_name"}
MAX_EMPTY_RATIO = 50  # grid steps per distinct timestamp above which the interval is probably wrong


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


def fill_covariates(frame: pd.DataFrame) -> pd.DataFrame:
    """Forward- then back-fill covariate gaps (so a panel's covariates have no NaN)."""
    return frame.ffill().bfill()


# ---------------------------------------------------------------------- file reading
def _pos(file: str, i: int) -> str:
    """Human position of data row ``i`` (0-based): CSV line numbers count the header as line 1."""
    return f"line {i + 2}" if file.endswith(".csv") else f"row {i}"


def _where(file: str, i: int) -> str:
    return f"{file} {_pos(file, i)}"


def _read_table(path: Path, *, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise DataError(
            f"{path}: the file is empty; it needs a header row and data rows (see docs/your_own_city.md)"
        )
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={c: str for c in text_columns}, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = path.suffix[1:].upper()
        raise DataError(f"{path}: cannot be read as {kind} ({msg}); save it as UTF-8 {kind}") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _require(df: pd.DataFrame, cols: tuple[str, ...], file: str, hint: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise DataError(
            f"{file}: missing column(s) {', '.join(missing)}; found: {found}. {hint}"
        )


def _numeric(
    col: pd.Series, file: str, name: str, *, allow_missing: bool, hint: str = " or leave the cell empty"
) -> np.ndarray:
    """Column -> float64; a non-number (text, inf) raises naming the first bad row."""
    raw = col
    num = pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy(copy=True)
    blank = raw.isna().to_numpy()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        blank = blank | raw.astype(str).str.strip().isin(["", "nan", "NaN", "NA", "null"]).to_numpy()
    bad = (~np.isfinite(num) & ~blank) | (np.isinf(num))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{_where(file, i)}: {name} {raw.iloc[i]!r} is not a number; write a plain number"
            f" (decimal point '.'){hint if allow_missing else ''}"
        )
    if not allow_missing and blank.any():
        i = int(np.argmax(blank))
        raise DataError(f"{_where(file, i)}: {name} is empty; every row needs a {name}")
    num[blank] = np.nan
    return num


def _timestamps(col: pd.Series, file: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        ts = col
    else:
        text = col.astype("string").str.strip()
        empty = text.isna() | (text == "")
        if empty.any():
            i = int(np.argmax(empty.to_numpy()))
            raise DataError(f"{_where(file, i)}: timestamp is empty; every row needs a timestamp")
        try:
            ts = pd.to_datetime(text, errors="coerce")
        except (ValueError, TypeError):  # mixed UTC offsets
            ts = pd.to_datetime(text, errors="coerce", utc=True)
        bad = ts.isna()
        if bad.any():  # rows in another layout than the first one: try them one by one
            try:
                retry = pd.to_datetime(text[bad], errors="coerce", format="mixed")
            except (ValueError, TypeError):  # mixed offsets among the retried rows
                retry = pd.to_datetime(text[bad], errors="coerce", format="mixed", utc=True)
            if getattr(retry.dt, "tz", None) is not None:
                retry = retry.dt.tz_localize(None)
            if getattr(ts.dt, "tz", None) is not None:
                ts = ts.dt.tz_localize(None)
            ts = ts.astype("datetime64[ns]")
            ts[bad] = retry.astype("datetime64[ns]")
            bad = ts.isna()
            if bad.any():
                i = int(np.argmax(bad.to_numpy()))
                raise DataError(
                    f"{_where(file, i)}: timestamp {col.iloc[i]!r} is not a date/time; write it as"
                    " ISO 8601, e.g. 2024-05-01 08:05:00"
                )
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_localize(None)  # keep the local wall-clock time
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
def load_city(
    path: str | Path,
    *,
    interval: str | pd.Timedelta | None = None,
    name: str | None = None,
    units: str = "",
    symmetric: bool = False,
    zero_is_missing: bool = False,
    duplicates: str = "error",
) -> Panel:
    """Load a city folder (``observations.csv|parquet``, ``edges.csv``, optional ``nodes.csv``).

    Args:
        path: the folder, or the observations file inside it.
        interval: grid interval such as ``"5min"``; default: the most common gap in the data.
        name: dataset name; default: the folder name.
        units: units of ``value`` for reports (e.g. ``"km/h"``).
        symmetric: also add ``target -> source`` for every edge that lacks its reverse.
        zero_is_missing: treat ``value == 0`` as not observed (loop detectors often write 0).
        duplicates: what to do with two rows for the same (timestamp, node_id): ``"error"``
            (default) or ``"mean"`` (average them).
    """
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if not folder.is_dir():
        raise DataError(f"{p}: no such folder; point to the folder holding observations.csv and edges.csv")
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

    ts = _timestamps(obs["timestamp"], of)
    nid = _ids(obs["node_id"], of, "node_id")
    val = _numeric(obs["value"], of, "value", allow_missing=True)
    if zero_is_missing:
        val[val == 0] = np.nan
    if not np.isfinite(val).any():
        what = "empty or 0" if zero_is_missing else "empty"
        raise DataError(f"{of}: column value holds no reading (all {what}); fill in the readings")

    # covariates: the other numeric columns
    cov_names, cov_cols = [], []
    for c in obs.columns:
        if c in REQUIRED or c.lower() in NOT_COVARIATES:
            continue
        col = obs[c]
        parsed = pd.to_numeric(col, errors="coerce")
        if parsed.notna().sum() == 0:
            continue  # a text column (or entirely empty): not a covariate
        cov_cols.append(_numeric(col, of, c, allow_missing=True))
        cov_names.append(c)

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

    # the time grid
    distinct = np.unique(ts.to_numpy())
    if interval is None:
        if distinct.size < 2:
            only = pd.Timestamp(distinct[0])
            raise DataError(f"{of}: all readings share one timestamp ({only}); a series needs at least 2")
        step = most_common_gap(distinct)
    else:
        step = parse_interval(interval, "interval")
    grid = regular_grid(distinct[0], distinct[-1], step)
    if len(grid) < 2:
        raise DataError(f"{of}: the data span less than one interval ({step}); need at least 2 time steps")
    if len(grid) > MAX_EMPTY_RATIO * distinct.size and len(grid) > 100_000:
        raise DataError(
            f"{of}: an interval of {step} makes {len(grid)} steps for {distinct.size} distinct timestamps;"
            " pass the real interval, e.g. interval='5min'"
        )
    pos = ((ts.to_numpy() - grid[0].to_datetime64()) // step.to_timedelta64()).astype(np.int64)

    # nodes: nodes.csv order when present, else first appearance in observations
    nodes_path = folder / NODES_FILE
    seen = list(dict.fromkeys(nid.tolist()))
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

    T, N = len(grid), len(node_ids)
    total = np.zeros((T, N))
    count = np.zeros((T, N))
    ok = np.isfinite(val)
    np.add.at(total, (pos[ok], col[ok]), val[ok])
    np.add.at(count, (pos[ok], col[ok]), 1)
    mask = count > 0
    values = np.where(mask, total / np.maximum(count, 1), np.nan)

    covariates = None
    if cov_names:
        cov = pd.DataFrame(np.stack(cov_cols, 1), columns=cov_names)
        cov["_pos"] = pos
        per_step = cov.groupby("_pos").mean().reindex(range(T))
        per_step = fill_covariates(per_step)
        empty = [c for c in cov_names if per_step[c].isna().all()]
        if empty:
            raise DataError(f"{of}: covariate column {empty[0]!r} has no value; fill it or drop the column")
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
