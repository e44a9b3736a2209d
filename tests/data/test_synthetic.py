"""Tests of the embedded synthetic city (:mod:`stmgt.data.synthetic`)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stmgt.data.panel import Panel
from stmgt.data.synthetic import COVARIATE_NAMES, ROAD_CLASSES, synthetic_city, synthetic_graph
from stmgt.errors import ConfigError

EPN = 144 / 62


@pytest.fixture(scope="module")
def city() -> Panel:
    return synthetic_city()


@pytest.fixture(scope="module")
def graph():
    return synthetic_graph()


def _masked(p: Panel) -> np.ndarray:
    """Speeds ``[T, N]`` with NaN where unobserved."""
    return np.where(p.mask[..., 0], p.values[..., 0], np.nan)


def _profile_residuals(p: Panel) -> np.ndarray:
    """Speed minus each node's mean weekday/weekend time-of-day profile, minus the network mean."""
    v = _masked(p).astype(np.float64)
    tod, dow = p.calendar()
    key = (dow < 5).astype(np.int64) * 288 + np.round(tod * 288).astype(np.int64) % 288
    obs = np.isfinite(v)
    total = np.zeros((576, v.shape[1]))
    count = np.zeros((576, v.shape[1]))
    np.add.at(total, key, np.where(obs, v, 0.0))
    np.add.at(count, key, obs)
    res = v - (total / np.maximum(count, 1))[key]
    return res - np.nanmean(res, axis=1, keepdims=True)


def _is_strongly_connected(edge_index: np.ndarray, n: int) -> bool:
    def reach(src, dst):
        adj = [[] for _ in range(n)]
        for a, b in zip(src.tolist(), dst.tolist()):
            adj[a].append(b)
        seen, todo = {0}, [0]
        while todo:
            for b in adj[todo.pop()]:
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return len(seen) == n

    return reach(edge_index[0], edge_index[1]) and reach(edge_index[1], edge_index[0])


# ---------------------------------------------------------------------------- contract
def test_panel_shapes_dtypes_and_names(city):
    T, N = 28 * 288, 62
    assert city.values.shape == (T, N, 1) and city.values.dtype == np.float32
    assert city.mask.shape == (T, N, 1) and city.mask.dtype == bool
    assert city.timestamps.dtype == np.dtype("datetime64[ns]")
    assert city.timestamps[0] == np.datetime64("2024-01-01T00:00")
    assert (np.diff(city.timestamps) == np.timedelta64(5, "m")).all()
    assert city.node_ids[:2] == ["road-000", "road-001"] and len(set(city.node_ids)) == N
    assert city.edge_index.dtype == np.int64 and city.edge_index.shape[0] == 2
    assert city.edge_weight.shape == (city.edge_index.shape[1],)
    assert (city.edge_weight > 0).all() and city.edge_weight.max() == pytest.approx(1.0)
    assert city.coords.shape == (N, 2)
    assert city.covariates.shape == (T, 3) and city.covariates.dtype == np.float32
    assert city.covariate_names == ["temperature", "wind_speed", "precipitation"] == COVARIATE_NAMES
    assert city.name == "synthetic-city" and city.units == "km/h"
    city.validate()


def test_size_length_interval_and_start_are_parameters():
    p = synthetic_city(num_nodes=20, days=2, interval_minutes=15, seed=3, start="2024-07-06T00:00")
    assert p.values.shape == (192, 20, 1)
    assert p.interval_minutes == 15
    assert p.timestamps[0] == np.datetime64("2024-07-06")
    # a July city is warmer than a January one
    jan = synthetic_city(num_nodes=20, days=2, interval_minutes=15, seed=3)
    assert p.covariates[:, 0].mean() > jan.covariates[:, 0].mean() + 8


