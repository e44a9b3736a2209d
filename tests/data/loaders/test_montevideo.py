"""MontevideoBus loader: a hand-written node-link JSON, malformed copies, and the real file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stmgt.data.loaders import FORMATS, LOADERS, detect_format, load, load_montevideo
from stmgt.data.loaders.montevideo import utm_to_latlon
from stmgt.errors import DataError


def _doc(**changes) -> dict:
    """Three stops, four hours; links 10 -> 20 (100 m) and 20 -> 30 (300 m)."""
    doc = {
        "directed": True,
        "multigraph": False,
        "graph": {"name": "tiny"},
        "nodes": [
            {"id": 10, "bus_stop": 10, "lat": -34.9, "lon": -56.2, "y": [0, 1, 2, 3], "X": {"y": [0, 1, 2, 3]}},
            {"id": 20, "bus_stop": 20, "lat": -34.8, "lon": -56.1, "y": [5, 0, 0, 7], "X": {"y": [5, 0, 0, 7]}},
            {"id": 30, "bus_stop": 30, "lat": -34.7, "lon": -56.0, "y": [0, 0, 9, 0], "X": {"y": [0, 0, 9, 0]}},
        ],
        "links": [
            {"source": 10, "target": 20, "weight": 100.0},
            {"source": 20, "target": 30, "weight": 300.0},
        ],
    }
    doc.update(changes)
    return doc


def _write(tmp_path, doc, name: str = "montevideo_bus.json"):
    f = tmp_path / name
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return f


def test_small_file(tmp_path):
    f = _write(tmp_path, _doc())
    p = load_montevideo(tmp_path)
    assert p.values.shape == (4, 3, 1)
    assert p.values[:, :, 0].tolist() == [[0, 5, 0], [1, 0, 0], [2, 0, 9], [3, 7, 0]]
    assert p.mask.all()  # zeros are real counts
    assert p.node_ids == ["10", "20", "30"]
    assert p.name == "montevideo_bus" and p.units == "passengers/h"
    assert [str(t)[:16] for t in p.timestamps] == [
        "2020-10-01T00:00", "2020-10-01T01:00", "2020-10-01T02:00", "2020-10-01T03:00"
    ]
    assert p.edge_index.tolist() == [[0, 1], [1, 2]]
    # distances 100 and 300 m: sigma = std = 100 -> exp(-1), exp(-9)
    assert p.edge_weight.tolist() == pytest.approx([math.exp(-1), math.exp(-9)], rel=1e-6)
    assert np.allclose(p.coords, [[-34.9, -56.2], [-34.8, -56.1], [-34.7, -56.0]])  # degrees kept
    assert load_montevideo(f).values.shape == (4, 3, 1)  # the file itself


def test_options(tmp_path):
    _write(tmp_path, _doc())
    p = load_montevideo(tmp_path, weights="distance", symmetric=True, start="2021-03-01 06:00",
                        name="mvd", units="pax/h", coords=False)
    assert p.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert p.edge_weight.tolist() == [100.0, 100.0, 300.0, 300.0]
    assert str(p.timestamps[0]).startswith("2021-03-01T06:00") and p.interval_minutes == 60
    assert (p.name, p.units, p.coords) == ("mvd", "pax/h", None)
    assert load_montevideo(tmp_path, weights="binary").edge_weight is None


def test_null_masked_self_loop_and_repeated_link(tmp_path):
    doc = _doc()
    doc["nodes"][1]["y"] = [5, None, 0, 7]
    doc["links"] += [{"source": 30, "target": 30, "weight": 1.0}, {"source": 10, "target": 20, "weight": 50.0}]
    _write(tmp_path, doc)
    p = load_montevideo(tmp_path, weights="distance")
    assert p.mask[:, 1, 0].tolist() == [True, False, True, True]
    assert p.mask[:, [0, 2]].all()
    assert p.edge_index.tolist() == [[0, 1], [1, 2]]  # self loop dropped
    assert p.edge_weight.tolist() == [50.0, 300.0]  # repeated pair keeps its shortest distance


def test_binary_needs_no_weight(tmp_path):
    doc = _doc()
    for ln in doc["links"]:
        del ln["weight"]
    _write(tmp_path, doc)
    assert load_montevideo(tmp_path, weights="binary").edge_index.shape == (2, 2)
    with pytest.raises(DataError, match="link 0 \\(10 -> 20\\): weight None"):
        load_montevideo(tmp_path)


def _utm_forward(lat, lon, zone):
    """Independent oracle: Krüger's forward series (alpha coefficients) for the southern hemisphere."""
    a, f = 6378137.0, 1 / 298.257223563
    n = f / (2 - f)
    big_a = a / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    alpha = (n / 2 - 2 * n**2 / 3 + 5 * n**3 / 16, 13 * n**2 / 48 - 3 * n**3 / 5, 61 * n**3 / 240)
    phi, lam = math.radians(lat), math.radians(lon - (6 * zone - 183))
    e = 2 * math.sqrt(n) / (1 + n)
    t = math.sinh(math.atanh(math.sin(phi)) - e * math.atanh(e * math.sin(phi)))
    xi1, eta1 = math.atan2(t, math.cos(lam)), math.atanh(math.sin(lam) / math.sqrt(1 + t * t))
    xi = xi1 + sum(aj * math.sin(2 * j * xi1) * math.cosh(2 * j * eta1) for j, aj in enumerate(alpha, 1))
    eta = eta1 + sum(aj * math.cos(2 * j * xi1) * math.sinh(2 * j * eta1) for j, aj in enumerate(alpha, 1))
    return 500000 + 0.9996 * big_a * eta, 10_000_000 + 0.9996 * big_a * xi


