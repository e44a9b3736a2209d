"""End to end through the command line on a tiny synthetic city (about a minute)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from stmgt.cli import main

TINY = """
model: {hidden: 16, heads: 2, blocks: 1, mixtures: 3}
train: {batch_size: 16, max_epochs: 2, progress: false, patience: 5}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    assert main(["data", "synth", "--out", str(d / "city"), "--nodes", "8", "--days", "2", "--seed", "3"]) == 0
    (d / "tiny.yaml").write_text(TINY)
    assert main(["train", "--config", str(d / "tiny.yaml"), "--data", str(d / "city"), "--out", str(d / "run")]) == 0
    return d


def test_run_folder_is_complete_and_reproducible(trained):
    run = trained / "run"
    for f in ("config.yaml", "versions.json", "data.json", "graph.npz", "model.safetensors", "history.csv",
              "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run / f).exists(), f
    v = json.loads((run / "versions.json").read_text())
    assert v["torch"] == torch.__version__
    assert len(pd.read_csv(run / "history.csv")) == 2


def test_checkpoint_reload_predict_gives_identical_numbers(trained, capsys):
    from stmgt.data.panel import Panel
    from stmgt.predict import write_recent_observations
    from stmgt.run import Run

    run = Run(trained / "run")
    panel = Panel.load(trained / "city")
    recent = write_recent_observations(run, panel, trained / "recent.csv")
    assert main(["predict", str(run.dir), "--input", str(recent), "--output", str(trained / "f1.csv")]) == 0
    assert main(["predict", str(run.dir), "--input", str(recent), "--output", str(trained / "f2.parquet")]) == 0
    f1, f2 = pd.read_csv(trained / "f1.csv"), pd.read_parquet(trained / "f2.parquet")
    assert len(f1) == 12 * 8 and {"timestamp", "issued_at", "step", "node_id", "mean", "q10", "q50", "q90"} <= set(f1)
    np.testing.assert_allclose(f1["mean"], f2["mean"], atol=1e-4)
    assert (f1["q10"] <= f1["q50"]).all() and (f1["q50"] <= f1["q90"]).all()
    assert pd.to_datetime(f1["timestamp"]).min() > pd.to_datetime(f1["issued_at"]).max() - pd.Timedelta("1s")

    # the weights chosen on validation, read from the Lightning checkpoint, give the same forecast
    model = run.model()
    ck = torch.load(run.dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    sd = {k.removeprefix("model."): v for k, v in ck.items() if k.startswith("model.")}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    data = run.data(panel)
    batch = data.batch_at(data.starts["test"][:4])
    with torch.no_grad():
        a = model(batch, data.edge_index).mean
        model2 = run.model()
        torch.testing.assert_close(a, model2(batch, data.edge_index).mean, rtol=0, atol=0)


def test_evaluate_json_has_the_documented_keys(trained, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained / "run"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for k in ("mae", "rmse", "mape"):
        assert set(res[k]) >= {"3", "6", "12", "avg"}
    for k in ("crps", "coverage80", "coverage90"):
        assert 0 <= res[k] < 1e3
    for b in ("last_value", "historical_average"):
        assert set(res["baselines"][b]["mae"]) >= {"3", "6", "12", "avg"}
    run = trained / "run"
    assert (run / "metrics.json").exists() and (run / "report.md").exists()
    pngs = list((run / "figures").glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 1000 for p in pngs)


def test_resume_continues_training(trained):
    run = trained / "run"
    assert main(["train", "--config", str(trained / "tiny.yaml"), "--data", str(trained / "city"), "--out", str(run),
                 "--resume", str(run / "checkpoints" / "last.ckpt"), "--max-epochs", "3"]) == 0
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "/nonexistent/run"], "no such run folder"),
    (["train", "--data", "/nonexistent/data", "--out", "run"], "/nonexistent/data"),
    (["predict", "/nonexistent/run", "--input", "a.csv", "--output", "b.csv"], "no such run folder"),
    (["train", "--resume", "/nonexistent/last.ckpt"], "no checkpoint to resume from"),
    (["train", "--data", "synthetic"], "stmgt train needs --out RUN_DIR"),
])
def test_user_mistakes_give_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert list(tmp_path.iterdir()) == []  # nothing written
    err = capsys.readouterr().err.strip()
    assert err.startswith("stmgt: error:") and message in err and "\n" not in err


def test_bad_prediction_input(trained, capsys):
    bad = trained / "bad.csv"
    bad.write_text("timestamp,node_id,value\n2024-01-01 00:00,not-a-road,3\n")
    assert main(["predict", str(trained / "run"), "--input", str(bad), "--output", str(trained / "o.csv")]) == 2
    assert "not-a-road" in capsys.readouterr().err
    bad.write_text("time,node,speed\n")
    assert main(["predict", str(trained / "run"), "--input", str(bad), "--output", str(trained / "o.csv")]) == 2
    assert "needs columns timestamp,node_id,value" in capsys.readouterr().err


def test_calibrate_then_evaluate_and_predict_apply_it(trained, capsys):
    run = trained / "run"
    assert main(["calibrate", str(run)]) == 0
    cal = json.loads((run / "calibration.json").read_text())
    assert len(cal["factors"]) == 12 and all(f > 0 for f in cal["factors"])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--no-plots"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["calibrated"] is True and "coverage80" in res["uncalibrated"]
    (run / "calibration.json").unlink()
