"""PEMS03 / PEMS04 / PEMS07 / PEMS08 in the ASTGCN / STSGCN layout.

Format (Guo et al., "Attention Based Spatial-Temporal Graph Convolutional Networks for Traffic Flow
Forecasting", AAAI 2019, https://github.com/guoshnBJTU/ASTGCN-r-pytorch; Song et al., STSGCN,
AAAI 2020), Caltrans PeMS detectors aggregated to 5 minutes:

* ``PEMS0X.npz``: key ``data``, a ``[T, N, C]`` array. Channel 0 is **flow** (vehicles per
  5 minutes); PEMS04/08 add occupancy and speed as channels 1-2, PEMS03/07 have flow only. A
  reading of **0 means missing** (``mask=False``), as in the reference implementations' masked
  metrics; NaN too.
* ``PEMS0X.csv``: the distance edge list, header ``from,to,cost`` (or ``from,to,distance``), one row
  per directed detector pair, cost = road distance. ``from``/``to`` are positions ``0..N-1``,
  except for PEMS03 whose ``PEMS03.txt`` lists the sensor ids (one per line, in node order) that
  ``from``/``to`` refer to.
* No timestamps in the files: a 5-minute grid from the dataset's usual start date (PEMS03
  2018-09-01, PEMS04 2018-01-01, PEMS07 2017-05-01, PEMS08 2016-07-01; ``start=`` overrides).

Edge weights (``weights=``): ``"gaussian"`` (default) ``exp(-d^2 / sigma^2)`` with sigma the standard
deviation of the listed distances (DCRNN's kernel, so near detectors weigh more), ``"distance"``
(raw cost) or ``"binary"`` (no weights). ``symmetric=True`` (default) adds the reverse of each
listed pair, as most PEMS baselines treat the graph as undirected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.loaders.city import parse_interval, regular_grid
from stmgt.data.panel import Panel
from stmgt.errors import DataError

#: Usual first day of each PEMS set (from the ASTGCN / STSGCN papers).
START_DATES = {
    "pems03": "2018-09-01",
    "pems04": "2018-01-01",
    "pems07": "2017-05-01",
    "pems08": "2016-07-01",
}
CHANNELS = ("flow", "occupancy", "speed")


def has_data_key(path: Path) -> bool:
    """True when ``path`` is an ``.npz`` archive holding a ``data`` array."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "data" in z.files
    except (OSError, ValueError):
        return False


def load_pems(
    path: str | Path,
    *,
    start: str | None = None,
    interval: str = "5min",
    name: str | None = None,
    units: str = "veh/5min",
    channels: Sequence[int] | str = (0,),
    distances: str | Path | bool | None = None,
    ids: str | Path | None = None,
    weights: str = "gaussian",
    symmetric: bool = True,
    zero_is_missing: bool = True,
) -> Panel:
    """Load a PEMS folder (one ``*.npz`` with ``data``) or the ``.npz`` itself.

    Args:
        path: folder or ``.npz`` file.
        start: first timestamp; default from :data:`START_DATES` by file name, else 2018-01-01.
        interval: step between rows (``"5min"``).
        name: default: the file stem lower-cased (``pems04``).
        units: units of channel 0 (flow per 5-minute step).
        channels: channel positions to keep (channel 0 = flow is the target), or ``"all"``.
        distances: the ``from,to,cost`` CSV; default ``<stem>.csv`` beside the npz. ``False``: no graph.
        ids: sensor-id list (PEMS03); default ``<stem>.txt`` beside the npz when present.
        weights: ``"gaussian"``, ``"distance"`` or ``"binary"``.
        symmetric: add the reverse of every listed edge.
        zero_is_missing: 0 marks a missing reading.
    """
    npz = _npz_path(Path(path))
    if weights not in ("gaussian", "distance", "binary"):
        raise DataError(f"weights={weights!r}: use 'gaussian', 'distance' or 'binary'")
    stem = npz.stem.lower()
    data = _read_data(npz, channels)
    T, N, _ = data.shape
    mask = np.isfinite(data)
    if zero_is_missing:
        mask &= data != 0
    id_file, sensor_ids = _sensor_ids(ids, npz, N)
    index = {s: i for i, s in enumerate(sensor_ids)}

    edge_index, edge_weight = np.zeros((2, 0), np.int64), None
    if distances is not False:
        dist = Path(distances) if distances not in (None, True) else npz.with_suffix(".csv")
        if not dist.is_file():
            raise DataError(
                f"{dist}: distance CSV (from,to,cost) not found beside {npz.name}; pass distances=PATH"
                " or distances=False for no graph"
            )
        edge_index, edge_weight = _read_distances(dist, index, id_file.is_file(), weights, symmetric)

    try:
        t0 = pd.Timestamp(start or START_DATES.get(stem[:6], "2018-01-01"))
    except (TypeError, ValueError):
        raise DataError(f"start={start!r} is not a date/time; use e.g. '2018-01-01'") from None
    step = parse_interval(interval)
    grid = regular_grid(t0, t0 + step * (T - 1), step)
    return Panel(
        values=data,
        mask=mask,
        timestamps=grid.to_numpy(),
        edge_index=edge_index,
        edge_weight=edge_weight,
        node_ids=sensor_ids,
        name=name or stem,
        units=units,
    )


