"""End to end through the command line on a tiny synthetic city (about a minute)."""

import json
from pathlib import Path

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
    from stmgt.forecaster import TrainedRun
    from stmgt.predict import write_recent_observations

    run = TrainedRun(trained / "run")
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


@pytest.mark.slow
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
    (["data", "synth", "--out", "city", "--nodes", "1"], "--nodes: must be >= 2 (got 1)"),
    (["data", "synth", "--out", "city", "--interval", "0"], "--interval: must be >= 1 (got 0)"),
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


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("stmgt: error: ") and "\n" not in err, err
    return err.removeprefix("stmgt: error: ")


def test_a_bad_option_value_is_blamed_on_the_option_and_a_file_value_on_the_file(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = str(tmp_path / "run")
    assert main(["train", "--config", str(cfg), "--horizon", "0", "--out", out]) == 2
    assert _one_error(capsys) == "--horizon: must be >= 1 (got 0)"
    assert main(["train", "--model", "transformerx", "--out", out]) == 2
    assert _one_error(capsys).startswith("--model: must be 'stmgt', ")
    cfg.write_text(TINY + "data: {horizon: 0}\n")
    assert main(["train", "--config", str(cfg), "--seed", "1", "--out", out]) == 2
    assert _one_error(capsys) == f"{cfg}: data.horizon: must be >= 1 (got 0)"
    assert main(["benchmark", "--max-epochs", "0", "--models", "gru", "--out", str(tmp_path / "bm")]) == 2
    assert _one_error(capsys) == "--max-epochs: must be >= 1 (got 0)"
    assert main(["demo", "--days", "-1", "--out", out]) == 2
    assert _one_error(capsys) == "--days: must be > 0 (got -1.0)"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, says", [
    ("model: [1, 2]\n", "model: must be a section of `key: value` lines, not a list ([1, 2])"),
    ("- 1\n", "the top level must be a mapping with data, model and train sections, not a list"),
    ("trian: {lr: 0.01}\n", "trian: unknown section (the sections are data, model, train)"),
    ("train: [1, 2\n", "not valid YAML at line 2 (the end of the file)"),
    (b"model:\n  name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at line 2); save it as UTF-8"),
])
def test_malformed_config_files_end_in_one_line(tmp_path, capsys, text, says):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    for argv in (["train", "--config", str(cfg), "--model", "gru", "--out", str(tmp_path / "run")],
                 ["benchmark", "--config", str(cfg), "--models", "gru", "--out", str(tmp_path / "bm")]):
        assert main(argv) == 2
        err = _one_error(capsys)
        assert err.startswith(f"{cfg}: ") and says in err, err


def _output_cases(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    return a_file, [
        (["data", "synth", "--nodes", "8", "--days", "1", "--out"], "--out"),
        (["data", "fetch", "los_loop", "--dir"], "--dir"),
        (["benchmark", "--models", "gru", "--seeds", "1", "--out"], "--out"),
    ]


def test_an_output_folder_that_is_a_file_or_under_a_file(tmp_path, capsys):
    a_file, cases = _output_cases(tmp_path)
    for argv, option in cases:
        assert main(argv + [str(a_file)]) == 2
        assert _one_error(capsys) == f"{option}: {a_file} is a file, not a folder; give a folder path"
        assert main(argv + [str(a_file / "sub")]) == 2
        assert _one_error(capsys) == (f"{option}: cannot create the folder {a_file / 'sub'}: {a_file} is a file;"
                                      " give a folder path")
    assert a_file.read_text() == "not a folder"


def test_an_output_folder_under_a_read_only_folder(tmp_path, capsys):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("permissions do not bind here (running as root)")
        _, cases = _output_cases(tmp_path)
        for argv, option in cases:
            assert main(argv + [str(ro / "out")]) == 2
            assert _one_error(capsys) == (f"{option}: cannot write in {ro} (permission denied);"
                                          " give a folder you can write to")
    finally:
        ro.chmod(0o700)


def test_ensure_writable_dir_accepts_new_and_existing_folders(tmp_path):
    from stmgt.paths import ensure_writable_dir

    assert ensure_writable_dir(tmp_path, "--out") == tmp_path
    assert ensure_writable_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # nothing is created


def test_an_os_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    import errno
    import io

    from stmgt.data.panel import Panel

    out = tmp_path / "city"

    def full(self, directory):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "panel.npz"))

    monkeypatch.setattr(Panel, "save", full)
    argv = ["data", "synth", "--nodes", "8", "--days", "1", "--out", str(out)]
    assert main(argv) == 2
    assert _one_error(capsys) == f"{out / 'panel.npz'}: No space left on device"

    def gone(self, directory):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "a.tmp", None, "b")

    monkeypatch.setattr(Panel, "save", gone)
    assert main(argv) == 2
    assert _one_error(capsys) == "a.tmp -> b: No such file or directory"

    for bug in (RuntimeError("a bug"), io.UnsupportedOperation("not readable"), KeyError("x")):
        def broken(self, directory, bug=bug):
            raise bug

        monkeypatch.setattr(Panel, "save", broken)
        with pytest.raises(type(bug)):
            main(argv)
    monkeypatch.setattr(Panel, "save", full)
    monkeypatch.setenv("STMGT_TRACEBACK", "1")
    with pytest.raises(OSError):
        main(argv)


