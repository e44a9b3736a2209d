"""``stmgt benchmark`` end to end on a tiny synthetic city (statistical models and a tiny GRU)."""

import json

import pandas as pd
import pytest

from stmgt.cli import main


@pytest.mark.slow
def test_benchmark_writes_json_and_mean_std_table(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 5, days: 2}}\nmodel: {hidden: 8}\n"
                   "train: {batch_size: 32, num_threads: 1}\n")
    argv = ["benchmark", "--models", "last_value", "historical_average", "gru", "--seeds", "2", "--max-epochs", "1",
            "--config", str(cfg), "--out", str(tmp_path), "--name", "tiny"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "tiny.json").read_text())
    assert set(res["runs"]) == {f"{m}/seed{s}" for m in ("last_value", "historical_average", "gru") for s in (0, 1)}
    md = (tmp_path / "tiny.md").read_text()
    assert "chronological 70/10/20" in md and "checkpoint chosen on validation" in md
    assert "gru (n=2)" in md and "±" in md
    # statistical models do not depend on the seed
    lv = [res["runs"][f"last_value/seed{s}"]["mae"]["avg"] for s in (0, 1)]
    assert lv[0] == lv[1]
    # resumable: a second call trains nothing new and keeps the results
    assert main(argv) == 0
    assert json.loads((tmp_path / "tiny.json").read_text())["runs"] == res["runs"]


def test_benchmark_leaves_a_run_another_process_holds_and_merges_results(tmp_path):
    """Parallel ``stmgt benchmark`` processes share one results file: a run whose folder another
    process has claimed is skipped, and runs written meanwhile by others are kept."""
    from stmgt.benchmark import _claim

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 4, days: 2}}\ntrain: {num_threads: 1}\n")
    argv = ["benchmark", "--models", "last_value", "--seeds", "2", "--config", str(cfg), "--out", str(tmp_path),
            "--name", "par"]
    (tmp_path / "par.json").write_text(json.dumps({"runs": {"other/seed0": {"mae": {"avg": 1.0}}}}))
    held = _claim(tmp_path / "runs" / "par" / "last_value" / "seed1")  # as if another process trains it
    assert held is not None
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "par.json").read_text())["runs"]) == {"other/seed0", "last_value/seed0"}
    held.close()  # that process ends (or crashes): the next call takes the run up
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "par.json").read_text())["runs"]) == {
        "other/seed0", "last_value/seed0", "last_value/seed1"}
    # the table holds models with different numbers of seeds: one command per group, no "± 0.00" for one run
    md = (tmp_path / "par.md").read_text()
    assert "--models other --seeds 1" in md and "--models last_value --seeds 2" in md
    other = next(line for line in md.splitlines() if line.startswith("| other (n=1) |"))
    assert "1.00" in other and "±" not in other
    # notes kept by hand in the JSON survive further runs and end the table
    res = json.loads((tmp_path / "par.json").read_text())
    (tmp_path / "par.json").write_text(json.dumps({**res, "notes": ["other/seed0 was stopped by hand."]}))
    assert main(argv[:4] + ["3"] + argv[5:]) == 0  # a third seed is trained and recorded
    res = json.loads((tmp_path / "par.json").read_text())
    assert "last_value/seed2" in res["runs"] and res["notes"] == ["other/seed0 was stopped by hand."]
    assert (tmp_path / "par.md").read_text().endswith("## Notes\n\n- other/seed0 was stopped by hand.\n")


