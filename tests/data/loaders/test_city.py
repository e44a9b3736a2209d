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


# ---------------------------------------------------------------------- issue #11: refuse or warn loudly
from stmgt.cli import main  # noqa: E402
from stmgt.errors import ConfigError, StmgtWarning  # noqa: E402

NO_EDGES = "source,target\n"


def _rows(rows):
    return H + "".join(r + "\n" for r in rows)


def _check(capsys, d, *args):
    """``stmgt data check d ...`` in-process: (exit code, stdout, stderr lines)."""
    capsys.readouterr()
    rc = main(["data", "check", str(d), *args])
    out, err = capsys.readouterr()
    return rc, out, err.splitlines()


AMBIGUOUS = _rows([f"0{k}/04/2024 08:00,A,{k}" for k in range(1, 9)])  # 1..8 April, or 4 Jan..Aug?


def test_ambiguous_dates_are_refused_until_the_order_is_given(tmp_path, capsys):
    d = _city(tmp_path / "c", obs=AMBIGUOUS, edges=NO_EDGES)
    with pytest.raises(DataError, match=r"observations.csv: dates such as line 2 '01/04/2024 08:00' can be read"
                                        r" day-first or month-first.*dayfirst=True \(dd/mm/yyyy\)"):
        load_city(d)
    rc, out, err = _check(capsys, d)
    assert rc == 2 and len(err) == 1 and err[0].startswith("stmgt: error: ") and "--dayfirst" in err[0]
    p = load_city(d, dayfirst=True)
    assert p.interval_minutes == 24 * 60 and str(p.timestamps[0]).startswith("2024-04-01T08:00")
    with pytest.raises(DataError, match="fall between the steps of the 31d interval"):  # 4 Jan, 4 Feb, ...
        load_city(d, dayfirst=False)  # months are not a fixed interval
    rc, out, err = _check(capsys, d, "--dayfirst")
    assert rc == 0 and "dates: day-first, as dayfirst=True says" in out and "interval: 1d" in out
    r = load_city(d, timestamp_format="%d/%m/%Y %H:%M")
    assert np.array_equal(r.timestamps, p.timestamps)
    (d / "city.json").write_text('{"dayfirst": true}')  # how training (stmgt train --data d) gets it
    assert np.array_equal(load(d).timestamps, p.timestamps)
    with pytest.raises(ConfigError, match="give dayfirst or timestamp_format, not both"):
        load_city(d, timestamp_format="%d/%m/%Y %H:%M")


def test_day_first_is_detected_and_contradictions_are_refused(tmp_path, capsys):
    d = _city(tmp_path / "c", obs=_rows([f"{k:02d}/04/2024 08:00,A,{k}" for k in range(1, 20)]), edges=NO_EDGES)
    p = load_city(d)  # day 13 in first position: only dd/mm fits, read day-first
    assert p.num_steps == 19 and str(p.timestamps[-1]).startswith("2024-04-19")
    rc, out, _ = _check(capsys, d)
    assert rc == 0 and "dates: day-first (dd/mm/yyyy), as line 14 '13/04/2024 08:00' shows" in out
    with pytest.raises(DataError, match=r"line 14 '13/04/2024 08:00': this date cannot be month-first"):
        load_city(d, dayfirst=False)
    (d / "observations.csv").write_text(_rows(["13/04/2024 08:00,A,1", "04/14/2024 08:00,A,2"]))
    with pytest.raises(DataError, match=r"dates mix day-first \(line 2 '13/04/2024 08:00'\) and month-first"
                                        r" \(line 3 '04/14/2024 08:00'\)"):
        load_city(d)
    (d / "observations.csv").write_text(_rows(["01.05.2024 08:00,A,1", "2.5.2024 08:00,A,2", "2024-05-03,A,3"]))
    with pytest.raises(DataError, match=r"line 4: timestamp '2024-05-03' does not match timestamp_format"):
        load_city(d, timestamp_format="%d.%m.%Y %H:%M")
    (d / "observations.csv").write_text(_rows(["01.05.2024 08:00,A,1", "2.5.2024 08:00,A,2"]))
    assert load_city(d, timestamp_format="%d.%m.%Y %H:%M").num_steps == 2


def test_city_json_is_checked(tmp_path):
    d = _city(tmp_path / "c")
    for text, msg in [("{", "not valid JSON"), ("[1]", "must hold one JSON object"),
                      ('{"speed": 1}', "unknown option 'speed'; the options are: interval, dayfirst"),
                      ('{"dayfirst": "yes"}', 'dayfirst must be true or false, got "yes"')]:
        (d / "city.json").write_text(text)
        with pytest.raises(DataError, match=msg):
            load_city(d)
    (d / "city.json").write_text('{"interval": "10min", "units": "km/h"}')
    p = load_city(d)
    assert p.interval_minutes == 10 and p.units == "km/h"
    assert load_city(d, interval="5min").interval_minutes == 5  # keyword arguments win


def test_interval_is_the_per_node_mode_and_readings_snap(tmp_path, capsys):
    t = pd.date_range("2024-05-01", periods=50, freq="5min")
    rows = [f"{x},A,1" for x in t] + [f"{x + pd.Timedelta('3s')},B,2" for x in t]  # B 3 s after A
    d = _city(tmp_path / "c", obs=_rows(rows), edges=NO_EDGES)
    with pytest.warns(StmgtWarning, match=r"50 reading\(s\) are up to 3 s off the 5min grid; each was moved"):
        p = load_city(d)
    assert p.interval_minutes == 5 and p.num_steps == 50 and p.mask.all()
    assert str(p.timestamps[0]).startswith("2024-05-01T00:00:00")
    rc, out, err = _check(capsys, d)
    assert rc == 0 and err == [err[0]] and err[0].startswith("stmgt: warning: observations.csv: 50 reading(s)")
    assert "interval: 5min (inferred" in out and "coverage: 100.0%" in out and "longest gap: none" in out
    # a reading between two steps is refused, naming it; an explicit interval bins it
    (d / "observations.csv").write_text(_rows([f"{x},A,1" for x in t] + [f"{t[5] + pd.Timedelta('150s')},A,2"]))
    with pytest.raises(DataError, match=r"1 reading\(s\) fall between the steps of the 5min interval found in the"
                                        r" data \(line 52 2024-05-01 00:27:30\)"):
        load_city(d)
    assert load_city(d, interval="5min").num_steps == 50


