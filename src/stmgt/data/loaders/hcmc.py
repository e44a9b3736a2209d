"""Ho Chi Minh City road-segment speeds with weather (the dsp391m collector runs).

Source: https://github.com/thatlq1812/dsp391m_project (FPT University DSP391m, 2025). Segment travel
times from the Google Directions API, weather from OpenWeatherMap, topology from OpenStreetMap. No
peer-reviewed paper. The Google-derived speeds may not be redistributed: use them locally only.

Two layouts, the first found wins (``source=`` forces one):

* ``processed/all_runs_combined.parquet`` (66 runs): long format, one row per (run, segment), columns
  ``run_id, timestamp, node_a_id, node_b_id, speed_kmh, lat_a, lon_a, lat_b, lon_b, temperature_c,
  wind_speed_kmh, precipitation_mm, ...``.
* ``runs/run_YYYYmmdd_HHMMSS/`` (16 runs at the repository's HEAD): ``traffic_edges.json`` (144
  records ``{node_a_id, node_b_id, speed_kmh, ...}``), ``weather_snapshot.json`` (per intersection
  ``{temperature_c, precipitation_mm, wind_speed_kmh, ...}``) and ``nodes.json`` (intersection lat/lon).
  The run time is the folder's name (the same time the parquet gives its run).

The panel's **nodes are the 144 directed road segments** ``node_a -> node_b`` (ids
``"<node_a>-><node_b>"``, coords = the segment midpoint, sorted by id), speed in **km/h**. Their
graph is the line graph of the road network: segment ``a -> b`` feeds segment ``b -> c`` (``c != a``,
U-turns excluded) because they share intersection ``b``; no weights (``graph="shared"`` links every
two segments that meet at an intersection, both ways).

Collection times are irregular (13 s to 2 h apart), so runs are put on a regular grid (``interval``,
default 30 min; the grid starts at the first run's time floored to the interval). A grid step is
observed for a segment when a run falls in it (several runs in one step: mean); other steps are
masked, never filled. Weather becomes the global covariates ``temperature`` (°C), ``wind_speed``
(km/h) and ``precipitation`` (mm): the city-wide mean of each run, averaged per step, then
forward/back filled so they have no gap. Timestamps are naive, as collected (the source does not
say whether they are UTC or local UTC+7).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.loaders.city import fill_covariates, parse_interval, regular_grid
from stmgt.data.panel import Panel
from stmgt.errors import DataError

PARQUET = "processed/all_runs_combined.parquet"
RUNS = "runs"
WEATHER = {
    "temperature": "temperature_c",
    "wind_speed": "wind_speed_kmh",
    "precipitation": "precipitation_mm",
}
_RUN_NAME = re.compile(r"run_(\d{8}_\d{6})$")
_NODE_POS = re.compile(r"node-(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)$")


def _root(path: Path) -> Path:
    """The dataset folder from the folder itself, its ``runs/``/``processed/``, or the parquet file."""
    if path.is_file():
        return path.parent.parent if path.parent.name == "processed" else path.parent
    if path.name in (RUNS, "processed"):
        return path.parent
    return path


def run_folders(root: Path) -> list[Path]:
    """``runs/run_*`` folders that hold a ``traffic_edges.json``, in time order."""
    d = root / RUNS
    if not d.is_dir():
        return []
    return sorted(f for f in d.iterdir() if _RUN_NAME.match(f.name) and (f / "traffic_edges.json").is_file())


def _from_parquet(f: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(f)
    except (OSError, ValueError, ImportError) as e:
        raise DataError(f"{f}: cannot be read as parquet ({type(e).__name__}: {e})") from None
    need = ["timestamp", "node_a_id", "node_b_id", "speed_kmh", *WEATHER.values()]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{f.name}: missing column(s) {', '.join(missing)}; found: {', '.join(df.columns)}")
    if "run_id" not in df.columns:
        df = df.assign(run_id=df["timestamp"].astype(str))
    return df


def _read_json(f: Path):
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{f}: not readable JSON ({e})") from None


def _from_runs(root: Path) -> pd.DataFrame:
    runs = run_folders(root)
    if not runs:
        raise DataError(f"{root / RUNS}: no run_YYYYmmdd_HHMMSS/traffic_edges.json folders")
    node_pos: dict[str, tuple[float, float]] = {}
    frames = []
    for r in runs:
        stamp = datetime.strptime(_RUN_NAME.match(r.name).group(1), "%Y%m%d_%H%M%S")
        if not node_pos and (r / "nodes.json").is_file():
            node_pos = {n["node_id"]: (n["lat"], n["lon"]) for n in _read_json(r / "nodes.json")}
        edges = pd.DataFrame(_read_json(r / "traffic_edges.json"))
        missing = [c for c in ("node_a_id", "node_b_id", "speed_kmh") if c not in edges.columns]
        if missing:
            raise DataError(f"{r.name}/traffic_edges.json: records lack {', '.join(missing)}")
        wfile = r / "weather_snapshot.json"
        weather = pd.DataFrame(_read_json(wfile)) if wfile.is_file() else pd.DataFrame()
        for col in WEATHER.values():
            edges[col] = pd.to_numeric(weather[col], errors="coerce").mean() if col in weather else np.nan
        edges["timestamp"] = stamp
        edges["run_id"] = r.name
        frames.append(edges)
    df = pd.concat(frames, ignore_index=True)
    for end in ("a", "b"):
        pos = df[f"node_{end}_id"].map(lambda n: node_pos.get(n, _parse_pos(n)))
        df[f"lat_{end}"] = [q[0] for q in pos]
        df[f"lon_{end}"] = [q[1] for q in pos]
    return df


def _parse_pos(node_id: str) -> tuple[float, float]:
    m = _NODE_POS.match(str(node_id))
    return (float(m.group(1)), float(m.group(2))) if m else (np.nan, np.nan)


def load_hcmc(
    path: str | Path,
    *,
    interval: str = "30min",
    source: str = "auto",
    graph: str = "line",
    name: str = "hcmc",
    units: str = "km/h",
) -> Panel:
    """Load the HCMC segment speeds (folder with ``processed/`` and/or ``runs/``, or the parquet).

    Args:
        path: the dataset folder (or its ``runs/`` folder, or the parquet file).
        interval: grid step (``"30min"``; ``"1h"`` gives fewer masked steps).
        source: ``"auto"`` (parquet when present, else runs), ``"parquet"`` or ``"runs"``.
        graph: ``"line"`` (``a -> b`` feeds ``b -> c``) or ``"shared"`` (segments sharing any
            intersection are linked both ways, for when the listed direction is not the only one).
        name, units: dataset name and target units.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    root = _root(p)
    if source not in ("auto", "parquet", "runs"):
        raise DataError(f"source={source!r}: use 'auto', 'parquet' or 'runs'")
    if graph not in ("line", "shared"):
        raise DataError(f"graph={graph!r}: use 'line' or 'shared'")
    df = _readings(p, root, source)
    step = parse_interval(interval)
    df = df.assign(
        timestamp=pd.to_datetime(df["timestamp"]).astype("datetime64[ns]"),
        seg=df["node_a_id"].astype(str) + "->" + df["node_b_id"].astype(str),
        speed=pd.to_numeric(df["speed_kmh"], errors="coerce"),
    )
    if df["timestamp"].isna().any():
        raise DataError(f"{root.name}: a run has no timestamp")
    segs = sorted(df["seg"].unique())
    ends = df.drop_duplicates("seg").set_index("seg").loc[segs]

    # one time per run (the parquet repeats it on every row); runs -> grid steps
    run_time = df.groupby("run_id")["timestamp"].min()
    t0 = run_time.min().floor(step)
    grid = regular_grid(t0, run_time.max().floor(step), step)
    values, mask = _segment_speeds(df, run_time, t0, step, segs, len(grid))
    cov = _weather_per_step(df, run_time, t0, step, len(grid), root)
    return Panel(
        values=values[:, :, None],
        mask=mask[:, :, None],
        timestamps=grid.to_numpy(),
        edge_index=_segment_links(ends, graph),
        node_ids=segs,
        coords=_midpoints(ends),
        covariates=cov.to_numpy(np.float32),
        covariate_names=list(WEATHER),
        name=name,
        units=units,
    )