@pytest.mark.slow
def test_benchmark_config_gives_each_model_its_own_settings_and_records_training(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 5, days: 2}}\nmodel: {hidden: 8, layers: 1}\n"
                   "train: {batch_size: 32, num_threads: 1, max_epochs: 2}\n"
                   "models:\n  gru: {train: {lr: 0.0042}, model: {dropout: 0.05}}\n"
                   "  gru_wide: {model: {name: gru, hidden: 12}}\n")
    argv = ["benchmark", "--models", "gru", "stid", "gru_wide", "--seeds", "1", "--config", str(cfg),
            "--out", str(tmp_path), "--name", "tiny"]
    assert main(argv) == 0
    from stmgt.forecaster import TrainedRun

    gru = TrainedRun(tmp_path / "runs" / "tiny" / "gru" / "seed0").config()
    stid = TrainedRun(tmp_path / "runs" / "tiny" / "stid" / "seed0").config()
    assert (gru.train.lr, gru.model.dropout) == (0.0042, 0.05)
    assert (stid.train.lr, stid.model.dropout) == (0.001, 0.2)  # the shared defaults
    # the shared model section: each model takes the settings it has (GRU's layers are not STID's)
    assert (gru.model.hidden, gru.model.layers, stid.model.hidden) == (8, 1, 8) and not hasattr(stid.model, "layers")
    wide = TrainedRun(tmp_path / "runs" / "tiny" / "gru_wide" / "seed0").config()
    assert (wide.model.name, wide.model.hidden, wide.train.lr) == ("gru", 12, 0.001)
    assert main(argv[:2] + ["nonsense"] + argv[5:]) == 2  # neither a model nor a variant: one-line error
    cfg.write_text("model: {hiden: 8}\n")
    assert main(argv) == 2  # a shared setting no model has: one-line error before anything trains
    run = json.loads((tmp_path / "tiny.json").read_text())["runs"]["gru/seed0"]
    assert run["epochs"] == 2 and run["stop_reason"] == "max_epochs" and run["best_epoch"] in (1, 2)
    hist = pd.read_csv(tmp_path / "runs" / "tiny" / "gru" / "seed0" / "history.csv")  # the learning curve outlives
    assert run["val_mae_by_epoch"] == pytest.approx(hist["val_mae"].tolist(), abs=1e-4)  # the run folder
    assert run["lr_by_epoch"] == pytest.approx(hist["lr"].tolist())
    assert "--config " + str(cfg) in (tmp_path / "tiny.md").read_text()


@pytest.mark.slow
def test_bench_reports_both_precisions_with_their_peak(capsys):
    assert main(["speed", "--nodes", "6", "--batch", "2", "--steps", "1", "--precision", "both", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["precision"] for r in rows] == ["32", "bf16-mixed"]
    for r in rows:
        # each figure is rounded to at least 3 significant figures (a CPU without native bf16 has a bf16 peak < 1)
        assert r["peak_gflops"] > 0
        assert r["fraction_of_peak"] == pytest.approx(r["achieved_gflops"] / r["peak_gflops"], rel=1e-2, abs=1e-3)


def test_benchmark_retrains_a_seed_whose_result_was_not_recorded(tmp_path):
    """A seed that crashed after its run folder was written (before its result) is trained again over
    that folder; the lock lives beside the run folder, which training replaces as a unit."""
    from stmgt.benchmark import _claim

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 4, days: 2}}\ntrain: {num_threads: 1}\n")
    argv = ["benchmark", "--models", "last_value", "--seeds", "1", "--config", str(cfg), "--out", str(tmp_path),
            "--name", "re"]
    assert main(argv) == 0
    (tmp_path / "re.json").write_text(json.dumps({"runs": {}}))  # its result lost
    assert main(argv) == 0
    assert set(json.loads((tmp_path / "re.json").read_text())["runs"]) == {"last_value/seed0"}
    run_dir = tmp_path / "runs" / "re" / "last_value" / "seed0"
    assert not (run_dir / ".running").exists() and (run_dir.parent / "seed0.running").exists()
    held = _claim(run_dir)
    assert held is not None and _claim(run_dir) is None  # one holder at a time
    held.close()


def test_benchmark_trainings_are_labelled_with_their_place_in_the_run_and_quiet_prints_no_run_lines(
        tmp_path, monkeypatch, capsys):
    import stmgt.benchmark

    labels = []
    real = stmgt.benchmark.fit

    def fit(*args, label=None, quiet=False, **kw):
        labels.append((label, quiet))
        return real(*args, label=label, quiet=quiet, **kw)

    monkeypatch.setattr(stmgt.benchmark, "fit", fit)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 4, days: 2}}\ntrain: {num_threads: 1}\n")
    argv = ["benchmark", "--models", "last_value", "historical_average", "--seeds", "2", "--config", str(cfg),
            "--out", str(tmp_path), "--name", "lab"]
    assert main(argv + ["--quiet"]) == 0
    assert labels == [(f"[{k}/4] {m} seed {s}", True)
                      for k, (m, s) in enumerate([("last_value", 0), ("last_value", 1), ("historical_average", 0),
                                                  ("historical_average", 1)], 1)]
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"4 runs; table: {tmp_path / 'lab'}.md"] and err == ""
    (tmp_path / "lab.json").unlink()
    __import__("shutil").rmtree(tmp_path / "runs")  # trained again (a finished folder would be scored as it is)
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[1/4] last_value/seed0: test MAE avg ") and out[3].startswith("[4/4] historical_average/")


