"""report.md: protocol, point and probabilistic tables, figure links; mean ± std tables over seeds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stmgt.evaluation.report import (
    evaluation_warnings,
    figure_caption,
    metrics_table_markdown,
    probabilistic_table_markdown,
    write_report,
)


def fake_metrics(mae: float, H: int = 12) -> dict:
    per = lambda v: {"3": v, "6": v * 1.2, "12": v * 1.5, "avg": v * 1.2, "by_step": [v] * H}  # noqa: E731
    return {
        "mae": per(mae), "rmse": per(mae * 1.6), "mape": per(mae * 2.5), "count": 123456,
        "nll": 2.5 + mae / 10, "crps": mae * 0.7, "crps_normalised": mae / 100,
        "coverage80": 0.78, "width80": 9.0, "coverage90": 0.88, "width90": 11.5,
        "pit_histogram": [0.05] * 20, "crps_by_step": [mae * 0.7] * H,
    }


def test_table_single_runs_and_best_in_bold():
    rows = {"stmgt": fake_metrics(2.0), "last_value": fake_metrics(3.0)}
    table = metrics_table_markdown(rows, step_minutes=5)
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| Model | MAE 3 (15 min) | RMSE 3 (15 min) | MAPE 3 (15 min)")
    assert "MAE 12 (60 min)" in lines[0] and "MAE avg" in lines[0]
    assert lines[2].startswith("| stmgt | **2.00** | **3.20** | **5.00%** | **2.40**")
    assert lines[3].startswith("| last_value | 3.00 | 4.80 | 7.50% |")
    assert "±" not in table


def test_table_mean_std_over_seeds():
    seeds = [fake_metrics(2.0), fake_metrics(2.2), fake_metrics(2.4)]
    table = metrics_table_markdown({"stmgt": seeds, "gru": [fake_metrics(3.0)]}, horizons=(3,))
    row = next(line for line in table.splitlines() if line.startswith("| stmgt"))
    std = np.std([2.0, 2.2, 2.4], ddof=1)
    assert row.startswith(f"| stmgt (n=3) | **2.20 ± {std:.2f}** |")
    assert "| gru (n=1) | 3.00 |" in table  # one run: no spread to show
    prob = probabilistic_table_markdown({"stmgt": seeds})
    assert "78.0 ± 0.0%" in prob and "Coverage 90%" in prob


def test_missing_values_and_short_horizon():
    m = fake_metrics(2.0, H=6)
    del m["mae"]["12"], m["rmse"]["12"], m["mape"]["12"], m["nll"]
    table = metrics_table_markdown({"a": m})
    assert table.splitlines()[2].count("—") == 3
    assert "—" in probabilistic_table_markdown({"a": m})


def test_write_report(tmp_path):
    run = tmp_path / "run"
    figs = {}
    for key in ("forecasts", "pit", "custom_thing"):
        p = run / "figures" / f"{key}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x89PNG")
        figs[key] = p
    metrics = {"model": "stmgt", "split": "test", **fake_metrics(2.0)}
    baselines = {"last_value": fake_metrics(3.0), "historical_average": fake_metrics(4.0)}
    info = {"dataset": "synthetic-city", "units": "km/h", "split": "test", "history": 12, "horizon": 12,
            "fractions": [0.7, 0.1, 0.2], "model": "stmgt", "nodes": 62, "windows": 1590,
            "interval_minutes": 5}
    path = write_report(run, metrics, baselines, info, figs)
    assert path == run / "report.md"
    text = path.read_text()
    assert text.startswith("# Forecast report: stmgt on synthetic-city")
    for phrase in ("70%/10%/20%", "inside", "training", "masked", "validation MAE", "evaluated once",
                   "12 history steps (60 min) -> 12 horizon steps (60 min ahead)", "123,456 observed",
                   "1590 windows"):
        assert phrase in text, phrase
    assert "## Point forecasts" in text and "## Probabilistic forecasts" in text
    for name in ("stmgt", "last_value", "historical_average"):
        assert re.search(rf"^\| {name} \|", text, re.M), name
    assert "MAE 3 (15 min)" in text and "Coverage 80%" in text and "Width 90%" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["figures/forecasts.png", "figures/pit.png", "figures/custom_thing.png"]
    for link in links:
        assert (run / link).is_file()


def test_report_calibrated_and_validation_split(tmp_path):
    uncal = {"crps": 1.5, "coverage80": 0.6, "coverage90": 0.7, "width80": 5.0, "width90": 6.0}
    metrics = {**fake_metrics(2.0), "calibrated": True, "uncalibrated": uncal}
    path = write_report(tmp_path, metrics, {}, {"model": "m", "split": "val", "horizon": 6}, {})
    text = path.read_text()
    assert "| m (uncalibrated) |" in text and "spread calibration" in text
    assert "not the test split" in text and "evaluated once" not in text
    assert "MAE 12" not in text and "step 6" in text and "errors at steps 3, 6 and" in text
    assert "## Figures" not in text


@pytest.mark.parametrize("bad", [{"mae": None}, {}])
def test_garbage_rows_do_not_crash(bad):
    assert metrics_table_markdown({"x": bad, "y": fake_metrics(1.0)}).count("—") >= 12


# ------------------------------------------------------------------------------------------- warnings
def with_mae(m: dict, **mae) -> dict:
    """``m`` with the MAE at the given horizons (``h3=..``, ``avg=..``) replaced."""
    out = {**m, "mae": dict(m["mae"])}
    for k, v in mae.items():
        out["mae"][k.removeprefix("h")] = v
    return out


def test_a_model_that_beats_or_ties_both_baselines_and_covers_nominal_gets_no_warning():
    model = {**fake_metrics(2.0), "coverage80": 0.75, "coverage90": 0.94}  # exactly 5 and 4 points off
    baselines = {"last_value": fake_metrics(3.0), "historical_average": fake_metrics(2.0)}  # a tie is no loss
    assert evaluation_warnings(model, baselines, "runs/x", "stmgt", "mph") == []


def test_losing_at_one_horizon_names_it_and_both_numbers():
    model = with_mae(fake_metrics(2.0), h12=4.31)
    lv = with_mae(fake_metrics(2.0), h3=3.5, h6=3.5, h12=4.02, avg=3.5)
    ha = fake_metrics(9.0)
    got = evaluation_warnings(model, {"last_value": lv, "historical_average": ha}, "runs/x", "stmgt", "mph")
    assert got == ["stmgt loses to last value at step 12 (MAE 4.31 vs 4.02 mph)"]


def test_losing_at_several_horizons_is_one_line_per_baseline():
    model = with_mae(fake_metrics(2.0), h3=2.5, h6=2.4, h12=4.0211, avg=2.4)
    lv = with_mae(fake_metrics(2.0), h3=2.41, h6=2.9, h12=4.0183, avg=3.0)  # 4.02 vs 4.02: printed to 3 digits
    ha = with_mae(fake_metrics(2.0), h3=9.0, h6=9.0, h12=9.0, avg=2.39)
    got = evaluation_warnings(model, {"last_value": lv, "historical_average": ha}, "runs/x", "stmgt", "")
    assert got == ["stmgt loses to last value at step 3 (MAE 2.50 vs 2.41) and at step 12 (MAE 4.021 vs 4.018)",
                   "stmgt loses to historical average on average over all steps (MAE 2.40 vs 2.39)"]


def test_a_baseline_without_a_number_at_a_horizon_is_no_loss():
    model = with_mae(fake_metrics(5.0), h12=float("nan"))
    base = with_mae(fake_metrics(1.0), h3=None, h6=None, avg=None)
    assert evaluation_warnings(model, {"last_value": base}, "r") == []


@pytest.mark.parametrize("c80, c90, off", [(0.62, 0.88, ["80% interval covers 62.0%"]),
                                            (0.80, 0.97, ["90% interval covers 97.0%"]),
                                            (0.70, 0.80, ["80% interval covers 70.0%", "90% interval 80.0%"])])
def test_coverage_off_nominal_suggests_calibrate_unless_calibrated(c80, c90, off):
    m = {**fake_metrics(1.0), "model": "stmgt", "coverage80": c80, "coverage90": c90}
    (line,) = evaluation_warnings(m, {}, "runs/demo")
    assert line.startswith("stmgt's ") and all(o in line for o in off)
    assert line.endswith("`stmgt calibrate runs/demo`") and "more than 5 points off nominal" in line
    (line,) = evaluation_warnings({**m, "calibrated": True}, {}, "runs/demo")
    assert "stmgt calibrate" not in line and "after the spread calibration" in line


def test_report_warnings_section_comes_first(tmp_path):
    lines = ["stmgt loses to last value at step 12 (MAE 4.31 vs 4.02 mph)", "second warning"]
    text = write_report(tmp_path, fake_metrics(2.0), {}, {"model": "stmgt"}, {}, warnings=lines).read_text()
    assert text.index("## Warnings") < text.index("## Protocol")
    section = text[text.index("## Warnings"):text.index("## Protocol")]
    assert [ln for ln in section.splitlines() if ln.startswith("- ")] == [
        "- **Warning**: stmgt loses to last value at step 12 (MAE 4.31 vs 4.02 mph).", "- **Warning**: second warning."]
    text = write_report(tmp_path, fake_metrics(2.0), {}, {"model": "stmgt"}, {}, warnings=[]).read_text()
    assert "## Warnings\n\nNone: `stmgt` is at least as good as every baseline" in text
    assert "## Warnings" not in write_report(tmp_path, fake_metrics(2.0), {}, {}, {}).read_text()


def test_figure_captions_name_the_forecast_step():
    assert "horizon step 6" in figure_caption("forecasts_step6") and "90%" in figure_caption("forecasts_step6")
    assert figure_caption("coverage_by_step").startswith("Coverage of the 80% and 90% intervals")
    assert figure_caption("custom_thing") == "Custom thing"
