"""``stmgt evaluate`` end to end on a tiny trained STMGT: every figure it writes is read back through the
matplotlib objects it drew (captured as they are saved) and checked against numbers computed here
from the panel, ``history.csv``, ``training.json`` and the kept forecasts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stmgt.cli import main
from stmgt.evaluation import plots

pytestmark = pytest.mark.slow  # trains a (tiny) neural model

TINY = """
model: {name: stmgt, hidden: 16, heads: 2, blocks: 1, mixtures: 3}
train: {batch_size: 16, max_epochs: 3, progress: false, patience: 5, num_threads: 1}
"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny run evaluated once with every figure kept: ``(run folder, panel, metrics, {file name: Figure})``."""
    from stmgt.data.panel import Panel

    d = tmp_path_factory.mktemp("evaluate")
    assert main(["data", "synth", "--out", str(d / "city"), "--nodes", "6", "--days", "2", "--seed", "5"]) == 0
    (d / "tiny.yaml").write_text(TINY)
    assert main(["train", "--config", str(d / "tiny.yaml"), "--data", str(d / "city"), "--out", str(d / "run"),
                 "--quiet"]) == 0
    figures = {}
    save = plots._save

    def keep(fig, path):
        figures[path.name] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_save", keep)
        assert main(["evaluate", str(d / "run")]) == 0
    metrics = json.loads((d / "run" / "metrics.json").read_text())
    return d / "run", Panel.load(d / "city"), metrics, figures


def lines_by_label(ax) -> dict:
    return {ln.get_label(): ln for ln in ax.get_lines()}


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_every_figure_is_written_linked_and_labels_its_axes(evaluated):
    run, _, _, figures = evaluated
    written = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert written == sorted(figures)
    assert {"forecasts_step12.png", "coverage_by_step.png", "error_by_horizon.png", "error_by_time_of_day.png",
            "training.png", "pit.png", "node_error_map.png"} <= set(figures)
    report = (run / "report.md").read_text()
    for name in figures:
        assert f"(figures/{name})" in report
    for name, fig in figures.items():
        for ax in fig.axes:
            assert ax.get_ylabel(), (name, ax.get_title())
        assert any(ax.get_xlabel() for ax in fig.axes), name
    km_h = {"forecasts_step12.png": 0, "error_by_horizon.png": 0, "error_by_time_of_day.png": 0,
            "training.png": 1, "node_error_map.png": 1}  # the axes that measure speeds (node map: its colour bar)
    for name, i in km_h.items():
        assert "km/h" in figures[name].axes[i].get_ylabel(), name


def test_forecast_figure_draws_the_panels_observations_at_step_12(evaluated):
    run, panel, _, figures = evaluated
    fig = figures["forecasts_step12.png"]
    assert "horizon step 12 (60 min ahead)" in fig._suptitle.get_text()
    for ax in fig.axes:
        node = list(panel.node_ids).index(ax.get_title(loc="left"))
        drawn = lines_by_label(ax)
        times = np.asarray(drawn["observed"].get_xdata(), dtype="datetime64[ns]")
        idx = np.searchsorted(panel.timestamps.astype("datetime64[ns]"), times)
        want = np.where(panel.mask[idx, node, 0], panel.values[idx, node, 0], np.nan)
        np.testing.assert_allclose(drawn["observed"].get_ydata(), want, rtol=1e-6)
        gaps = np.asarray(drawn["no observation"].get_xdata(), dtype="datetime64[ns]")
        assert (gaps == times[~panel.mask[idx, node, 0]]).all()
        lo = {c.get_label(): min(p.vertices[:, 1].min() for p in c.get_paths()) for c in ax.collections}
        assert lo["90% interval"] < lo["80% interval"] < np.nanmin(drawn["forecast mean"].get_ydata())


