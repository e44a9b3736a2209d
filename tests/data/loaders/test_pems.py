"""PEMS03/04/07/08 loader on small files written here (the real sets are not in shared/data)."""

from __future__ import annotations

import numpy as np
import pytest

from stmgt.data.loaders import detect_format, load, load_pems
from stmgt.errors import DataError


def _pems(tmp_path, stem="PEMS04", T=5, N=4, C=3, csv="from,to,cost\n0,1,100.0\n1,2,300.0\n3,2,200.0\n"):
    data = np.arange(T * N * C, dtype=np.float64).reshape(T, N, C) + 1
    data[2, 1, 0] = 0.0  # a zero flow = missing
    np.savez(tmp_path / f"{stem}.npz", data=data)
    if csv is not None:
        (tmp_path / f"{stem}.csv").write_text(csv)
    return data


def test_pems04_defaults(tmp_path):
    data = _pems(tmp_path)
    assert detect_format(tmp_path) == "pems"
    p = load(tmp_path)
    assert p.name == "pems04" and p.values.shape == (5, 4, 1)  # flow only by default
    assert str(p.timestamps[0]).startswith("2018-01-01T00:00") and p.interval_minutes == 5
    assert not p.mask[2, 1, 0] and p.mask.sum() == 5 * 4 - 1
    assert np.allclose(p.values[0, :, 0], data[0, :, 0])
    # symmetric: 3 listed pairs -> 6 directed edges, gaussian weights, nearer = heavier
    assert p.edge_index.shape == (2, 6)
    w = dict(zip(zip(*p.edge_index.tolist()), p.edge_weight.tolist()))
    assert w[(0, 1)] == w[(1, 0)] and w[(0, 1)] > w[(3, 2)] > w[(1, 2)]


def test_options(tmp_path):
    _pems(tmp_path, stem="PEMS08")
    p = load_pems(tmp_path / "PEMS08.npz", channels="all", weights="distance", symmetric=False)
    assert p.values.shape == (5, 4, 3) and str(p.timestamps[0]).startswith("2016-07-01")
    assert p.edge_index.tolist() == [[0, 1, 3], [1, 2, 2]] and p.edge_weight.tolist() == [100, 300, 200]
    p = load_pems(tmp_path, weights="binary", start="2020-02-02 10:00", distances=False)
    assert p.edge_weight is None and p.edge_index.shape == (2, 0)
    assert str(p.timestamps[0]).startswith("2020-02-02T10:00")


def test_pems03_sensor_ids(tmp_path):
    _pems(tmp_path, stem="PEMS03", C=1, csv="from,to,distance\n317842,318711,1.5\n318711,316120,2.5\n")
    (tmp_path / "PEMS03.txt").write_text("317842\n318711\n316120\n313344\n")
    p = load_pems(tmp_path)
    assert p.node_ids[0] == "317842" and str(p.timestamps[0]).startswith("2018-09-01")
    assert sorted(zip(*p.edge_index.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]


@pytest.mark.parametrize(
    "csv, msg",
    [
        ("from,to,cost\n0,9,1.0\n", r"PEMS04.csv line 2: to '9' is not a node position 0..3"),
        ("from,to,cost\n0,1,1.0\n1,2,-3\n", r"PEMS04.csv line 3: cost '-3' must be a finite number >= 0"),
        ("from,to,cost\n0,1,abc\n", r"PEMS04.csv line 2: cost 'abc'"),
    ],
)
def test_bad_distances(tmp_path, csv, msg):
    _pems(tmp_path, csv=csv)
    with pytest.raises(DataError, match=msg) as e:
        load_pems(tmp_path)
    assert "\n" not in str(e.value)


def test_missing_parts(tmp_path):
    _pems(tmp_path, csv=None)
    with pytest.raises(DataError, match="distance CSV"):
        load_pems(tmp_path)
    with pytest.raises(DataError, match=r"channels=\[5\]: PEMS04.npz has channels 0..2"):
        load_pems(tmp_path, channels=[5], distances=False)
    (tmp_path / "PEMS04.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="lists 2 sensor ids but PEMS04.npz has 4 nodes"):
        load_pems(tmp_path, distances=False)
