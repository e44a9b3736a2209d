"""``stmgt train`` stopped by SIGTERM (what a batch scheduler sends before it preempts a job): a
resumable checkpoint, one line, exit status 143, and ``--resume`` finishes the run."""

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow

TINY = {"model": {"hidden": 8, "heads": 2, "blocks": 1},
        "train": {"batch_size": 64, "patience": 50, "progress": False, "num_threads": 1}}


def _train(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "stmgt", "train", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, **kw)


def test_sigterm_keeps_a_checkpoint_exits_143_and_resume_completes_the_run(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    p = _train(["--config", str(cfg), "--nodes", "5", "--days", "3", "--max-epochs", "200", "--out", str(out)])
    lines = []
    for line in p.stderr:  # one line per finished epoch
        lines.append(line)
        if "epoch 2/" in line:
            p.send_signal(signal.SIGTERM)
            break
    rest = p.stderr.read()
    assert p.wait(timeout=120) == 143, (lines, rest)
    err = [x for x in rest.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("stmgt: training stopped by SIGTERM at epoch 3"), err
    ckpt = tmp_path / "run.interrupted" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and str(ckpt) in err[0]
    assert not out.exists()  # no run folder that looks complete

    done = _train(["--resume", str(ckpt), "--max-epochs", "5"])
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr
    info = json.loads((out / "training.json").read_text())
    assert info["epochs"] == 5 and info["stop_reason"] == "max_epochs"
    epochs = [int(r["epoch"]) for r in csv.DictReader((out / "history.csv").open())]
    assert epochs == [0, 1, 2, 3, 4]  # the two epochs before the signal, then the rest
    assert not (tmp_path / "run.interrupted").exists()


def test_a_resumed_leftover_is_written_to_the_run_folder_it_was_training():
    from pathlib import Path

    from stmgt.training.fit import interrupted_target

    assert interrupted_target(Path("/r/seed0.interrupted")) == Path("/r/seed0")
    assert interrupted_target(Path("/r/seed0.partial-1234")) == Path("/r/seed0")  # killed outright
    assert interrupted_target(Path("/r/seed0")) == Path("/r/seed0")
    assert interrupted_target(Path("/r/seed0.partial-x")) == Path("/r/seed0.partial-x")  # not a pid: a name
