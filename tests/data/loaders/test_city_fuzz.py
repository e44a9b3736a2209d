"""Random malformed own-city folders: ``stmgt data check`` loads them or refuses with one line, never crashes."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stmgt.cli import main

NODES = ["A", "B", "C", "007", "x y"]
TIMES = ["2024-05-01 08:00", "2024-05-01 08:05", "2024-05-01 08:10:03", "03/04/2024 08:00", "13/04/2024 08:15",
         "04/13/2024", "2024-05-01T08:20:00+07:00", "2024-05-01T08:25:00+02:00", "May 1 2024 8:30am", "yesterday",
         "", "2024-13-45", "2025-01-01 00:00", "1714550400", "2024-05-01 08:02:30"]
VALUES = ["41.5", "0", "", "n/a", "#N/A", "NULL", "fast", "1e400", "-3", "inf", "41,5", "None", "NaN"]
COLUMNS = ["timestamp", "node_id", "value", "temperature", "weather", "lat"]
cell = st.one_of(st.sampled_from(TIMES + VALUES + NODES), st.text(max_size=6))
counter = itertools.count()


@st.composite
def city(draw):
    cols = draw(st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=6, unique=True))
    if draw(st.booleans()):
        cols = [c for c in COLUMNS[:3] if c not in cols] + cols  # usually a valid header
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        row = {"timestamp": draw(st.sampled_from(TIMES)), "node_id": draw(st.sampled_from(NODES)),
               "value": draw(st.sampled_from(VALUES))}
        rows.append([row.get(c) if c in row and draw(st.integers(0, 4)) else draw(cell) for c in cols])
    if rows and draw(st.booleans()):
        rows += draw(st.lists(st.sampled_from(rows), max_size=3))  # duplicated rows
    obs = "" if draw(st.integers(0, 9)) == 0 else "\n".join(",".join(map(str, r)) for r in [cols, *rows]) + "\n"
    edges = draw(st.sampled_from(["", "source,target\n", "a,b\n"])) + "".join(
        f"{s},{t}\n" for s, t in draw(st.lists(st.tuples(st.sampled_from(NODES + ["Z"]),
                                                         st.sampled_from(NODES)), max_size=4)))
    nodes = draw(st.one_of(st.none(), st.lists(st.sampled_from(NODES), max_size=5).map(
        lambda ns: "node_id,lat,lon\n" + "".join(f"{n},10.{i},106.{i}\n" for i, n in enumerate(ns)))))
    return obs, edges, nodes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(city())
def test_check_never_crashes(tmp_path_factory, capsys, files):
    obs, edges, nodes = files
    d = tmp_path_factory.mktemp(f"city{next(counter)}")
    (d / "observations.csv").write_text(obs)
    (d / "edges.csv").write_text(edges)
    if nodes is not None:
        (d / "nodes.csv").write_text(nodes)
    capsys.readouterr()
    rc = main(["data", "check", str(d)])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("stmgt: error: ")]
    assert all(line.startswith(("stmgt: error: ", "stmgt: warning: ")) for line in err.splitlines()), err
    assert "np.int64(" not in err + out and "np.float64(" not in err + out
    if rc == 0:
        assert errors == [] and out.startswith(d.name)
    else:
        assert rc == 2 and len(errors) == 1, err
