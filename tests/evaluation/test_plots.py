"""The figures: every plot writes a PNG from arrays, and what a reader needs is in the figure itself,
read back through matplotlib's objects (axis labels with units, legends naming the baselines, the
lines' data), not its pixels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import dates as mdates

from stmgt.evaluation import plots

PNG = b"\x89PNG\r\n\x1a\n"


def check(path, returned):
    assert returned == path
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000


def legend_texts(fig_or_ax) -> list[str]:
    legends = fig_or_ax.legends if hasattr(fig_or_ax, "legends") and fig_or_ax.legends else []
    if not legends and hasattr(fig_or_ax, "get_legend") and fig_or_ax.get_legend() is not None:
        legends = [fig_or_ax.get_legend()]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def line(ax, label: str):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, (label, [ln.get_label() for ln in ax.get_lines()])
    return found[0]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_forecasts_figure_has_both_bands_marked_gaps_units_and_dates_with_the_year(tmp_path, rng):
    L, R = 96, 3
    times = np.datetime64("2023-12-31T20:00") + np.arange(L) * np.timedelta64(5, "m")
    y = 60 + rng.normal(0, 5, (L, R))
    y[10:20, 1] = np.nan  # a gap in the observations of road b
    y[50, 2] = np.nan
    mean = 60 + rng.normal(0, 2, (L, R))  # a forecast exists where the observation does not
    bands = {0.8: (mean - 4, mean + 4), 0.9: (mean - 6, mean + 6)}
    fig = plots.forecasts_figure(times, y, mean, bands, ["a", "b", "c"], "km/h", step=12, step_minutes=5)
    axes = fig.axes
    assert len(axes) == 3 and all(ax.get_ylabel() == "km/h" for ax in axes)
    assert "horizon step 12 (60 min ahead)" in fig._suptitle.get_text()
    assert {"80% interval", "90% interval", "forecast mean", "observed", "no observation"} <= set(legend_texts(fig))
    for r, ax in enumerate(axes):
        gaps = line(ax, "no observation").get_xdata()
        want = times[np.isnan(y[:, r])]
        assert len(gaps) == len(want) and (np.asarray(gaps, dtype="datetime64[ns]") == want).all()
        np.testing.assert_array_equal(line(ax, "observed").get_ydata(), y[:, r])
        bands_drawn = [c for c in ax.collections if c.get_label().endswith("interval")]
        assert sorted(c.get_label() for c in bands_drawn) == ["80% interval", "90% interval"]
        # each band is drawn from its own bounds
        ext = {c.get_label(): np.concatenate([p.vertices[:, 1] for p in c.get_paths()]) for c in bands_drawn}
        assert ext["90% interval"].max() == pytest.approx((mean[:, r] + 6).max())
        assert ext["80% interval"].min() == pytest.approx((mean[:, r] - 4).min())
        assert ext["80% interval"].max() == pytest.approx((mean[:, r] + 4).max())
    fig.canvas.draw()
    ticks = [t.get_text() for t in axes[-1].get_xticklabels() if t.get_text()]
    assert ticks and all(t[:4] in ("2023", "2024") for t in ticks), ticks  # the year is written
    assert isinstance(axes[-1].xaxis.get_major_formatter(), mdates.DateFormatter)
    assert plots.forecasts_figure(times, y, mean, bands, ["a", "b", "c"]).axes[0].get_ylabel() == "value"

    out = tmp_path / "figs" / "forecasts_step12.png"  # the folder is created
    check(out, plots.plot_forecasts(times, y, mean, bands, ["a", "b", "c"], out, "km/h", step=12))


def test_error_by_horizon_figure_has_the_baselines_beside_the_model_in_units(tmp_path):
    curves = {"stmgt": np.linspace(2, 4, 12).tolist(), "last value": np.linspace(2.5, 7, 12).tolist(),
              "historical average": [5.0] * 12}
    fig = plots.error_by_horizon_figure(curves, "mph", step_minutes=5)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "MAE (mph)" and ax.get_xlabel() == "horizon step (5 min each)"
    assert legend_texts(ax) == list(curves)
    for name, values in curves.items():
        np.testing.assert_array_equal(line(ax, name).get_xdata(), np.arange(1, 13))
        np.testing.assert_array_equal(line(ax, name).get_ydata(), values)
    assert line(ax, "stmgt").get_linestyle() == "-" and line(ax, "last value").get_linestyle() == "--"
    assert plots.error_by_horizon_figure(curves).axes[0].get_ylabel() == "MAE (data units)"
    out = tmp_path / "h.png"
    check(out, plots.plot_error_by_horizon(curves, out, "km/h", step_minutes=5))


def test_coverage_figure_draws_the_coverages_per_step_against_nominal_lines(tmp_path, rng):
    cov = {0.8: rng.uniform(0.6, 0.85, 12).tolist(), 0.9: rng.uniform(0.75, 0.95, 12).tolist()}
    fig = plots.coverage_by_step_figure(cov, step_minutes=5)
    ax = fig.axes[0]
    for level, values in cov.items():
        drawn = line(ax, f"{level:.0%} interval")
        np.testing.assert_array_equal(drawn.get_xdata(), np.arange(1, 13))
        np.testing.assert_array_equal(drawn.get_ydata(), values)
        nominal = line(ax, f"nominal {level:.0%}")
        assert set(np.asarray(nominal.get_ydata(), dtype=float)) == {level}
    assert "%" in ax.get_ylabel() and ax.get_xlabel() == "horizon step (5 min each)"
    assert ax.yaxis.get_major_formatter()(0.8, 0) == "80%"
    assert ax.get_ylim()[0] <= min(cov[0.8]) and ax.get_ylim()[1] == 1.0
    out = tmp_path / "coverage.png"
    check(out, plots.plot_coverage_by_step(cov, out))


@pytest.mark.parametrize("coverage", [None, {lv / 10: min(1.0, lv / 10 + 0.03) for lv in range(1, 10)}])
def test_plot_pit(tmp_path, coverage):
    hist = np.full(20, 1 / 20) + np.linspace(-0.01, 0.01, 20)
    out = tmp_path / "pit.png"
    check(out, plots.plot_pit(hist.tolist(), out, coverage_by_level=coverage))
    fig = plots.pit_figure(hist.tolist(), coverage)
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


def history(val: list[float]) -> list[dict]:
    """history.csv's rows: epochs counted from 0, as Lightning writes them."""
    return [{"epoch": e, "train_loss": 1 / (e + 1), "train_nll": 1.1 / (e + 1), "val_mae": v, "lr": 1e-3 * 0.9**e}
            for e, v in enumerate(val)]