def _npz_path(p: Path) -> Path:
    """The ``.npz``: ``p`` itself, or the only ``*.npz`` with a ``data`` array in the folder ``p``."""
    if p.is_dir():
        cands = sorted(f for f in p.glob("*.npz") if has_data_key(f))
        if len(cands) != 1:
            found = ", ".join(f.name for f in cands) or "none"
            raise DataError(f"{p}: expected one .npz with a 'data' array (found: {found}); pass the file")
        return cands[0]
    if p.is_file():
        return p
    raise DataError(f"{p}: no such file or folder")


def _read_data(npz: Path, channels: Sequence[int] | str) -> np.ndarray:
    """The ``data`` array as float64 ``[T, N, C']`` holding the chosen ``channels`` (``[T, N]`` widened)."""
    try:
        with np.load(npz, allow_pickle=False) as z:
            if "data" not in z.files:
                raise DataError(f"{npz.name}: no 'data' array (keys: {', '.join(z.files)})")
            data = np.asarray(z["data"], dtype=np.float64)
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"{npz.name}: not a readable .npz ({e})") from None
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"{npz.name}: 'data' must be [T, N, C], got shape {data.shape}")
    C = data.shape[2]
    keep = list(range(C)) if channels == "all" else [int(c) for c in channels]
    if not keep or min(keep) < 0 or max(keep) >= C:
        raise DataError(f"channels={channels!r}: {npz.name} has channels 0..{C - 1}")
    return data[:, :, keep]


def _sensor_ids(ids: str | Path | None, npz: Path, N: int) -> tuple[Path, list[str]]:
    """``(id file looked at, N sensor ids)``: from ``ids`` or ``<stem>.txt`` when present, else ``"0".."N-1"``."""
    id_file = Path(ids) if ids else npz.with_suffix(".txt")
    if id_file.is_file():
        sensor_ids = [s.strip() for s in re.split(r"[\s,]+", id_file.read_text()) if s.strip()]
        if len(sensor_ids) != N:
            n_ids = len(sensor_ids)
            raise DataError(f"{id_file.name}: lists {n_ids} sensor ids but {npz.name} has {N} nodes")
        if len(set(sensor_ids)) != N:
            raise DataError(f"{id_file.name}: a sensor id appears twice")
        return id_file, sensor_ids
    if ids:
        raise DataError(f"{id_file}: no such sensor-id file")
    return id_file, [str(i) for i in range(N)]


def _read_distances(
    path: Path, index: dict[str, int], by_id: bool, weights: str, symmetric: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    f = path.name
    try:
        df = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{f}: cannot be read as CSV ({e})") from None
    if df.shape[1] < 2:
        raise DataError(f"{f}: expected columns from,to,cost; found {', '.join(df.columns)}")
    if pd.to_numeric(pd.Series(df.columns[:2]), errors="coerce").notna().all():  # no header row
        df = pd.read_csv(path, dtype=str, header=None)
        first = 1
    else:
        first = 2
    src_s, dst_s = df.iloc[:, 0].str.strip(), df.iloc[:, 1].str.strip()
    if not by_id:  # positions: "3" and "3.0" are the same node
        src_s = src_s.str.replace(r"\.0+$", "", regex=True)
        dst_s = dst_s.str.replace(r"\.0+$", "", regex=True)
    for col, s in ((df.columns[0], src_s), (df.columns[1], dst_s)):
        unknown = ~s.isin(list(index)).to_numpy()
        if unknown.any():
            i = int(np.argmax(unknown))
            what = "a sensor id of the .txt list" if by_id else f"a node position 0..{len(index) - 1}"
            raise DataError(f"{f} line {i + first}: {col} {s.iloc[i]!r} is not {what}")
    a = src_s.map(index).to_numpy(np.int64)
    b = dst_s.map(index).to_numpy(np.int64)
    if df.shape[1] >= 3:
        cost = pd.to_numeric(df.iloc[:, 2], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(cost) | (cost < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{f} line {i + first}: cost {df.iloc[i, 2]!r} must be a finite number >= 0")
    else:
        cost = np.ones(len(a))
        weights = "binary"
    if symmetric:
        a, b, cost = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([cost, cost])
    e = pd.DataFrame({"a": a, "b": b, "c": cost})
    e = e[e.a != e.b].groupby(["a", "b"], as_index=False, sort=True)["c"].min()
    a, b, cost = e.a.to_numpy(np.int64), e.b.to_numpy(np.int64), e.c.to_numpy(np.float64)
    if weights == "binary":
        w = None
    elif weights == "distance":
        w = cost.astype(np.float32)
    else:
        sigma = float(cost.std()) if cost.size > 1 else 0.0
        if sigma <= 0:  # one distance (or all equal): scale by it instead
            sigma = max(float(cost.mean()) if cost.size else 1.0, 1e-9)
        w = np.exp(-((cost / sigma) ** 2)).astype(np.float32)
    return np.stack([a, b]).astype(np.int64), w