@pytest.mark.slow
def test_benchmark_resumes_a_run_its_time_budget_stopped_and_marks_partial_runs(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 5, days: 2}}\nmodel: {hidden: 8}\n"
                   "train: {batch_size: 32, num_threads: 1, progress: false}\n")
    argv = ["benchmark", "--models", "gru", "--seeds", "1", "--config", str(cfg), "--out", str(tmp_path),
            "--name", "b", "--quiet"]
    assert main([*argv, "--max-epochs", "2"]) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    first = res["runs"]["gru/seed0"]
    assert first["epochs"] == 2
    res["runs"]["gru/seed0"]["stop_reason"] = "budget"  # as if train.max_minutes had stopped it there
    (tmp_path / "b.json").write_text(json.dumps(res))
    other = ["benchmark", *argv[1:]]
    other[other.index("gru")] = "last_value"
    assert main(other) == 0  # the table (which holds every run of the results) marks it partial
    md = (tmp_path / "b.md").read_text()
    assert "Still partial" in md and "gru/seed0" in md.split("Still partial")[1].split("\n")[0]

    assert main([*argv, "--max-epochs", "4"]) == 0  # resumed from its checkpoint, not retrained
    run = json.loads((tmp_path / "b.json").read_text())["runs"]["gru/seed0"]
    assert run["epochs"] == 4 and run["stop_reason"] == "max_epochs"
    assert run["train_seconds"] >= first["train_seconds"]  # both invocations' training time
    hist = (tmp_path / "runs" / "b" / "gru" / "seed0" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in hist[1:]] == ["0", "1", "2", "3"]
    assert "Still partial" not in (tmp_path / "b.md").read_text()

    import shutil

    res = json.loads((tmp_path / "b.json").read_text())
    res["runs"]["gru/seed0"]["stop_reason"] = "budget"
    (tmp_path / "b.json").write_text(json.dumps(res))
    shutil.rmtree(tmp_path / "runs" / "b" / "gru" / "seed0")  # its run folder gone: trained from scratch
    assert main([*argv, "--max-epochs", "3"]) == 0
    run = json.loads((tmp_path / "b.json").read_text())["runs"]["gru/seed0"]
    assert run["epochs"] == 3 and run["stop_reason"] == "max_epochs"


def test_the_time_budget_is_per_invocation_and_not_restored_from_a_checkpoint():
    from stmgt.training.fit import SessionBudget

    b = SessionBudget(duration={"minutes": 1})
    b.load_state_dict({"time_elapsed": {"train": 1e9, "validate": 0, "test": 0, "predict": 0}})
    assert b.time_elapsed("train") < 1


def test_a_finished_run_of_the_same_config_is_scored_not_retrained(tmp_path, capsys):
    """A run folder trained with exactly the requested settings (an ablation's run promoted to a table, or a
    seed whose result was lost) is adopted: scored once, not trained again; other settings retrain."""
    import shutil

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 4, days: 2}}\ntrain: {num_threads: 1, max_epochs: 1}\n"
                   "model: {hidden: 8}\n")
    base = ["benchmark", "--models", "gru", "--seeds", "1", "--config", str(cfg), "--out", str(tmp_path)]
    assert main([*base, "--name", "a"]) == 0
    first = tmp_path / "runs" / "a" / "gru" / "seed0"
    shutil.copytree(first, tmp_path / "runs" / "b" / "gru" / "seed0")
    weights = (first / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*base, "--name", "b"]) == 0
    out = capsys.readouterr().out
    assert "is a finished run of this config; scoring it" in out and "epoch 1/1" not in out
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["runs"]["gru/seed0"] for n in "ab")
    assert b["mae"] == a["mae"] and b["epochs"] == a["epochs"] == 1
    assert (tmp_path / "runs" / "b" / "gru" / "seed0" / "model.safetensors").read_bytes() == weights
    cfg.write_text(cfg.read_text().replace("hidden: 8", "hidden: 12"))  # other settings: trained anew
    shutil.rmtree(tmp_path / "runs" / "c", ignore_errors=True)
    shutil.copytree(first, tmp_path / "runs" / "c" / "gru" / "seed0")
    assert main([*base, "--name", "c"]) == 0
    assert "scoring it" not in capsys.readouterr().out
    # a statistical model is refitted, never adopted: its folder may hold what an older version computed
    hist = ["benchmark", "--models", "historical_average", "--seeds", "1", "--config", str(cfg), "--out", str(tmp_path)]
    assert main([*hist, "--name", "d"]) == 0
    shutil.copytree(tmp_path / "runs" / "d", tmp_path / "runs" / "e")
    capsys.readouterr()
    assert main([*hist, "--name", "e"]) == 0
    assert "scoring it" not in capsys.readouterr().out