def best_label(fig) -> str:
    labels = [t for t in legend_texts(fig.axes[1]) if t.startswith("best")]
    assert len(labels) == 1, labels
    return labels[0]


def test_training_figure_counts_epochs_from_1_and_marks_the_kept_epoch(tmp_path):
    val = [3.0, 2.9, float("nan"), 2.7, 3.0, 2.5, 2.6, 2.55]
    rows = history(val)
    del rows[3]["lr"]
    fig = plots.training_figure(rows, "km/h")
    first_best = int(np.nanargmin(val)) + 1  # the 6th epoch: history row 5
    assert best_label(fig) == f"best (epoch {first_best})" == "best (epoch 6)"
    drawn = line(fig.axes[1], "validation MAE")
    np.testing.assert_array_equal(drawn.get_xdata(), [e + 1 for e, v in enumerate(val) if v == v])
    assert fig.axes[1].get_ylabel() == "MAE (km/h)"
    assert all(ax.get_xlabel() == "epoch (from 1)" and ax.get_ylabel() for ax in fig.axes)
    # the epoch training.json says was kept wins over the minimum (e.g. a checkpoint chosen otherwise)
    fig = plots.training_figure(rows, "km/h", best_epoch=4)
    assert best_label(fig) == "best (epoch 4)"
    point = fig.axes[1].collections[0].get_offsets()[0]
    assert tuple(point) == (4.0, 2.7)
    out = tmp_path / "training.png"
    check(out, plots.plot_training_curves(rows, out, "km/h", best_epoch=4))


def test_error_by_time_of_day_has_the_baselines_and_units(tmp_path, rng):
    curves = {"stmgt": rng.uniform(1, 3, 24), "last value": rng.uniform(2, 4, 24),
              "historical average": rng.uniform(2, 5, 24)}
    curves["stmgt"][3] = np.nan
    fig = plots.time_of_day_figure(np.arange(24), curves, "mph", metric="MAE of the mean")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "MAE of the mean (mph)" and "hours" in ax.get_xlabel()
    assert legend_texts(ax) == list(curves)
    np.testing.assert_array_equal(line(ax, "last value").get_xdata(), np.arange(24) + 0.5)  # slot middles
    np.testing.assert_array_equal(line(ax, "historical average").get_ydata(), curves["historical average"])
    out = tmp_path / "tod.png"
    check(out, plots.plot_error_by_time_of_day(np.arange(24), curves, out, "mph"))
    one = rng.uniform(1, 3, 288)
    check(out, plots.plot_error_by_time_of_day(np.arange(288), one, out, "mph", steps_per_day=288))
    assert plots.time_of_day_figure(np.arange(288), one, steps_per_day=288).axes[0].get_xlim() == (0, 24)


def test_node_error_map_names_units_and_degrees(tmp_path, rng):
    n = 30
    lat, lon = 48.1 + rng.uniform(0, 0.1, n), 11.5 + rng.uniform(0, 0.15, n)
    mae = rng.uniform(1, 5, n)
    mae[0] = np.nan
    ei = np.stack([np.arange(n - 1), np.arange(1, n)])
    fig = plots.node_error_map_figure(lat, lon, mae, "km/h", edge_index=ei, metric="MAE of the mean")
    ax, bar = fig.axes
    assert ax.get_xlabel() == "longitude (degrees)" and ax.get_ylabel() == "latitude (degrees)"
    assert bar.get_ylabel() == "MAE of the mean (km/h)"
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