def test_coverage_figure_holds_the_coverage_of_each_step(evaluated):
    """The oracle: each step's share of observed targets inside the kept 80% band of a fresh forecast."""
    from stmgt.evaluation.forecast import forecast_split
    from stmgt.forecaster import TrainedRun

    run, panel, metrics, figures = evaluated
    drawn = lines_by_label(figures["coverage_by_step.png"].axes[0])
    np.testing.assert_allclose(drawn["80% interval"].get_ydata(), metrics["coverage80_by_step"], rtol=1e-12)
    np.testing.assert_allclose(drawn["90% interval"].get_ydata(), metrics["coverage90_by_step"], rtol=1e-12)
    r = TrainedRun(run)
    _, fc = forecast_split(r.forecaster(), r.data(panel), "test", keep=True)
    inside = (fc.y >= fc.lo80) & (fc.y <= fc.hi80) & fc.mask
    np.testing.assert_allclose(metrics["coverage80_by_step"], inside.sum((0, 2)) / fc.mask.sum((0, 2)), atol=1e-6)
    assert set(drawn["nominal 80%"].get_ydata()) == {0.8} and set(drawn["nominal 90%"].get_ydata()) == {0.9}


def test_training_figure_marks_the_1_based_best_epoch_of_training_json(evaluated):
    run, _, _, figures = evaluated
    best = json.loads((run / "training.json").read_text())["best_epoch"]
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]  # Lightning counts from 0; the CLI says "epoch 1/3"
    assert best == int(history["val_mae"].idxmin()) + 1
    ax = figures["training.png"].axes[1]
    assert [t for t in legend(ax) if t.startswith("best")] == [f"best (epoch {best})"]
    np.testing.assert_array_equal(lines_by_label(ax)["validation MAE"].get_xdata(), [1, 2, 3])


def test_error_figures_put_the_baselines_beside_the_model(evaluated):
    run, panel, metrics, figures = evaluated
    ax = figures["error_by_horizon.png"].axes[0]
    assert legend(ax) == ["stmgt", "last value", "historical average"]
    drawn = lines_by_label(ax)
    np.testing.assert_allclose(drawn["stmgt"].get_ydata(), metrics["mae"]["by_step"])
    np.testing.assert_allclose(drawn["last value"].get_ydata(), metrics["baselines"]["last_value"]["mae"]["by_step"])
    ax = figures["error_by_time_of_day.png"].axes[0]
    assert legend(ax) == ["stmgt", "last value", "historical average"]
    assert ax.get_ylabel() == "MAE of the mean (km/h)"
    got = np.asarray(lines_by_label(ax)["last value"].get_ydata(), dtype=float)
    np.testing.assert_allclose(got, last_value_mae_by_hour(run, panel), rtol=1e-4, equal_nan=True)


def last_value_mae_by_hour(run, panel) -> np.ndarray:
    """The persistence forecast's MAE on the test windows by the hour of the target, from the panel alone."""
    from stmgt.forecaster import TrainedRun

    data = TrainedRun(run).data(panel)
    T, H = data.history, data.horizon
    v, m = panel.values[:, :, 0].astype(np.float64), panel.mask[:, :, 0]
    lo, hi = data.bounds["train"]
    train_mean = np.nansum(np.where(m[lo:hi], v[lo:hi], 0), 0) / m[lo:hi].sum(0)
    hour = (panel.timestamps - panel.timestamps.astype("datetime64[D]")) // np.timedelta64(1, "h")
    total, count = np.zeros(24), np.zeros(24)
    for s in data.starts["test"]:
        last = train_mean.copy()
        for t in range(s, s + T):  # carried forward over unobserved steps
            last = np.where(m[t], v[t], last)
        for t in range(s + T, s + T + H):
            ok = m[t]
            total[hour[t]] += np.abs(last - v[t])[ok].sum()
            count[hour[t]] += ok.sum()
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def test_plot_step_chooses_the_forecast_figure(evaluated, capsys):
    run, _, _, _ = evaluated
    assert main(["evaluate", str(run), "--plot-step", "6", "--json"]) == 0
    assert (run / "figures" / "forecasts_step6.png").is_file()
    assert "(figures/forecasts_step6.png)" in (run / "report.md").read_text()
    assert "forecasts_step12.png" not in (run / "report.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--plot-step", "13"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "stmgt: error: --plot-step 13: the run forecasts steps 1 to 12; choose one of them"
