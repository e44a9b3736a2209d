"""METR-LA / PEMS-BAY in the DCRNN layout: an ``.h5`` pandas store plus ``adj_mx.pkl``.

Format (Li et al., "Diffusion Convolutional Recurrent Neural Network: Data-Driven Traffic
Forecasting", ICLR 2018, https://github.com/liyaguang/DCRNN):

* ``metr-la.h5`` / ``pems-bay.h5``: a pandas HDF5 store (key ``df``) of a ``[T, N]`` DataFrame whose
  index is a 5-minute :class:`~pandas.DatetimeIndex` and whose columns are sensor ids. Speeds in
  **mph**. A reading of **0 means missing** (detector down): it gets ``mask=False``, and so does NaN.
  Reading it needs PyTables (``pip install 'stmgt[h5]'``).
* ``adj_mx.pkl`` / ``adj_mx_bay.pkl``: a Python-2 pickle of ``[sensor_ids, sensor_id_to_ind, adj_mx]``
  where ``adj_mx`` is the ``N x N`` directed Gaussian-kernel matrix ``exp(-d^2 / sigma^2)`` of road
  distance (entries < 0.1 set to 0, diagonal 1). It is read with the restricted unpickler of
  :mod:`stmgt.data.loaders.safe_pickle`, never with :func:`pickle.load`. Every non-zero off-diagonal
  entry ``adj_mx[i, j]`` becomes the edge ``i -> j`` with that weight; the store's columns are put
  in the pickle's sensor order.
* optional ``graph_sensor_locations*.csv`` (DCRNN ``data/sensor_graph/``) gives node coordinates.

If the index has gaps (or the store is not sorted), the series is put on a regular grid at its most
common interval and the missing steps are masked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.loaders.city import most_common_gap, regular_grid
from stmgt.data.loaders.safe_pickle import safe_load
from stmgt.data.loaders.tgcn import read_locations
from stmgt.data.panel import Panel
from stmgt.errors import DataError


def _one(folder: Path, patterns: tuple[str, ...], what: str) -> Path | None:
    found = sorted({f for pat in patterns for f in folder.glob(pat) if f.is_file()})
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise DataError(f"{folder}: several {what} files ({names}); pass the one to use explicitly")
    return found[0] if found else None


def read_adj_pickle(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(sensor_ids, adj_mx)`` from a DCRNN ``adj_mx.pkl`` (restricted unpickling)."""
    path = Path(path)
    obj = safe_load(path)
    if isinstance(obj, (list, tuple)) and len(obj) == 3:
        ids, _, adj = obj
    elif isinstance(obj, np.ndarray):
        ids, adj = None, obj
    else:
        got = type(obj).__name__
        raise DataError(f"{path.name}: expected [sensor_ids, sensor_id_to_ind, adj_mx], got {got}")
    if isinstance(adj, (str, bytes)) or (isinstance(adj, np.ndarray) and adj.dtype.kind not in "biuf"):
        got = f"{type(adj).__name__}" + (f" of {adj.dtype}" if isinstance(adj, np.ndarray) else "")
        raise DataError(f"{path.name}: adj_mx must be a numeric square matrix, got {got}")
    try:
        with np.errstate(all="ignore"):
            adj = np.asarray(adj, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(
            f"{path.name}: adj_mx must be a numeric square matrix, got a {type(adj).__name__} that is not one"
        ) from None
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise DataError(f"{path.name}: adjacency must be a square matrix, got shape {adj.shape}")
    ids = [str(i) for i in range(adj.shape[0])] if ids is None else [str(i).strip() for i in ids]
    if len(ids) != adj.shape[0]:
        raise DataError(f"{path.name}: {len(ids)} sensor ids for a {adj.shape[0]}x{adj.shape[0]} matrix")
    return ids, adj


def load_metr(
    path: str | Path,
    *,
    adj: str | Path | bool | None = None,
    locations: str | Path | None = None,
    key: str | None = None,
    name: str | None = None,
    units: str = "mph",
    zero_is_missing: bool = True,
) -> Panel:
    """Load METR-LA / PEMS-BAY (folder with one ``*.h5``, or the ``.h5`` file itself).

    Args:
        path: folder or ``.h5`` file.
        adj: adjacency pickle; default: the one ``adj_mx*.pkl`` beside the store. ``False``: no graph.
        locations: sensor-locations CSV; default: ``graph_sensor_locations*.csv`` beside the store.
        key: HDF5 key; default: the only key, or ``df``.
        name: default: the store's stem (``metr-la.h5`` -> ``metr_la``).
        units: ``"mph"`` for both DCRNN sets.
        zero_is_missing: 0 marks a missing reading (the DCRNN convention).
    """
    h5 = _store_path(Path(path))
    folder = h5.parent
    df, key = _read_store(h5, key)
    df = _checked_frame(df, h5, key)
    node_ids = list(df.columns)
    edge_index, edge_weight = np.zeros((2, 0), np.int64), None
    adj_path = _adjacency_path(adj, folder, h5)
    if adj_path is not None:
        node_ids, edge_index, edge_weight = _read_graph(adj_path, node_ids, h5)
        df = df[node_ids]
    grid, df = _on_grid(df, h5)
    values = df.to_numpy(dtype=np.float64)
    mask = np.isfinite(values)
    if zero_is_missing:
        mask &= values != 0

    xy = None
    loc = Path(locations) if locations else _one(folder, ("graph_sensor_locations*.csv",), "sensor-locations")
    if loc is not None:
        xy = read_locations(loc, node_ids)
    return Panel(
        values=values[:, :, None],
        mask=mask[:, :, None],
        timestamps=grid.to_numpy(),
        edge_index=edge_index,
        edge_weight=edge_weight,
        node_ids=node_ids,
        coords=xy,
        name=name or h5.stem.lower().replace("-", "_"),
        units=units,
    )


def _store_path(p: Path) -> Path:
    """The ``.h5`` store: ``p`` itself, or the only ``*.h5``/``*.hdf5`` in the folder ``p``."""
    if p.is_dir():
        h5 = _one(p, ("*.h5", "*.hdf5"), ".h5")
        if h5 is None:
            raise DataError(f"{p}: no .h5 file (expected e.g. metr-la.h5 with adj_mx.pkl)")
        return h5
    if p.is_file():
        return p
    raise DataError(f"{p}: no such file or folder")


def _read_store(h5: Path, key: str | None) -> tuple[object, str]:
    """``(object stored under key, key)``: the given key, else the only one, else ``df``."""
    try:
        with pd.HDFStore(h5, mode="r") as store:
            keys = [k.lstrip("/") for k in store.keys()]
            if key is None:
                if len(keys) == 1:
                    key = keys[0]
                elif "df" in keys:
                    key = "df"
                else:
                    raise DataError(f"{h5.name}: several keys ({', '.join(keys)}); pass key=")
            elif key not in keys:
                raise DataError(f"{h5.name}: no key {key!r}; keys are {', '.join(keys) or 'none'}")
            return store[key], key
    except DataError:
        raise
    except ImportError:
        raise DataError(f"{h5.name}: reading .h5 files needs PyTables; pip install 'stmgt[h5]'") from None
    except Exception as e:  # PyTables raises its own (RuntimeError-based) errors on a bad file
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise DataError(f"{h5.name}: not a pandas HDF5 store ({type(e).__name__}: {first})") from None


def _checked_frame(df, h5: Path, key: str) -> pd.DataFrame:
    """A copy ``[T, N]``, sensor ids stripped, sorted by time; refused unless a DataFrame with a
    DatetimeIndex, distinct sensors and times, and at least 2 time steps."""
    if not isinstance(df, pd.DataFrame) or not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"{h5.name}: key {key!r} must be a DataFrame with a DatetimeIndex (rows = times)")
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    if df.columns.duplicated().any():
        raise DataError(f"{h5.name}: sensor {df.columns[df.columns.duplicated()][0]!r} appears twice")
    df = df[~df.index.isna()].sort_index()
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()][0]
        raise DataError(f"{h5.name}: time {dup} appears twice; drop duplicate rows")
    if len(df) < 2:
        raise DataError(f"{h5.name}: has {len(df)} time steps; a series needs at least 2")
    return df