def test_utm_to_latlon():
    lat, lon = utm_to_latlon(np.array([500000.0]), np.array([10_000_000.0]), 21, south=True)
    assert lat[0] == pytest.approx(0.0, abs=1e-12) and lon[0] == pytest.approx(-57.0, abs=1e-12)
    points = [(-34.9066, -56.1994), (-34.72, -56.02), (-34.95, -56.30), (-35.5, -59.5)]
    e, nn = np.array([_utm_forward(la, lo, 21) for la, lo in points]).T
    lat, lon = utm_to_latlon(e, nn, 21, south=True)
    assert np.abs(lat - [p[0] for p in points]).max() < 1e-8  # ~1 mm
    assert np.abs(lon - [p[1] for p in points]).max() < 1e-8


def test_projected_coordinates_converted(tmp_path):
    doc = _doc()
    truth = [(-34.9066, -56.1994), (-34.80, -56.10), (-34.75, -56.05)]
    for nd, (la, lo) in zip(doc["nodes"], truth):
        nd["lon"], nd["lat"] = _utm_forward(la, lo, 21)  # easting in "lon", northing in "lat"
    _write(tmp_path, doc)
    assert np.allclose(load_montevideo(tmp_path).coords, truth, atol=1e-7)
    del doc["nodes"][2]["lat"]
    _write(tmp_path, doc)
    assert load_montevideo(tmp_path).coords is None


def test_detection(tmp_path):
    f = _write(tmp_path, _doc())
    assert "montevideo" in FORMATS and LOADERS["montevideo"] is load_montevideo
    assert detect_format(tmp_path) == "montevideo"
    assert detect_format(f) == "montevideo"
    assert load(tmp_path).values.shape == (4, 3, 1)
    other = _write(tmp_path, _doc(), name="other.json")
    assert load(other, format="montevideo").num_nodes == 3


def _without(key):
    doc = _doc()
    del doc["nodes"][1][key]
    return doc


def _link(**kv):
    doc = _doc()
    doc["links"][1].update(kv)
    return doc