def test_outlier_dates_sparse_grids_and_gaps(tmp_path, capsys):
    t = pd.date_range("2024-05-01", periods=288, freq="5min")
    d = _city(tmp_path / "c", obs=_rows([f"{x},A,1" for x in t] + ["2024-11-01 00:00,A,5"]), edges=NO_EDGES)
    with pytest.raises(DataError, match=r"1 row\(s\) lie 183.0 days away from the other 288 \(line 290"
                                        r" 2024-11-01 00:00:00\), so the time grid would be 99% empty"):
        load_city(d)
    # a long gap in the middle: a warning, and the check names it
    (d / "observations.csv").write_text(_rows([f"{x},A,1" for x in t[:100]] + [f"{x},A,1" for x in t[200:]]))
    with pytest.warns(StmgtWarning, match=r"no reading for 8.4 h between 2024-05-01 08:15:00 \(line 101\)"):
        load_city(d)
    rc, out, err = _check(capsys, d)
    assert rc == 0 and len(err) == 1 and "longest gap: 100 step(s) (8.3 h) without any reading" in out
    # most of the grid empty: a warning
    rows = [f"{x},A,1" for x in t] + [f"{x},{n},1" for i, x in enumerate(t) for n in "BCD" if i % 10 == 0]
    (d / "observations.csv").write_text(_rows(rows))
    with pytest.warns(StmgtWarning, match=r"only 32.6% of the grid \(288 steps x 4 nodes, every 5min\) holds"):
        load_city(d)
    # too many cells: refused before allocating
    rows = [f"{x},N{j},1" for x in pd.date_range("2024-05-01", periods=3, freq="1D") for j in range(700)]
    (d / "observations.csv").write_text(_rows(rows))
    with pytest.raises(DataError, match=r"172,801 steps x 700 nodes = 120,960,700 cells, above the limit of"
                                        r" 50,000,000"), pytest.warns(StmgtWarning, match="no reading for 1.0 days"):
        load_city(d, interval="1s")  # (the one-day gap is said first)


def test_missing_value_tokens_and_text(tmp_path):
    rows = ["2024-01-01 00:00,A,n/a", "2024-01-01 00:05,A,#N/A", "2024-01-01 00:10,A,NULL",
            "2024-01-01 00:15,A, NaN", "2024-01-01 00:20,A,na", "2024-01-01 00:25,A,1.5"]
    d = _city(tmp_path / "c", obs=_rows(rows), edges=NO_EDGES)
    with pytest.warns(StmgtWarning, match=r"only 16.7% of the grid"):  # five of the six readings are missing
        p = load_city(d)
    assert p.mask[:, 0, 0].tolist() == [False] * 5 + [True]
    (d / "observations.csv").write_text(_rows(rows + ["2024-01-01 00:30,A,None"]))
    with pytest.raises(DataError, match=r"line 8: value 'None' is not a number; .* \(empty, NA, NaN, null, n/a"):
        load_city(d)
    (d / "observations.csv").write_text(_rows(rows + ["2024-01-01 00:30,A,-"]))
    with pytest.raises(DataError, match=r"line 8: value '-' is not a number"):
        load_city(d)


def test_covariates_must_be_city_wide_and_not_empty(tmp_path, capsys):
    obs = ("timestamp,node_id,value,occupancy,humidity\n2024-01-01 00:00,A,1,3,\n2024-01-01 00:00,B,1,4.5,\n"
           "2024-01-01 00:05,A,1,3,\n")
    d = _city(tmp_path / "c", obs=obs, edges=NO_EDGES)
    with pytest.raises(DataError, match=r"column 'occupancy' differs between rows of the same time 2024-01-01"
                                        r" 00:00:00 \(line 2, node 'A': 3; line 3, node 'B': 4.5\)"), \
            pytest.warns(StmgtWarning, match="column 'humidity' has no value"):
        load_city(d)
    (d / "observations.csv").write_text(obs.replace(",4.5,", ",3,"))
    with pytest.warns(StmgtWarning, match=r"column 'humidity' has no value in any row; it is ignored"):
        p = load_city(d)
    assert p.covariate_names == ["occupancy"]
    rc, out, err = _check(capsys, d)
    assert rc == 0 and err == ["stmgt: warning: observations.csv: column 'humidity' has no value in any row; it is"
                               " ignored (fill it in to use it as a covariate, or delete it)"]


def test_check_prints_findings_and_no_raw_pandas_warnings(tmp_path, capsys):
    d = _city(tmp_path / "c", obs=OBS.replace("2024-05-01 08:15:00", "May 1 2024 8:15am"))
    rc, out, err = _check(capsys, d)
    assert rc == 0 and err == [], err
    lines = out.splitlines()
    assert lines[0].startswith("c: 4 steps x 3 nodes") and lines[1] == "  interval: 5min (inferred from each node's" \
        " consecutive readings)"
    assert "  ignored text column(s): weather" in lines and any(s.startswith("  longest gap: 1 step(s)") for s in lines)
