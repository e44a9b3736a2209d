"""Your-own-city loader: a toy 3-node city and every format problem's one-line message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stmgt.data.loaders import detect_format, load, load_city
from stmgt.errors import DataError

OBS = """timestamp,node_id,value,temperature,weather
2024-05-01 08:00:00,A,40.5,20.0,sunny
2024-05-01 08:00:00,B,35.0,20.0,sunny
2024-05-01 08:05:00,A,41.0,,sunny
2024-05-01 08:05:00,B,,21.0,sunny
2024-05-01 08:05:00,C,0,21.0,sunny
2024-05-01 08:15:00,A,39.0,23.0,rain
2024-05-01 08:15:00,C,30.0,,rain
"""
EDGES = "source,target,weight\nA,B,1.0\nB,C,0.5\nC,A,2\n"
NODES = "node_id,lat,lon\nC,10.3,106.3\nB,10.2,106.2\nA,10.1,106.1\n"


def _city(d, obs=OBS, edges=EDGES, nodes=None):
    d.mkdir(parents=True, exist_ok=True)
    if obs is not None:
        (d / "observations.csv").write_text(obs)
    if edges is not None:
        (d / "edges.csv").write_text(edges)
    if nodes is not None:
        (d / "nodes.csv").write_text(nodes)
    return d


def test_toy_city(tmp_path):
    d = _city(tmp_path / "mycity")
    assert detect_format(d) == "city"
    p = load(d, units="km/h")
    assert p.name == "mycity" and p.units == "km/h"
    assert p.node_ids == ["A", "B", "C"]  # first appearance
    assert p.values.shape == (4, 3, 1) and p.interval_minutes == 5  # 08:10 is a masked step
    m = p.mask[..., 0]
    assert m.tolist() == [
        [True, True, False], [True, False, True], [False, False, False], [True, False, True]
    ]
    assert p.values[1, 2, 0] == 0.0 and m[1, 2]  # zero is a real reading by default
    assert p.covariate_names == ["temperature"]  # 'weather' is text: ignored
    assert p.covariates[:, 0].tolist() == [20.0, 21.0, 21.0, 23.0]  # per-step mean, forward-filled
    assert p.edge_index.tolist() == [[0, 1, 2], [1, 2, 0]] and p.edge_weight.tolist() == [1.0, 0.5, 2.0]
    assert p.coords is None


def test_nodes_order_parquet_and_options(tmp_path):
    d = _city(tmp_path / "c", nodes=NODES, edges="source,target\nA,B\n")
    pd.read_csv(d / "observations.csv").to_parquet(d / "observations.parquet")
    (d / "observations.csv").unlink()
    p = load_city(d, interval="10min", symmetric=True, zero_is_missing=True)
    assert p.node_ids == ["C", "B", "A"] and np.allclose(p.coords[2], [10.1, 106.1])
    assert p.interval_minutes == 10 and p.num_steps == 2
    assert p.values[0, 2, 0] == pytest.approx(40.75)  # 08:00 and 08:05 share a 10-minute step
    assert not p.mask[0, 0, 0]  # C's only reading in the first step is 0 -> missing
    assert sorted(zip(*p.edge_index.tolist())) == [(1, 2), (2, 1)] and p.edge_weight is None


def test_header_only_edges_and_duplicates_mean(tmp_path):
    obs = "timestamp,node_id,value\n2024-01-01 00:00,x,1\n2024-01-01 00:00,x,3\n2024-01-01 01:00,x,2\n"
    p = load_city(_city(tmp_path, obs=obs, edges="source,target\n"), duplicates="mean")
    assert p.edge_index.shape == (2, 0) and p.values[:, 0, 0].tolist() == [2.0, 2.0]


def test_offsets_and_mixed_formats(tmp_path):
    obs = "timestamp,node_id,value\n2024-01-01T00:00:00+07:00,x,1\n2024-01-01T01:00:00+07:00,x,2\n"
    p = load_city(_city(tmp_path, obs=obs, edges="source,target\n"))
    assert str(p.timestamps[0]).startswith("2024-01-01T00:00")  # local wall-clock time kept


H = "timestamp,node_id,value\n"
T0, T5 = "2024-01-01 00:00", "2024-01-01 00:05"
BAD = [
    # (file, content, expected message)
    ("observations.csv", "", r"observations.csv: the file is empty"),
    ("observations.csv", "timestamp,node_id,value\n", r"has a header but no rows"),
    ("observations.csv", "time,sensor,value\n1,2,3\n",
     r"observations.csv: missing column\(s\) timestamp, node_id; found: time, sensor, value"),
    ("observations.csv", "timestamp,node_id,value\n2024-01-01 00:00,A,1\n2024-13-45 00:00,A,2\n",
     r"observations.csv line 3: timestamp '2024-13-45 00:00' is not a date/time"),
    ("observations.csv", "timestamp,node_id,value\n2024-01-01 00:00,A,1\n2024-01-01 00:05,A,fast\n",
     r"observations.csv line 3: value 'fast' is not a number"),
    ("observations.csv", "timestamp,node_id,value\n2024-01-01 00:00,A,1\n2024-01-01 00:05,,2\n",
     r"observations.csv line 3: node_id is empty"),
    ("observations.csv", f"timestamp,node_id,value,temperature\n{T0},A,1,20\n{T5},A,2,hot\n",
     r"observations.csv line 3: temperature 'hot' is not a number"),
    ("observations.csv", f"{H}{T0},A,1\n{T5},A,2\n{T0},A,3\n",
     r"observations.csv: line 2 and line 4 are both readings of node 'A' at 2024-01-01 00:00:00;"
     r".*duplicates='mean'"),
    ("observations.csv", "timestamp,node_id,value\n2024-01-01 00:00,A,1\n2024-01-01 00:00,B,2\n",
     r"all readings share one timestamp"),
    ("observations.csv", f"{H}{T0},A,\n{T5},B,\n", r"observations.csv: column value holds no reading"),
    ("edges.csv", "", r"edges.csv: the file is empty"),
    ("edges.csv", "from,to\nA,B\n", r"edges.csv: missing column\(s\) source, target; found: from, to"),
    ("edges.csv", "source,target\nA,B\nB,Z\n",
     r"edges.csv line 3: target 'Z' is not a node_id in observations.csv"),
    ("edges.csv", "source,target,weight\nA,B,1\nB,C,\n", r"edges.csv line 3: weight is empty/NaN"),
    ("edges.csv", "source,target,weight\nA,B,-1\n", r"edges.csv line 2: weight -1.0 is negative"),
    ("edges.csv", "source,target,weight\nA,B,heavy\n", r"edges.csv line 2: weight 'heavy' is not a number"),
    ("edges.csv", "source,target\nA,B\nB,C\nA,B\n", r"edges.csv: line 2 and line 4 both give edge A -> B"),
    ("nodes.csv", "node_id,lat,lon\nA,10,106\nB,10,106\n",
     r"nodes.csv: node 'C' of observations.csv has no row"),
    ("nodes.csv", "node_id,lat\nA,10\n", r"nodes.csv: missing column\(s\) lon; found: node_id, lat"),
    ("nodes.csv", "node_id,lat,lon\nA,10,106\nB,100,106\nC,1,1\n",
     r"nodes.csv line 3: lat 100.0, lon 106.0 is not"),
    ("nodes.csv", "node_id,lat,lon\nA,10,106\nA,11,106\n", r"nodes.csv line 3: node_id 'A' is listed twice"),
]


@pytest.mark.parametrize("file, content, msg", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_format_problems(tmp_path, file, content, msg):
    d = _city(tmp_path)
    (d / file).write_text(content)
    with pytest.raises(DataError, match=msg) as e:
        load_city(d)
    assert "\n" not in str(e.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="no observations.csv or observations.parquet"):
        load_city(_city(tmp_path / "a", obs=None))
    with pytest.raises(DataError, match=r"no edges.csv; create it with columns source,target"):
        load_city(_city(tmp_path / "b", edges=None))
    with pytest.raises(DataError, match="interval: 'soon' is not a positive time interval"):
        load_city(_city(tmp_path / "c"), interval="soon")