def _readings(p: Path, root: Path, source: str) -> pd.DataFrame:
    """One row per (run, segment): from the parquet (``source="parquet"``, or ``"auto"`` when it exists)
    or from the ``runs/`` folders."""
    pq = p if p.is_file() else root / PARQUET
    if source == "parquet" or (source == "auto" and pq.is_file()):
        if not pq.is_file():
            raise DataError(f"{pq}: not found; use source='runs' to read the runs/ folders")
        return _from_parquet(pq)
    return _from_runs(root)


def _segment_speeds(
    df: pd.DataFrame, run_time: pd.Series, t0: pd.Timestamp, step: pd.Timedelta, segs: list[str], T: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(values [T, N] float64, mask [T, N] bool)``: the mean positive speed of each segment per step."""
    index = {s: i for i, s in enumerate(segs)}
    pos = ((df["run_id"].map(run_time) - t0) // step).to_numpy(np.int64)
    ok = np.isfinite(df["speed"].to_numpy()) & (df["speed"].to_numpy() > 0)
    N = len(segs)
    total, count = np.zeros((T, N)), np.zeros((T, N))
    col = df["seg"].map(index).to_numpy(np.int64)
    np.add.at(total, (pos[ok], col[ok]), df["speed"].to_numpy()[ok])
    np.add.at(count, (pos[ok], col[ok]), 1)
    mask = count > 0
    return np.where(mask, total / np.maximum(count, 1), np.nan), mask


def _weather_per_step(
    df: pd.DataFrame, run_time: pd.Series, t0: pd.Timestamp, step: pd.Timedelta, T: int, root: Path
) -> pd.DataFrame:
    """``[T, 3]`` weather (columns :data:`WEATHER`): the mean over each step's runs, gaps filled;
    a weather column without any value is refused."""
    per_run = df.groupby("run_id")[list(WEATHER.values())].mean()
    per_run["_pos"] = ((run_time.loc[per_run.index] - t0) // step).to_numpy(np.int64)
    cov = per_run.groupby("_pos").mean().reindex(range(T))
    cov = fill_covariates(cov.rename(columns={v: k for k, v in WEATHER.items()}))[list(WEATHER)]
    if cov.isna().any().any():
        empty = cov.columns[cov.isna().any()][0]
        raise DataError(f"{root.name}: weather column {empty!r} has no value in any run")
    return cov


def _segment_links(ends: pd.DataFrame, graph: str) -> np.ndarray:
    """``edge_index [2, E]`` int64 between segments: ``"line"``: ``a -> b`` feeds ``b -> c`` (no U-turn);
    ``"shared"``: segments meeting at an intersection, both ways."""
    a = ends["node_a_id"].astype(str).to_numpy()
    b = ends["node_b_id"].astype(str).to_numpy()
    N = len(a)
    starts_at: dict[str, list[int]] = {}
    for j, s in enumerate(a):
        starts_at.setdefault(s, []).append(j)
    src, dst = [], []
    if graph == "line":
        for i in range(N):
            for j in starts_at.get(b[i], []):
                if b[j] != a[i]:  # no U-turn
                    src.append(i)
                    dst.append(j)
    else:  # "shared": any two segments meeting at an intersection, both ways
        for i in range(N):
            for j in range(N):
                if i != j and {a[i], b[i]} & {a[j], b[j]}:
                    src.append(i)
                    dst.append(j)
    return np.array([src, dst], dtype=np.int64).reshape(2, -1)


def _midpoints(ends: pd.DataFrame) -> np.ndarray | None:
    """``[N, 2]`` lat/lon of each segment's midpoint, or ``None`` when any end has no position."""
    if not {"lat_a", "lon_a", "lat_b", "lon_b"} <= set(ends.columns):
        return None
    mid = np.stack(
        [(ends["lat_a"].to_numpy(float) + ends["lat_b"].to_numpy(float)) / 2,
         (ends["lon_a"].to_numpy(float) + ends["lon_b"].to_numpy(float)) / 2], axis=1)
    return mid if np.isfinite(mid).all() else None
