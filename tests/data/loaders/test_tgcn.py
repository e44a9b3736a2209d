"""T-GCN CSV loader: the real Los-loop files and malformed copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stmgt.data.loaders import load, load_tgcn
from stmgt.errors import DataError


@pytest.mark.shared_data
def test_los_loop_real(los_loop):
    p = load_tgcn(los_loop)
    assert p.values.shape == (2016, 207, 1)
    assert p.name == "los_loop" and p.units == "mph"
    assert p.mask.all()  # no missing values in Los-loop
    assert 1.0 <= p.values.min() and p.values.max() == 70.0
    assert p.edge_index.shape == (2, 2626)  # non-zero off-diagonal entries of los_adj.csv
    assert (p.edge_index[0] != p.edge_index[1]).all()
    assert p.edge_weight.min() > 0.1 and p.edge_weight.max() <= 1.0
    # symmetric matrix -> every edge has its reverse with the same weight
    pairs = dict(zip(zip(*p.edge_index.tolist()), p.edge_weight.tolist()))
    assert all(pairs[(j, i)] == w for (i, j), w in pairs.items())
    assert p.node_ids[:2] == ["773869", "767541"]
    assert str(p.timestamps[0]).startswith("2012-03-01T00:00") and p.interval_minutes == 5
    assert str(p.timestamps[-1]).startswith("2012-03-07T23:55")
    assert p.coords.shape == (207, 2) and np.allclose(p.coords[0], [34.15497, -118.31829])
    assert load(los_loop).values.shape == (2016, 207, 1)  # detection


@pytest.mark.shared_data
def test_los_loop_overrides(los_loop):
    p = load_tgcn(los_loop / "los_speed.csv", start="2020-01-01 06:00", interval="10min", coords=False)
    assert str(p.timestamps[0]).startswith("2020-01-01T06:00") and p.interval_minutes == 10
    assert p.coords is None


def _write(tmp_path, speed: str, adj: str):
    (tmp_path / "x_speed.csv").write_text(speed)
    (tmp_path / "x_adj.csv").write_text(adj)
    return tmp_path


def test_small_and_nan(tmp_path):
    d = _write(tmp_path, "a,b\n1,2\n,0\n3,4\n", "1,0.5\n0,1\n")
    p = load_tgcn(d)
    assert p.values.shape == (3, 2, 1) and p.name == "x"
    assert p.mask[:, :, 0].tolist() == [[True, True], [False, True], [True, True]]  # zero is a value
    assert p.edge_index.tolist() == [[0], [1]] and p.edge_weight.tolist() == [0.5]


@pytest.mark.parametrize(
    "speed, adj, msg",
    [
        ("a,b\n1,2\n3,x\n", "1,0\n0,1\n", r"x_speed.csv line 3, column b: 'x' is not a number"),
        ("a,b\n1,2\n3,4\n", "1,0,0\n0,1,0\n0,0,1\n", r"x_adj.csv: matrix is 3x3 but x_speed.csv has 2"),
        ("a,b\n1,2\n3,4\n", "1,-1\n0,1\n", r"x_adj.csv: entry \(0, 1\) is -1.0"),
        ("a,b\n1,2\n", "1,0\n0,1\n", r"1 data rows"),
    ],
)
def test_bad_files(tmp_path, speed, adj, msg):
    with pytest.raises(DataError, match=msg) as e:
        load_tgcn(_write(tmp_path, speed, adj))
    assert "\n" not in str(e.value)


def test_missing_pair(tmp_path):
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "y_speed.csv", index=False)
    with pytest.raises(DataError, match="no <prefix>_speed.csv"):
        load_tgcn(tmp_path)
