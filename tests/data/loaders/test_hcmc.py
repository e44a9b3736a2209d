"""HCMC loader: the real collector runs (parquet and runs/ folders) and a tiny hand-made one."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stmgt.data.loaders import detect_format, load, load_hcmc
from stmgt.errors import DataError


@pytest.mark.shared_data
def test_real_parquet(hcmc):
    assert detect_format(hcmc) == "hcmc"
    p = load(hcmc)  # prefers processed/all_runs_combined.parquet (66 runs)
    assert p.num_nodes == 144 and p.units == "km/h" and p.interval_minutes == 30
    assert p.values.shape == (161, 144, 1)  # 2025-10-30 03:00 .. 2025-11-02 11:00 every 30 min
    assert p.mask[..., 0].any(1).sum() == 65  # 66 runs, the first two 17 s apart share a step
    assert p.mask[..., 0].any(1).sum() == p.mask[..., 0].all(1).sum()  # a run covers every segment
    obs = p.values[p.mask]
    assert 3.0 < obs.min() and obs.max() < 53.0
    assert p.covariate_names == ["temperature", "wind_speed", "precipitation"]
    assert np.isfinite(p.covariates).all()
    assert 24 <= p.covariates[:, 0].min() <= p.covariates[:, 0].max() <= 31.5
    assert all("->" in n for n in p.node_ids)
    assert p.coords.shape == (144, 2) and (10.7 < p.coords[:, 0]).all() and (p.coords[:, 1] > 106.6).all()
    # line graph: a -> b feeds b -> c
    src = [p.node_ids[i].split("->") for i in p.edge_index[0]]
    dst = [p.node_ids[j].split("->") for j in p.edge_index[1]]
    assert all(s[1] == d[0] and s[0] != d[1] for s, d in zip(src, dst))
    assert p.edge_index.shape == (2, 254)


@pytest.mark.shared_data
def test_real_runs_match_parquet_nodes(hcmc):
    r = load_hcmc(hcmc, source="runs", interval="1h")
    assert r.num_nodes == 144 and r.interval_minutes == 60
    assert r.values.shape == (16, 144, 1)  # 03:00 .. 18:00 hourly
    assert r.mask[..., 0].any(1).sum() == 12  # 16 runs fall in 12 distinct hours
    q = load_hcmc(hcmc / "processed" / "all_runs_combined.parquet", interval="1h")
    assert q.node_ids == r.node_ids and np.array_equal(q.edge_index, r.edge_index)


def _tiny_runs(root, weather=True):
    segs = [("n1", "n2", 20.0), ("n2", "n3", 30.0), ("n3", "n1", 40.0), ("n2", "n1", 10.0)]
    for k, stamp in enumerate(["20250101_080000", "20250101_081000", "20250101_100500"]):
        d = root / "runs" / f"run_{stamp}"
        d.mkdir(parents=True)
        rec = [{"node_a_id": a, "node_b_id": b, "speed_kmh": v + k} for a, b, v in segs]
        (d / "traffic_edges.json").write_text(json.dumps(rec))
        if weather:
            w = [{"node_id": "n1", "temperature_c": 25.0 + k, "precipitation_mm": 0.0, "wind_speed_kmh": 3.0}]
            (d / "weather_snapshot.json").write_text(json.dumps(w))
        nodes = [{"node_id": n, "lat": 10.0 + i, "lon": 106.0} for i, n in enumerate(["n1", "n2", "n3"])]
        (d / "nodes.json").write_text(json.dumps(nodes))


def test_tiny_runs(tmp_path):
    _tiny_runs(tmp_path)
    assert detect_format(tmp_path) == "hcmc"
    p = load_hcmc(tmp_path)
    assert p.node_ids == ["n1->n2", "n2->n1", "n2->n3", "n3->n1"]
    assert p.values.shape == (5, 4, 1)  # 08:00 .. 10:00 every 30 min
    assert p.mask[:, 0, 0].tolist() == [True, False, False, False, True]
    assert p.values[0, 0, 0] == pytest.approx(20.5)  # two runs in one step: mean
    assert p.covariates[:, 0].tolist() == [25.5, 25.5, 25.5, 25.5, 27.0]  # filled between runs
    pairs = sorted(zip(*p.edge_index.tolist()))
    # n1->n2 feeds n2->n3 (not the U-turn n2->n1); n2->n3 feeds n3->n1; n3->n1 feeds n1->n2
    assert pairs == [(0, 2), (2, 3), (3, 0)]
    assert np.allclose(p.coords[0], [10.5, 106.0])


def test_errors(tmp_path):
    with pytest.raises(DataError, match="no run_YYYYmmdd_HHMMSS"):
        load_hcmc(tmp_path, source="runs")
    _tiny_runs(tmp_path, weather=False)
    with pytest.raises(DataError, match="weather column 'temperature' has no value"):
        load_hcmc(tmp_path)
    (tmp_path / "processed").mkdir()
    pd.DataFrame({"timestamp": [pd.Timestamp("2025-01-01")], "speed_kmh": [1.0]}).to_parquet(
        tmp_path / "processed" / "all_runs_combined.parquet")
    with pytest.raises(DataError, match="missing column\\(s\\) node_a_id, node_b_id"):
        load_hcmc(tmp_path)
    with pytest.raises(DataError, match="source='x'"):
        load_hcmc(tmp_path, source="x")