def test_same_seed_gives_identical_arrays_and_other_seeds_differ():
    a = synthetic_city(num_nodes=25, days=3, seed=7)
    b = synthetic_city(num_nodes=25, days=3, seed=7)
    c = synthetic_city(num_nodes=25, days=3, seed=8)
    for name in ("values", "mask", "edge_index", "edge_weight", "covariates", "coords"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.values, c.values)
    assert not np.array_equal(a.covariates, c.covariates)
    assert not np.array_equal(a.coords, c.coords)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_nodes": 1},
        {"num_nodes": 10.5},
        {"days": 0},
        {"interval_minutes": -5},
        {"days": 0.001},
        {"missing_rate": 0.9},
        {"seed": -1},
        {"edges_per_node": 0.5},
        {"start": "not a date"},
    ],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError, match="synthetic city"):
        synthetic_city(**{"num_nodes": 10, "days": 1, **kwargs})


# ---------------------------------------------------------------------------- graph
@pytest.mark.parametrize("n", [62, 500])
def test_graph_has_about_2_3_links_per_node_and_is_clean(n):
    g = synthetic_graph(n, seed=1)
    s, t = g.edge_index
    assert g.edge_index.dtype == np.int64
    assert abs(g.num_edges - EPN * n) <= 1
    assert s.min() >= 0 and t.min() >= 0 and max(s.max(), t.max()) < n
    assert not (s == t).any()
    assert len(set(zip(s.tolist(), t.tolist()))) == g.num_edges
    assert _is_strongly_connected(g.edge_index, n)
    # most roads carry both directions, some are one-way
    two_way = np.mean([(b, a) in set(zip(s.tolist(), t.tolist())) for a, b in zip(s.tolist(), t.tolist())])
    assert 0.7 < two_way < 1.0
    # links join nearby points only (a city, not a random graph)
    assert g.edge_length_km.max() < 3.0


def test_graph_matches_city_and_road_classes_differ_in_free_flow(city, graph):
    np.testing.assert_array_equal(city.edge_index, graph.edge_index)
    np.testing.assert_allclose(city.coords, graph.coords)
    assert graph.node_ids == city.node_ids
    assert graph.road_class.shape == (62,)
    assert set(np.unique(graph.road_class)) == set(range(len(ROAD_CLASSES)))
    ff = [graph.free_flow[graph.road_class == k].mean() for k in range(3)]
    assert ff[0] > ff[1] > ff[2] > 20
    assert graph.bottleneck.any()
    assert graph.capacity[graph.bottleneck].max() < graph.capacity[~graph.bottleneck].min()
    np.testing.assert_allclose(np.bincount(graph.edge_index[0], weights=graph.turn_share), 1.0)


def test_graph_generator_scales_to_8000_nodes():
    t0 = time.perf_counter()
    g = synthetic_graph(8000, seed=2)
    assert time.perf_counter() - t0 < 5.0
    assert abs(g.num_edges - EPN * 8000) <= 1
    assert not (g.edge_index[0] == g.edge_index[1]).any()


def test_city_generation_is_fast():
    t0 = time.perf_counter()
    p = synthetic_city(num_nodes=2000, days=1, seed=4)
    assert time.perf_counter() - t0 < 5.0
    assert p.values.shape == (288, 2000, 1)


def test_tiny_cities_work():
    for n in (2, 3, 5):
        p = synthetic_city(num_nodes=n, days=1)
        assert p.values.shape == (288, n, 1) and p.edge_index.shape[1] >= n


# ---------------------------------------------------------------------------- values
def test_speeds_are_physical_and_masked_values_excluded(city, graph):
    v, m = city.values[..., 0], city.mask[..., 0]
    obs = v[m]
    assert np.isfinite(obs).all()
    assert obs.min() >= 3.0
    assert (v <= 1.1 * graph.free_flow + 1e-3).all()
    assert (v[~m] == 0).all()  # the panel zeroes what is not observed
    assert 45 < obs.mean() < 70


def test_missing_readings_isolated_and_in_bursts(city):
    missing = ~city.mask[..., 0]
    assert 0.012 < missing.mean() < 0.03
    # longest run of consecutive missing steps per node
    longest = 0
    for col in missing.T:
        idx = np.flatnonzero(np.diff(np.concatenate([[0], col.astype(np.int8), [0]])))
        runs = idx[1::2] - idx[::2]
        longest = max(longest, runs.max(initial=0))
        if longest >= 12:
            break
    assert longest >= 12
    assert synthetic_city(num_nodes=10, days=2, missing_rate=0.0).mask.all()