def test_an_output_folder_without_write_permission_simulated(tmp_path, capsys, monkeypatch):
    """The read-only case where permissions do not bind (root): the access check says no."""
    import stmgt.paths

    locked = tmp_path / "locked"
    locked.mkdir()
    real = stmgt.paths.os.access
    monkeypatch.setattr(stmgt.paths.os, "access", lambda p, mode: Path(p) != locked and real(p, mode))
    _, cases = _output_cases(tmp_path)
    for argv, option in cases:
        assert main(argv + [str(locked / "new" / "out")]) == 2
        assert _one_error(capsys) == (f"{option}: cannot write in {locked} (permission denied);"
                                      " give a folder you can write to")


def test_benchmark_names_the_users_config_not_its_temporary_copy(tmp_path, capsys):
    cfg = tmp_path / "variants.yaml"
    cfg.write_text("model: {hidden: 0}\nmodels:\n  gru_wide: {model: {name: gru, hidden: 12}}\n")
    argv = ["benchmark", "--models", "gru_wide", "--seeds", "1", "--config", str(cfg), "--out", str(tmp_path / "bm")]
    assert main(argv) == 2
    assert _one_error(capsys) == f"{cfg}: model.hidden: must be >= 4 (got 0)"
    cfg.write_bytes(b"models:\n  gru_wide: {model: {name: gr\xfc}}\n")
    assert main(argv) == 2
    assert _one_error(capsys) == f"{cfg}: not UTF-8 text (byte 0xfc at line 2); save it as UTF-8"


# ------------------------------------------------------------------ progress on long work

def test_the_demo_steps_say_how_long_each_took():
    import io

    from stmgt.cli import Steps

    clock = iter([0.0, 1.0, 3.5, 4.0, 376.0, 377.0, 377.9])
    out = io.StringIO()
    steps = Steps(3, stream=out, clock=lambda: next(clock))  # starts at 0 s
    with steps.step("making the city", " (10 days)") as s:  # 1 s to 3.5 s
        s.note = "synthetic: 2880 steps"
    with steps.step("training STMGT", " for at most 5 epochs"):  # 4 s to 376 s
        pass
    with pytest.raises(RuntimeError), steps.step("evaluating"):  # a failed step says nothing of being done
        raise RuntimeError
    assert out.getvalue().splitlines() == [
        "[1/3] making the city (10 days)", "[1/3] making the city: done in 0m02s; synthetic: 2880 steps",
        "[2/3] training STMGT for at most 5 epochs", "[2/3] training STMGT: done in 6m12s",
        "[3/3] evaluating"]
    assert steps.total() == "6m17s"
    quiet = Steps(1, quiet=True, stream=out)
    with quiet.step("training"):
        pass
    assert len(out.getvalue().splitlines()) == 5  # quiet: no step lines


@pytest.mark.parametrize("command", [["train", "--out", "r"], ["demo"], ["benchmark"]])
def test_long_commands_take_quiet(command):
    from stmgt.cli import build_parser

    assert build_parser().parse_args(command + ["--quiet"]).quiet
    assert not build_parser().parse_args(command).quiet


def test_train_quiet_prints_no_epoch_line_only_the_summary(tmp_path, capsys):
    """(Without --quiet the epoch lines are printed: tests/training/test_progress.py.)"""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {name: gru, hidden: 8}\ntrain: {batch_size: 16, max_epochs: 2, limit_train_batches: 2,"
                   " num_threads: 1}\ndata: {synthetic: {nodes: 4, days: 2}}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("trained gru in 0m") and len(out.splitlines()) == 2
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 2  # it did train two epochs
