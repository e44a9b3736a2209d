"""METR-LA / PEMS-BAY loader: a small pandas HDF5 store made here, with a tiny or the real adj_mx.pkl."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from stmgt.data.loaders import detect_format, load, load_metr
from stmgt.errors import DataError

pytest.importorskip("tables", reason="PyTables is needed to write .h5 stores")


def _store(path, ids, T=6, start="2012-03-01", zeros=((1, 0),), drop=()):
    idx = pd.date_range(start, periods=T, freq="5min")
    df = pd.DataFrame(np.arange(T * len(ids), dtype=float).reshape(T, len(ids)) + 10, index=idx, columns=ids)
    for t, n in zeros:
        df.iloc[t, n] = 0.0
    df = df.drop(index=[idx[i] for i in drop])
    df.to_hdf(path, key="df")
    return df


def _adj(path, ids, A):
    obj = [list(ids), {s: i for i, s in enumerate(ids)}, np.asarray(A, np.float32)]
    path.write_bytes(pickle.dumps(obj, protocol=2))


def test_small_store(tmp_path):
    ids = ["s1", "s2", "s3"]
    _store(tmp_path / "metr-la.h5", ids[::-1], drop=[3])  # columns in another order, one step gone
    A = np.eye(3)
    A[0, 1], A[2, 0] = 0.7, 0.2
    _adj(tmp_path / "adj_mx.pkl", ids, A)
    loc = pd.DataFrame({"sensor_id": ids, "latitude": [34.0, 34.1, 34.2], "longitude": [-118.0] * 3})
    loc.rename_axis("index").to_csv(tmp_path / "graph_sensor_locations.csv")
    assert detect_format(tmp_path) == "metr"
    p = load(tmp_path)
    assert p.name == "metr_la" and p.units == "mph" and p.node_ids == ids
    assert p.values.shape == (6, 3, 1) and p.interval_minutes == 5
    assert not p.mask[3].any()  # the dropped step is on the grid, masked
    assert not p.mask[1, 2, 0]  # a zero reading of column 0 (= "s3") is missing
    assert p.mask.sum() == 6 * 3 - 3 - 1
    assert sorted(zip(*p.edge_index.tolist())) == [(0, 1), (2, 0)]
    assert np.allclose(sorted(p.edge_weight), [0.2, 0.7])
    assert np.allclose(p.coords[:, 0], [34.0, 34.1, 34.2])


@pytest.mark.shared_data
def test_real_metr_la_graph(tmp_path, los_loop):
    ids = pd.read_csv(los_loop / "los_speed.csv", nrows=0).columns.tolist()
    _store(tmp_path / "metr-la.h5", ids, T=4)
    p = load_metr(tmp_path / "metr-la.h5", adj=los_loop / "metr_la_graph" / "adj_mx.pkl",
                  locations=los_loop / "metr_la_graph" / "graph_sensor_locations.csv")
    assert p.values.shape == (4, 207, 1) and p.node_ids == ids
    assert p.edge_index.shape == (2, 1722 - 207)  # directed non-zeros minus the diagonal
    assert p.coords.shape == (207, 2)


def test_errors(tmp_path):
    ids = ["a", "b"]
    _store(tmp_path / "pems-bay.h5", ids)
    with pytest.raises(DataError, match="no adj_mx"):
        load_metr(tmp_path)
    p = load_metr(tmp_path, adj=False)
    assert p.edge_index.shape == (2, 0) and p.name == "pems_bay"
    _adj(tmp_path / "adj_mx_bay.pkl", ["a", "c"], np.eye(2))
    with pytest.raises(DataError, match="sensor 'c' of adj_mx_bay.pkl is not a column of pems-bay.h5"):
        load_metr(tmp_path)
    (tmp_path / "adj_mx_bay.pkl").write_bytes(pickle.dumps(print))
    with pytest.raises(DataError, match="refuses to load global builtins.print"):
        load_metr(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .h5 file"):
        load_metr(empty)
    (empty / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="junk.h5: not a pandas HDF5 store"):
        load_metr(empty / "junk.h5", adj=False)