def test_weekday_rush_hours_are_slower_than_nights_and_weekends(city):
    v = _masked(city)
    tod, dow = city.calendar()
    h = tod * 24
    weekday, weekend = dow < 5, dow >= 5
    night = np.nanmean(v[weekday & (h >= 1) & (h < 4)])
    morning = np.nanmean(v[weekday & (h >= 7.5) & (h < 9)])
    evening = np.nanmean(v[weekday & (h >= 16.5) & (h < 18.5)])
    assert morning < 0.85 * night and evening < 0.85 * night
    assert np.nanmean(v[weekend & (h >= 7.5) & (h < 9)]) > morning + 5


def test_rain_slows_traffic_at_the_same_time_of_day(city):
    precip = city.covariates[:, 2]
    rain = precip > 0.1
    assert 0.04 < rain.mean() < 0.25
    speed = np.nanmean(_masked(city), axis=1)
    tod, dow = city.calendar()
    bins = (dow < 5) * 24 + np.floor(tod * 24).astype(np.int64)
    ratios, weights = [], []
    for b in np.unique(bins):
        sel = bins == b
        if rain[sel].sum() >= 3 and (~rain[sel]).sum() >= 3:
            ratios.append(speed[sel & rain].mean() / speed[sel & ~rain].mean())
            weights.append(rain[sel].sum())
    assert len(ratios) >= 10
    assert np.average(ratios, weights=weights) < 0.95
    assert np.mean(np.array(ratios) < 1.0) > 0.8


def test_covariates_are_plausible_weather(city):
    temp, wind, precip = city.covariates.T
    assert -25 < temp.min() and temp.max() < 25  # January
    tod, _ = city.calendar()
    afternoon, early = temp[(tod > 0.55) & (tod < 0.7)], temp[(tod > 0.1) & (tod < 0.25)]
    assert afternoon.mean() > early.mean() + 2
    assert (wind >= 0).all() and 5 < wind.mean() < 30
    assert np.abs(np.diff(wind)).mean() < 2.0  # smooth
    assert (precip >= 0).all() and precip.max() > 1.0
    # rain comes in events lasting hours, not isolated steps
    r = (precip > 0.1).astype(np.int8)
    idx = np.flatnonzero(np.diff(np.concatenate([[0], r, [0]])))
    assert np.median(idx[1::2] - idx[::2]) >= 12


def test_congestion_spreads_upstream_with_a_delay(city):
    """On one-way links i -> j, the downstream node j leads its upstream neighbour i."""
    res = _profile_residuals(city)
    s, t = city.edge_index
    links = set(zip(s.tolist(), t.tolist()))
    one_way = np.array([(b, a) not in links for a, b in zip(s.tolist(), t.tolist())])
    assert one_way.sum() >= 8
    up, down = s[one_way], t[one_way]

    def xcorr(k: int, r: np.ndarray) -> float:
        """Mean over links of corr(down[t], up[t + k])."""
        T = r.shape[0]
        a = r[: T - k, down] if k >= 0 else r[-k:, down]
        b = r[k:, up] if k >= 0 else r[: T + k, up]
        ok = np.isfinite(a) & np.isfinite(b)
        a = np.where(ok, a - np.nanmean(a, axis=0), 0.0)
        b = np.where(ok, b - np.nanmean(b, axis=0), 0.0)
        return float(np.mean((a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))))

    lags = list(range(-8, 9))
    levels = [xcorr(k, res) for k in lags]
    assert lags[int(np.argmax(levels))] > 0
    changes = res[3:] - res[:-3]
    lead = np.mean([xcorr(k, changes) for k in (2, 3, 4, 5)])
    lag = np.mean([xcorr(-k, changes) for k in (2, 3, 4, 5)])
    assert lead > 0.02 and lead > lag + 0.01
