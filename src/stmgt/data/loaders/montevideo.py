"""MontevideoBus: hourly passenger inflow at 675 bus stops of Montevideo, Uruguay.

Format (Rozemberczki et al., "PyTorch Geometric Temporal: Spatiotemporal Signal Processing with
Neural Machine Learning Models", CIKM 2021, https://github.com/benedekrozemberczki/pytorch_geometric_temporal
``dataset/montevideo_bus.json``; built from the open data of Montevideo's Metropolitan
Transportation System, https://catalogodatos.gub.uy/): one JSON file, ``montevideo_bus.json``, a
networkx node-link graph ``{directed, multigraph, graph, nodes, links}``.

* ``nodes``: one object per bus stop, ``{id, bus_stop, lat, lon, in_degree, y, X}``. ``id`` (the
  bus-stop number) becomes the node id; the file's node order is kept. ``y`` is the series: one
  **integer passenger inflow (boardings) per hour**, 744 values = October 2020 (``units="passengers/h"``).
  ``X`` (``X.y`` repeats ``y``) and ``in_degree`` are ignored.
* Time: the file has no timestamps. The hourly grid starts at ``start = 2020-10-01 00:00`` (local
  time; the hourly totals show the daily cycle starting at midnight), overridable.
* Missing values: none. **Zeros are real zero counts** (about 80 % of the values) and stay observed;
  only ``null``/NaN in a ``y`` list would be masked.
* ``links``: ``{source, target, weight}``, directed edges between node ids (690 in the file, mostly
  chains along the bus lines, no pair listed both ways); ``weight`` is the **road distance in
  metres**. Edge weights (``weights=``), as for PEMS: ``"gaussian"`` (default)
  ``exp(-d^2 / sigma^2)`` with sigma the standard deviation of the listed distances (DCRNN's kernel:
  near stops weigh more, at most 1), ``"distance"`` (raw metres, as PyTorch Geometric Temporal
  passes them) or ``"binary"`` (no weights). The links are kept directed as in the source;
  ``symmetric=True`` adds the reverse of each. Self loops are dropped, a repeated pair keeps its
  shortest distance. In this file the links join neighbouring stops (median 275 m, up to 1991 m),
  so sigma is only 174 m: about half the links get a Gaussian weight below 0.1 and the two longest
  underflow to 0 (they stay in ``edge_index``; with ``model.edge_weights`` on, Graph WaveNet gives
  them no weight and the graph attention an edge attribute of 0; see ``docs/models.md``). A model
  that uses weights may prefer ``weights="distance"`` and a kernel of its own.
* Coordinates: ``lat``/``lon`` hold **projected metres, not degrees** (``lon`` = easting 566-589 km,
  ``lat`` = northing 6135-6158 km). The projection is not documented; from these ranges it is
  taken to be UTM zone 21 south (EPSG:32721 / SIRGAS 2000 UTM 21S) and converted to WGS84 lat/lon
  by :func:`utm_to_latlon` (Krüger series; the GRS80/WGS84 difference is far below a bus stop's
  size), which puts the stops at 34.72-34.92 S, 56.02-56.28 W, i.e. in Montevideo. Coordinates
  already in degrees are kept as they are; ``coords=False`` stores none.

Every malformed file raises a one-line :class:`~stmgt.errors.DataError` naming the node or link.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.loaders.city import regular_grid
from stmgt.data.panel import Panel
from stmgt.errors import DataError

FILE = "montevideo_bus.json"
UTM_ZONE = 21  # inferred from the coordinate ranges (Montevideo, 56 deg W), southern hemisphere
WEIGHTS = ("gaussian", "distance", "binary")
_OK = object()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_montevideo(
    path: str | Path,
    *,
    start: str = "2020-10-01 00:00",
    name: str = "montevideo_bus",
    units: str = "passengers/h",
    weights: str = "gaussian",
    symmetric: bool = False,
    coords: bool = True,
) -> Panel:
    """Load ``montevideo_bus.json`` (the file, or the folder holding it).

    Args:
        path: ``montevideo_bus.json`` or its folder.
        start: first hourly timestamp (October 2020, local time).
        name, units: dataset name and target units.
        weights: ``"gaussian"`` (similarity from the road distance), ``"distance"`` (metres) or
            ``"binary"`` (no weights).
        symmetric: add the reverse of every link.
        coords: attach lat/lon (converted from UTM 21S when the file holds metres).
    """
    p = Path(path)
    f = p / FILE if p.is_dir() else p
    if not f.is_file():
        raise DataError(f"{f}: not found; download {FILE} with `stmgt data fetch montevideo_bus --dir DIR`")
    if weights not in WEIGHTS:
        raise DataError(f"weights={weights!r}: use 'gaussian', 'distance' or 'binary'")
    fn = f.name
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{fn}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{fn}: not a UTF-8 text file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not isinstance(doc.get("links"), list):
        raise DataError(f"{fn}: expected a node-link JSON object with 'nodes' and 'links' lists")
    nodes, links = doc["nodes"], doc["links"]
    if not nodes:
        raise DataError(f"{fn}: 'nodes' is empty")

    node_ids: list[str] = []
    series: list[np.ndarray] = []
    for i, nd in enumerate(nodes):
        if not isinstance(nd, dict):
            raise DataError(f"{fn}: node {i} is not an object")
        for key in ("id", "y"):
            if key not in nd:
                raise DataError(f"{fn}: node {i} has no {key!r}")
        nid = str(nd["id"])
        y = nd["y"]
        if not isinstance(y, list):
            raise DataError(f"{fn}: node {i} (id {nid}): 'y' must be a list of hourly counts")
        bad = next((v for v in y if not _is_number(v) and v is not None), _OK)
        if bad is not _OK:
            raise DataError(f"{fn}: node {i} (id {nid}): 'y' holds {bad!r}, not a number")
        arr = np.array([np.nan if v is None else v for v in y], dtype=np.float64)
        if series and arr.shape[0] != series[0].shape[0]:
            raise DataError(
                f"{fn}: node {i} (id {nid}) has {arr.shape[0]} values in 'y' but node 0 has {series[0].shape[0]}"
            )
        node_ids.append(nid)
        series.append(arr)
    if len(set(node_ids)) != len(node_ids):
        dup = pd.Series(node_ids)[pd.Series(node_ids).duplicated()].iloc[0]
        raise DataError(f"{fn}: node id {dup} appears more than once")
    values = np.stack(series, axis=1)  # [T, N]
    T = values.shape[0]
    if T < 2:
        raise DataError(f"{fn}: 'y' has {T} values per node; a series needs at least 2")

    edge_index, edge_weight = _links(links, {n: i for i, n in enumerate(node_ids)}, fn, weights, symmetric)

    try:
        t0 = pd.Timestamp(start)
    except (TypeError, ValueError):
        raise DataError(f"start={start!r} is not a date/time; use e.g. '2020-10-01 00:00'") from None
    step = pd.Timedelta(hours=1)
    grid = regular_grid(t0, t0 + step * (T - 1), step)
    return Panel(
        values=values[:, :, None],
        mask=np.isfinite(values)[:, :, None],
        timestamps=grid.to_numpy(),
        edge_index=edge_index,
        edge_weight=edge_weight,
        node_ids=node_ids,
        coords=_coords(nodes, fn) if coords else None,
        name=name,
        units=units,
    )


def _links(
    links: list, index: dict[str, int], fn: str, weights: str, symmetric: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    src, dst, dist = [], [], []
    for k, ln in enumerate(links):
        if not isinstance(ln, dict):
            raise DataError(f"{fn}: link {k} is not an object")
        ends = []
        for key in ("source", "target"):
            if key not in ln:
                raise DataError(f"{fn}: link {k} has no {key!r}")
            nid = str(ln[key])
            if nid not in index:
                raise DataError(f"{fn}: link {k}: {key} {ln[key]!r} is not a node id")
            ends.append(index[nid])
        if weights == "binary":
            d = 1.0
        else:
            w = ln.get("weight")
            if not (_is_number(w) and math.isfinite(w) and w >= 0):
                raise DataError(
                    f"{fn}: link {k} ({ln['source']} -> {ln['target']}): weight {w!r} must be a distance"
                    " in metres >= 0 (or pass weights='binary')"
                )
            d = float(w)
        src.append(ends[0])
        dst.append(ends[1])
        dist.append(d)
    a, b, cost = np.array(src, np.int64), np.array(dst, np.int64), np.array(dist, np.float64)
    if symmetric:
        a, b, cost = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([cost, cost])
    e = pd.DataFrame({"a": a, "b": b, "c": cost})
    e = e[e.a != e.b].groupby(["a", "b"], as_index=False, sort=True)["c"].min()
    a, b, cost = e.a.to_numpy(np.int64), e.b.to_numpy(np.int64), e.c.to_numpy(np.float64)
    edge_index = np.stack([a, b]).astype(np.int64)
    if weights == "binary":
        return edge_index, None
    if weights == "distance":
        return edge_index, cost.astype(np.float32)
    sigma = float(cost.std()) if cost.size > 1 else 0.0
    if sigma <= 0:  # one distance (or all equal): scale by it instead
        sigma = max(float(cost.mean()) if cost.size else 1.0, 1e-9)
    return edge_index, np.exp(-((cost / sigma) ** 2)).astype(np.float32)


def _coords(nodes: list, fn: str) -> np.ndarray | None:
    """``[N, 2]`` lat/lon in degrees; None when a node has no ``lat``/``lon``."""
    if not all("lat" in nd and "lon" in nd for nd in nodes):
        return None
    try:
        lat = np.array([nd["lat"] for nd in nodes], dtype=np.float64)
        lon = np.array([nd["lon"] for nd in nodes], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{fn}: a node's lat/lon is not a number") from None
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        return None
    if (np.abs(lat) <= 90).all() and (np.abs(lon) <= 180).all():
        return np.stack([lat, lon], axis=1)
    return np.stack(utm_to_latlon(lon, lat, UTM_ZONE, south=True), axis=1)


def utm_to_latlon(easting, northing, zone: int, *, south: bool) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 latitude and longitude in degrees of UTM coordinates in metres.

    Inverse transverse Mercator by Krüger's series to third order in the third flattening ``n``
    (Karney, "Transverse Mercator with an accuracy of a few nanometers", J. Geodesy 2011; the
    truncation error is well under a millimetre inside a zone).
    """
    a, f = 6378137.0, 1 / 298.257223563
    k0, e0 = 0.9996, 500000.0
    n = f / (2 - f)
    big_a = a / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    beta = (n / 2 - 2 * n**2 / 3 + 37 * n**3 / 96, n**2 / 48 + n**3 / 15, 17 * n**3 / 480)
    delta = (2 * n - 2 * n**2 / 3 - 2 * n**3, 7 * n**2 / 3 - 8 * n**3 / 5, 56 * n**3 / 15)
    x = np.asarray(easting, dtype=np.float64)
    y = np.asarray(northing, dtype=np.float64) - (10_000_000.0 if south else 0.0)
    xi, eta = y / (k0 * big_a), (x - e0) / (k0 * big_a)
    xi1, eta1 = xi.copy(), eta.copy()
    for j, bj in enumerate(beta, start=1):
        xi1 -= bj * np.sin(2 * j * xi) * np.cosh(2 * j * eta)
        eta1 -= bj * np.cos(2 * j * xi) * np.sinh(2 * j * eta)
    chi = np.arcsin(np.sin(xi1) / np.cosh(eta1))
    phi = chi + sum(dj * np.sin(2 * j * chi) for j, dj in enumerate(delta, start=1))
    lam0 = math.radians(6 * zone - 183)
    lam = lam0 + np.arctan2(np.sinh(eta1), np.cos(xi1))
    return np.degrees(phi), np.degrees(lam)
