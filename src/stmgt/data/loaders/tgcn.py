"""T-GCN style CSV pairs: ``<prefix>_speed.csv`` + ``<prefix>_adj.csv`` (Los-loop, SZ-taxi).

Format (Zhao et al., "T-GCN: A Temporal Graph Convolutional Network for Traffic Prediction",
IEEE T-ITS 2020, https://github.com/lehaifeng/T-GCN ``data/``):

* ``<prefix>_speed.csv``: a header row of ``N`` sensor ids, then one row per time step and one
  column per sensor (``[T, N]``). There is **no timestamp column**.
* ``<prefix>_adj.csv``: an ``N x N`` matrix without a header, in the sensor order of the speed file.
  For Los-loop it is weighted and symmetric (Gaussian kernel of road distance, cut below 0.1, with
  1 on the diagonal), for SZ-taxi 0/1. Every non-zero off-diagonal entry ``A[i, j]`` becomes a
  directed edge ``i -> j`` with weight ``A[i, j]``; self loops are dropped.

Los-loop (``los_*``): a one-week slice of METR-LA, 207 sensors x 2016 steps of 5 minutes, speed in
**mph**. The paper gives the span as 2012-03-01 .. 2012-03-07, so the timestamps are generated from
``start = 2012-03-01 00:00`` every 5 minutes (both overridable). Missing readings were already
filled by linear interpolation before release: nothing is treated as missing except NaN (zeros, if
any, are real values). When ``metr_la_graph/graph_sensor_locations.csv`` (DCRNN's METR-LA sensor
locations, columns ``index,sensor_id,latitude,longitude``) is in the folder, the nodes get
coordinates, matched by sensor id.

SZ-taxi (``sz_*``): 156 Shenzhen roads, 15-minute steps from 2015-01-01, km/h (defaults below).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.loaders.city import parse_interval, regular_grid
from stmgt.data.panel import Panel
from stmgt.errors import DataError

#: Defaults per file prefix: (name, start, interval, units).
KNOWN = {
    "los": ("los_loop", "2012-03-01 00:00", "5min", "mph"),
    "sz": ("sz_taxi", "2015-01-01 00:00", "15min", "km/h"),
}
LOCATION_FILES = ("metr_la_graph/graph_sensor_locations.csv", "graph_sensor_locations.csv")


def find_pair(folder: Path) -> tuple[Path, Path] | None:
    """The ``(<prefix>_speed.csv, <prefix>_adj.csv)`` pair in ``folder`` (``los_`` first), or None."""
    speeds = sorted(folder.glob("*_speed.csv"), key=lambda p: (not p.name.startswith("los_"), p.name))
    for sp in speeds:
        adj = sp.with_name(sp.name[: -len("_speed.csv")] + "_adj.csv")
        if adj.is_file():
            return sp, adj
    return None


def load_tgcn(
    path: str | Path,
    *,
    start: str | None = None,
    interval: str | None = None,
    name: str | None = None,
    units: str | None = None,
    coords: bool = True,
) -> Panel:
    """Load a T-GCN folder (or its ``*_speed.csv``).

    Args:
        path: folder holding ``<prefix>_speed.csv`` and ``<prefix>_adj.csv``, or the speed file.
        start: first timestamp; default per dataset (Los-loop ``2012-03-01 00:00``).
        interval: step between rows; default per dataset (Los-loop ``"5min"``).
        name, units: default per dataset (Los-loop ``"los_loop"``, ``"mph"``).
        coords: attach METR-LA sensor coordinates when the locations file is present.
    """
    p = Path(path)
    if p.is_file():
        speed = p
        adj = p.with_name(p.name.replace("_speed.csv", "_adj.csv"))
        if not p.name.endswith("_speed.csv") or not adj.is_file():
            raise DataError(f"{p}: expected <prefix>_speed.csv with <prefix>_adj.csv beside it")
    else:
        pair = find_pair(p) if p.is_dir() else None
        if pair is None:
            raise DataError(
                f"{p}: no <prefix>_speed.csv + <prefix>_adj.csv pair (e.g. los_speed.csv and los_adj.csv)"
            )
        speed, adj = pair
    prefix = speed.name[: -len("_speed.csv")]
    d_name, d_start, d_interval, d_units = KNOWN.get(prefix, (prefix, "2012-03-01 00:00", "5min", ""))

    try:
        df = pd.read_csv(speed)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise DataError(f"{speed.name}: cannot be read as CSV ({str(e).strip().splitlines()[0]})") from None
    if len(df) < 2:
        raise DataError(f"{speed.name}: has {len(df)} data rows; a series needs at least 2")
    try:
        values = df.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad_cells = df.apply(pd.to_numeric, errors="coerce").isna() & df.notna()
        bad = bad_cells.any().idxmax()
        row = int(np.argmax(bad_cells[bad].to_numpy()))
        raise DataError(
            f"{speed.name} line {row + 2}, column {bad}: {df[bad].iloc[row]!r} is not a number"
        ) from None
    node_ids = [str(c).strip() for c in df.columns]
    T, N = values.shape

    try:
        A = pd.read_csv(adj, header=None).to_numpy(dtype=np.float64)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, TypeError, ValueError) as e:
        why = str(e).strip().splitlines()[0]
        raise DataError(f"{adj.name}: not a numeric matrix without header ({why})") from None
    if A.shape != (N, N):
        raise DataError(f"{adj.name}: matrix is {A.shape[0]}x{A.shape[1]} but {speed.name} has {N} sensors")
    if not np.isfinite(A).all() or (A < 0).any():
        i, j = np.argwhere(~np.isfinite(A) | (A < 0))[0]
        raise DataError(f"{adj.name}: entry ({i}, {j}) is {A[i, j]}; weights must be finite and >= 0")
    off = A.copy()
    np.fill_diagonal(off, 0.0)
    src, dst = np.nonzero(off)

    step = parse_interval(interval or d_interval, "interval")
    try:
        t0 = pd.Timestamp(start or d_start)
    except (TypeError, ValueError):
        raise DataError(f"start={start!r} is not a date/time; use e.g. '2012-03-01 00:00'") from None
    grid = regular_grid(t0, t0 + step * (T - 1), step)

    xy = _locations(speed.parent, node_ids) if coords else None
    return Panel(
        values=values[:, :, None],
        mask=np.isfinite(values)[:, :, None],
        timestamps=grid.to_numpy(),
        edge_index=np.stack([src, dst]).astype(np.int64),
        edge_weight=off[src, dst].astype(np.float32),
        node_ids=node_ids,
        coords=xy,
        name=name or d_name,
        units=d_units if units is None else units,
    )


def _locations(folder: Path, node_ids: list[str]) -> np.ndarray | None:
    """Coordinates from a DCRNN ``graph_sensor_locations.csv`` when every sensor is listed in it."""
    for rel in LOCATION_FILES:
        f = folder / rel
        if f.is_file():
            return read_locations(f, node_ids)
    return None


def read_locations(path: Path, node_ids: list[str]) -> np.ndarray | None:
    """``[N, 2]`` lat/lon of ``node_ids`` from a sensor-locations CSV; None if a sensor is absent.

    Accepts DCRNN's METR-LA layout (header ``index,sensor_id,latitude,longitude``) and PEMS-BAY's
    header-less ``sensor_id,latitude,longitude``.
    """
    df = pd.read_csv(path, dtype=str)
    cols = [c.strip().lower() for c in df.columns]
    if "sensor_id" in cols and "latitude" in cols and "longitude" in cols:
        df.columns = cols
        table = df[["sensor_id", "latitude", "longitude"]]
    else:
        df = pd.read_csv(path, header=None, dtype=str)
        if df.shape[1] < 3:
            raise DataError(f"{path.name}: expected columns sensor_id,latitude,longitude")
        table = df.iloc[:, -3:]
        table.columns = ["sensor_id", "latitude", "longitude"]
    ids = table["sensor_id"].str.strip().str.replace(r"\.0$", "", regex=True)
    lookup = dict(zip(ids, zip(pd.to_numeric(table["latitude"]), pd.to_numeric(table["longitude"]))))
    if not all(n in lookup for n in node_ids):
        return None
    return np.array([lookup[n] for n in node_ids], dtype=np.float64)
