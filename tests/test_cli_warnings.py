"""The warnings of ``stmgt evaluate`` (a model that loses to a baseline, intervals off nominal) and of
``stmgt serve`` (an uncalibrated run), through the command line, on runs of the statistical models
(nothing to train: a few seconds)."""

from __future__ import annotations

import json
import shutil

import pytest

from stmgt.cli import main
from stmgt.evaluation.report import _number


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-day synthetic city and two runs on it: ``historical_average`` (with two days to average, far worse
    than persistence at short horizons) and ``last_value`` (the persistence baseline itself: it cannot lose to
    it, and beats the historical average at every horizon on these days)."""
    d = tmp_path_factory.mktemp("warnings")
    assert main(["data", "synth", "--out", str(d / "city"), "--nodes", "8", "--days", "3", "--seed", "3"]) == 0
    for model in ("historical_average", "last_value"):
        assert main(["train", "--data", str(d / "city"), "--model", model, "--out", str(d / model),
                     "--quiet"]) == 0
    return d


def warnings_of(err: str) -> list[str]:
    return [ln.removeprefix("stmgt: warning: ") for ln in err.splitlines() if ln.startswith("stmgt: warning: ")]


def report_warnings(run) -> list[str]:
    text = (run / "report.md").read_text()
    section = text[text.index("## Warnings"):text.index("## Protocol")]
    return [ln.removeprefix("- **Warning**: ").removesuffix(".") for ln in section.splitlines() if ln.startswith("- ")]


def test_a_model_that_loses_to_last_value_is_warned_about_on_stderr_and_in_the_report(runs, capsys):
    run = runs / "historical_average"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-plots"]) == 0
    err = capsys.readouterr().err
    m = json.loads((run / "metrics.json").read_text())
    lv = m["baselines"]["last_value"]["mae"]
    lost = [k for k in ("3", "6", "12", "avg") if m["mae"][k] > lv[k]]
    assert lost[:2] == ["3", "6"]  # the run does lose to persistence (by 3x at step 3 on these three days)
    parts = []
    for k in lost:
        a, b = _number(m["mae"][k], lv[k])
        parts.append(f"{'at step ' + k if k != 'avg' else 'on average over all steps'} (MAE {a} vs {b} km/h)")
    want = f"historical_average loses to last value {', '.join(parts[:-1])} and {parts[-1]}"
    got = warnings_of(err)
    assert want in got
    assert want in report_warnings(run)
    assert got == report_warnings(run) == m["warnings"]
    assert not any("loses to historical average" in w for w in got)  # a tie with itself is no loss


def test_a_model_that_does_not_lose_gets_no_baseline_warning(runs, capsys):
    run = runs / "last_value"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-plots"]) == 0
    got = warnings_of(capsys.readouterr().err)
    m = json.loads((run / "metrics.json").read_text())
    for base in m["baselines"].values():
        assert all(m["mae"][k] <= base["mae"][k] for k in ("3", "6", "12", "avg"))
    assert not any("loses to" in w for w in got) and not any("loses to" in w for w in report_warnings(run))
    off = [lv for lv in (80, 90) if abs(m[f"coverage{lv}"] - lv / 100) > 0.05]
    coverage = [w for w in got if "interval covers" in w]
    assert len(coverage) == (1 if off else 0) and got == coverage
    if coverage:
        assert coverage[0].endswith(f"`stmgt calibrate {run}`")


def test_coverage_off_nominal_after_calibration_names_no_command(runs, tmp_path, capsys):
    run = tmp_path / "calibrated"
    shutil.copytree(runs / "historical_average", run)
    assert main(["calibrate", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-plots", "--json"]) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["calibrated"] is True
    for w in warnings_of(out.err):
        assert "stmgt calibrate" not in w


@pytest.fixture
def no_server(monkeypatch):
    """``stmgt serve`` up to the moment its server would start (counted), not serving."""
    uvicorn = pytest.importorskip("uvicorn")  # the serve extra

    started = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: started.append(sockets))
    return started


def test_serve_warns_at_start_about_an_uncalibrated_run(runs, tmp_path, capsys, no_server):
    run = runs / "last_value"
    assert not (run / "calibration.json").exists()
    capsys.readouterr()
    assert main(["serve", str(run), "--db", str(tmp_path / "s.db"), "--port", "0"]) == 0
    assert len(no_server) == 1
    out = capsys.readouterr()
    assert warnings_of(out.err) == [
        f"{run} is not calibrated: its 80% and 90% intervals are the model's raw spread; run"
        f" `stmgt calibrate {run}` (fitted on its validation split), then restart the service"]
    assert "serving last_value" in out.out

    calibrated = tmp_path / "calibrated"
    shutil.copytree(run, calibrated)
    assert main(["calibrate", str(calibrated)]) == 0
    capsys.readouterr()
    assert main(["serve", str(calibrated), "--db", str(tmp_path / "c.db"), "--port", "0"]) == 0
    assert len(no_server) == 2 and warnings_of(capsys.readouterr().err) == []


def test_the_serve_warning_comes_before_the_service_starts(runs, tmp_path, capsys, monkeypatch):
    uvicorn = pytest.importorskip("uvicorn")

    seen = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.append(capsys.readouterr().err))
    assert main(["serve", str(runs / "last_value"), "--db", str(tmp_path / "s.db"), "--port", "0"]) == 0
    assert len(seen) == 1 and "is not calibrated" in seen[0]