def _benchmark_process(argv):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stmgt", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_benchmark_resumes_a_training_a_signal_stopped(tmp_path, capsys, sig):
    """A benchmark stopped mid-training (SIGTERM from a scheduler: a checkpoint, one line, status 143; or
    SIGKILL, e.g. at the end of a session: the last finished epoch's checkpoint in the partial folder) is
    continued by the next ``stmgt benchmark`` of the same config, not retrained; the leftover is removed."""
    import signal

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {synthetic: {nodes: 5, days: 3}}\nmodel: {hidden: 8}\n"
                   "train: {batch_size: 64, num_threads: 1, progress: false, patience: 50}\n")
    argv = ["benchmark", "--models", "gru", "--seeds", "1", "--config", str(cfg), "--out", str(tmp_path),
            "--name", "s"]
    p = _benchmark_process([*argv, "--max-epochs", "200"])
    for line in p.stderr:  # one line per finished epoch
        if "epoch 3/" in line:
            p.send_signal(getattr(signal, sig))
            break
    rest = p.stderr.read()
    code = p.wait(timeout=120)
    runs = tmp_path / "runs" / "s" / "gru"
    if sig == "SIGTERM":
        assert code == 143, rest
        assert [x for x in rest.splitlines() if x.strip()][-1].startswith("stmgt: training stopped by SIGTERM")
        assert (runs / "seed0.interrupted" / "checkpoints" / "last.ckpt").is_file()
    else:
        assert code == -signal.SIGKILL
        assert len(list(runs.glob("seed0.partial-*"))) == 1
    assert not (runs / "seed0").exists() and not (tmp_path / "s.json").exists()
    lv = argv.copy()
    lv[lv.index("gru")] = "last_value"
    assert main(lv) == 0  # the table names the unfinished run
    md = (tmp_path / "s.md").read_text()
    assert "Not in the table yet" in md and "gru/seed0" in md.split("Not in the table yet")[1].split("\n")[0]
    capsys.readouterr()

    other = tmp_path / "other.yaml"  # a training of other settings is not continued
    other.write_text(cfg.read_text().replace("hidden: 8", "hidden: 4"))
    from stmgt.benchmark import leftover_checkpoint
    from stmgt.config import load_config

    def resolved(path):
        return load_config(str(path), {"model.name": "gru", "train.seed": 0, "train.max_epochs": 6})

    assert leftover_checkpoint(runs / "seed0", resolved(other)) is None
    ckpt, epoch = leftover_checkpoint(runs / "seed0", resolved(cfg))
    assert epoch >= 2  # the epoch line is written before that epoch's checkpoint

    assert main([*argv, "--max-epochs", "6"]) == 0
    out = capsys.readouterr().out
    assert "an unfinished training of this config" in out and str(ckpt) in out
    run = json.loads((tmp_path / "s.json").read_text())["runs"]["gru/seed0"]
    assert run["epochs"] == 6 and run["stop_reason"] == "max_epochs"
    hist = (runs / "seed0" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in hist[1:]] == [str(e) for e in range(6)]  # one row per epoch, none twice
    assert sorted(p.name for p in runs.iterdir()) == ["seed0", "seed0.running"]  # the leftover is gone
    assert "Not in the table yet" not in (tmp_path / "s.md").read_text()
