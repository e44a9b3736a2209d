"""Every plot writes a non-empty PNG from arrays and returns its path."""

from __future__ import annotations

import numpy as np
import pytest

from stmgt.evaluation import plots

PNG = b"\x89PNG\r\n\x1a\n"


def check(path, returned):
    assert returned == path
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_plot_forecasts(tmp_path, rng):
    L, R = 96, 3
    times = np.datetime64("2024-01-01T00:00") + np.arange(L) * np.timedelta64(5, "m")
    y = 60 + rng.normal(0, 5, (L, R))
    y[10:20, 1] = np.nan  # a gap in the observations
    mean = y + rng.normal(0, 2, (L, R))
    out = tmp_path / "figs" / "forecasts.png"  # the folder is created
    got = plots.plot_forecasts(times, y, mean, mean - 4, mean + 4, ["a", "b", "c"], out, "km/h", step=12)
    check(out, got)


def test_plot_error_by_horizon(tmp_path):
    out = tmp_path / "h.png"
    curves = {"stmgt": np.linspace(2, 4, 12).tolist(), "last_value": np.linspace(2.5, 7, 12).tolist()}
    check(out, plots.plot_error_by_horizon(curves, out, "km/h"))
    check(out, plots.plot_error_by_horizon(curves, out, "", step_minutes=5))


@pytest.mark.parametrize("coverage", [None, {lv / 10: min(1.0, lv / 10 + 0.03) for lv in range(1, 10)}])
def test_plot_pit(tmp_path, coverage):
    hist = np.full(20, 1 / 20) + np.linspace(-0.01, 0.01, 20)
    out = tmp_path / "pit.png"
    check(out, plots.plot_pit(hist.tolist(), out, coverage_by_level=coverage))


def test_plot_training_curves(tmp_path):
    hist = [{"epoch": e, "train_loss": 1 / (e + 1), "train_nll": 1.1 / (e + 1),
             "val_mae": 3 - 0.1 * e + (0.3 if e == 4 else 0), "lr": 1e-3 * 0.9**e} for e in range(8)]
    hist[2]["val_mae"] = float("nan")
    del hist[3]["lr"]
    out = tmp_path / "training.png"
    check(out, plots.plot_training_curves(hist, out))


def test_plot_error_by_time_of_day(tmp_path, rng):
    out = tmp_path / "tod.png"
    mae = rng.uniform(1, 3, 24)
    mae[3] = np.nan
    check(out, plots.plot_error_by_time_of_day(np.arange(24), mae, out))
    check(out, plots.plot_error_by_time_of_day(np.arange(288), rng.uniform(1, 3, 288), out, "mph",
                                               steps_per_day=288))


def test_plot_node_error_map(tmp_path, rng):
    n = 30
    lat, lon = 48.1 + rng.uniform(0, 0.1, n), 11.5 + rng.uniform(0, 0.15, n)
    mae = rng.uniform(1, 5, n)
    mae[0] = np.nan
    ei = np.stack([np.arange(n - 1), np.arange(1, n)])
    out = tmp_path / "map.png"
    check(out, plots.plot_node_error_map(lat, lon, mae, out, "km/h", edge_index=ei))
    check(out, plots.plot_node_error_map(lat, lon, mae, out))


def test_plot_gate(tmp_path, rng):
    out = tmp_path / "gate.png"
    alpha = rng.uniform(0, 1, (12, 40))
    check(out, plots.plot_gate(alpha, out))
    check(out, plots.plot_gate(alpha, out, sort_nodes=True))
    with pytest.raises(ValueError):
        plots.plot_gate(alpha[0], out)