def _adjacency_path(adj: str | Path | bool | None, folder: Path, h5: Path) -> Path | None:
    """The adjacency pickle to read: ``adj``, else the one ``adj_mx*.pkl`` beside the store; ``None``
    for ``adj=False``."""
    if adj is False:
        return None
    if adj is None or adj is True:
        adj_path = _one(folder, ("adj_mx*.pkl", "adj*.pkl"), "adjacency pickle")
        if adj_path is None:
            raise DataError(
                f"{folder}: no adj_mx*.pkl beside {h5.name}; get it from DCRNN data/sensor_graph/"
                " or pass adj=PATH (adj=False loads without a graph)"
            )
        return adj_path
    return Path(adj)


def _read_graph(adj_path: Path, columns: list[str], h5: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(node ids in the pickle's order, edge_index [2, E] int64, edge_weight [E] float32)``: every
    non-zero off-diagonal entry is an edge; the pickle must list the store's sensors."""
    ids, A = read_adj_pickle(adj_path)
    in_store, in_pickle = set(columns), set(ids)
    missing = [i for i in ids if i not in in_store]
    extra = [i for i in columns if i not in in_pickle]
    if missing or extra:
        what = f"sensor {missing[0]!r} of {adj_path.name} is not a column of {h5.name}" if missing else (
            f"column {extra[0]!r} of {h5.name} is not in {adj_path.name}")
        raise DataError(f"{what}; the store and the adjacency must list the same sensors")
    off = A.copy()
    np.fill_diagonal(off, 0.0)
    if not np.isfinite(off).all() or (off < 0).any():
        raise DataError(f"{adj_path.name}: adjacency has NaN or negative entries")
    src, dst = np.nonzero(off)
    return ids, np.stack([src, dst]).astype(np.int64), off[src, dst].astype(np.float32)


def _on_grid(df: pd.DataFrame, h5: Path) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """``(grid, frame reindexed to it)`` at the most common interval (missing steps become NaN rows);
    a time off that grid is refused."""
    step = most_common_gap(df.index.to_numpy())
    grid = regular_grid(df.index[0], df.index[-1], step)
    off_grid = ~df.index.isin(grid)
    if off_grid.any():
        raise DataError(
            f"{h5.name}: time {df.index[off_grid][0]} is not on the {step} grid starting {df.index[0]};"
            " resample the store to a fixed interval"
        )
    return grid, df.reindex(grid)