def _node(i, **kv):
    doc = _doc()
    doc["nodes"][i].update(kv)
    return doc


@pytest.mark.parametrize(
    "doc, msg",
    [
        ('{"nodes": [', r"montevideo_bus.json: not valid JSON \(Expecting value at line 1, column 12\)"),
        ([1, 2], r"expected a node-link JSON object with 'nodes' and 'links' lists"),
        (_doc(links=None), r"expected a node-link JSON object"),
        (_doc(nodes=[]), r"'nodes' is empty"),
        (_without("y"), r"node 1 has no 'y'"),
        (_without("id"), r"node 1 has no 'id'"),
        (_node(2, y=[0, 0, 9]), r"node 2 \(id 30\) has 3 values in 'y' but node 0 has 4"),
        (_node(1, y=[5, "x", 0, 7]), r"node 1 \(id 20\): 'y' holds 'x', not a number"),
        (_node(1, y=[5, [1], 0, 7]), r"node 1 \(id 20\): 'y' holds \[1\], not a number"),
        (_node(1, y=7), r"node 1 \(id 20\): 'y' must be a list"),
        (_node(2, id=10), r"node id 10 appears more than once"),
        (_node(0, lat="north"), r"a node's lat/lon is not a number"),
        (_link(target=99), r"link 1: target 99 is not a node id"),
        (_link(source=None), r"link 1: source None is not a node id"),
        (_link(weight=-5), r"link 1 \(20 -> 30\): weight -5 must be a distance in metres >= 0"),
        (_link(weight="far"), r"link 1 \(20 -> 30\): weight 'far'"),
        (_doc(links=[{"source": 10}]), r"link 0 has no 'target'"),
        (_doc(nodes=[{"id": 1, "y": [3]}], links=[]), r"'y' has 1 values per node; a series needs at least 2"),
    ],
)
def test_bad_files(tmp_path, doc, msg):
    _write(tmp_path, doc)
    with pytest.raises(DataError, match=msg) as e:
        load_montevideo(tmp_path)
    assert "\n" not in str(e.value)


def test_bad_options_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="montevideo_bus.json: not found; download"):
        load_montevideo(tmp_path)
    _write(tmp_path, _doc())
    with pytest.raises(DataError, match="weights='kernel'"):
        load_montevideo(tmp_path, weights="kernel")
    with pytest.raises(DataError, match="start='soon' is not a date/time"):
        load_montevideo(tmp_path, start="soon")


@pytest.mark.shared_data
def test_real_montevideo(montevideo_bus):
    raw = json.loads((montevideo_bus / "montevideo_bus.json").read_text())
    y = np.array([nd["y"] for nd in raw["nodes"]], dtype=np.int64)  # [N, T]
    assert detect_format(montevideo_bus) == "montevideo"
    p = load(montevideo_bus)
    assert p.values.shape == (744, 675, 1) and p.mask.all()
    assert p.values.sum(dtype=np.float64) == y.sum() == 374595
    assert (p.values[:, :, 0] == y.T).all()
    assert p.node_ids[:2] == ["5289", "5290"]
    assert p.edge_index.shape == (2, 690) and (p.edge_index[0] != p.edge_index[1]).all()
    assert p.edge_weight.shape == (690,) and 0 <= p.edge_weight.min() and p.edge_weight.max() <= 1
    assert str(p.timestamps[0]).startswith("2020-10-01T00:00") and p.interval_minutes == 60
    assert str(p.timestamps[-1]).startswith("2020-10-31T23:00")
    assert p.units == "passengers/h"
    lat, lon = p.coords[:, 0], p.coords[:, 1]  # UTM 21S -> Montevideo
    assert -35.0 < lat.min() and lat.max() < -34.6 and -56.5 < lon.min() and lon.max() < -55.9
    d = load(montevideo_bus, weights="distance").edge_weight
    assert d.min() == pytest.approx(23.8) and d.max() == pytest.approx(1991.3)
