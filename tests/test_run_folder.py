import shutil

import pytest

from stmgt import run_folder
from stmgt.cli import main
from stmgt.errors import RunError
from stmgt.forecaster import TrainedRun as Run  # the folder plus the model rebuilt from it


def test_run_finds_its_data_from_any_folder_and_says_when_it_is_gone(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    assert main(["data", "synth", "--out", "city", "--nodes", "5", "--days", "2", "--seed", "1"]) == 0
    assert main(["train", "--model", "last_value", "--data", "city", "--out", "run"]) == 0  # relative path
    assert Run("run").config().data.source == str((work / "city").resolve())
    monkeypatch.chdir(elsewhere)
    assert Run(work / "run").data().num_nodes == 5
    shutil.rmtree(work / "city")
    with pytest.raises(RunError, match="the data this run was trained on") as e:
        Run(work / "run").data()
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ a run folder is written as a unit

def _synth(tmp_path, nodes=5, days=2):
    assert main(["data", "synth", "--out", str(tmp_path / "city"), "--nodes", str(nodes), "--days", str(days)]) == 0
    return tmp_path / "city"


def _train_last_value(tmp_path, out="run", *extra):
    return main(["train", "--model", "last_value", "--data", str(tmp_path / "city"), "--out", str(tmp_path / out),
                 *extra])


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("stmgt: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def _partials(folder):
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".replaced-" in p.name]


def test_out_that_cannot_become_a_run_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    _synth(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_text("x")
    cases = [("notes.txt", "is a file, not a folder"), ("notes.txt/run", "notes.txt is a file, not a folder"),
             ("photos", "holds files but is not a run folder (no config.yaml)")]
    for out, message in cases:
        assert _train_last_value(tmp_path, out) == 2
        assert message in _err(capsys)
        assert _train_last_value(tmp_path, out, "--overwrite") == 2  # --overwrite never replaces a non-run
        assert message in _err(capsys)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "photos" / "a.jpg").exists()
    assert _partials(tmp_path) == []


def test_existing_run_is_replaced_only_with_overwrite_and_only_once_the_new_run_is_complete(tmp_path, capsys,
                                                                                           monkeypatch):
    from stmgt.run_folder import MANIFEST

    _synth(tmp_path)
    assert _train_last_value(tmp_path) == 0
    run = tmp_path / "run"
    manifest = (run / MANIFEST).read_text()
    assert main(["train", "--model", "historical_average", "--data", str(tmp_path / "city"), "--out", str(run)]) == 2
    assert "already holds a run; pass --overwrite" in _err(capsys)
    assert (run / MANIFEST).read_text() == manifest

    # a training that dies (here: while writing its weights) leaves the old run untouched and no partial folder
    def boom(self, model):
        raise OSError("disk full")

    monkeypatch.setattr(run_folder.Run, "save_weights", boom)
    assert main(["train", "--model", "historical_average", "--data", str(tmp_path / "city"), "--out", str(run),
                 "--overwrite"]) == 2
    assert _err(capsys).strip() == "stmgt: error: disk full"  # the system's word, one line
    monkeypatch.undo()
    assert (run / MANIFEST).read_text() == manifest and Run(run).config().model.name == "last_value"
    assert _partials(tmp_path) == []

    (run / "metrics.json").write_text("{}")  # from an evaluation of the old model: it goes with it
    assert main(["train", "--model", "historical_average", "--data", str(tmp_path / "city"), "--out", str(run),
                 "--overwrite"]) == 0
    assert Run(run).config().model.name == "historical_average" and not (run / "metrics.json").exists()
    assert _partials(tmp_path) == []
    Run(run).model()  # checks the new manifest


def test_an_unfinished_training_folder_is_refused(tmp_path, capsys):
    _synth(tmp_path)
    assert _train_last_value(tmp_path) == 0
    partial = tmp_path / "run.partial-4242"
    shutil.copytree(tmp_path / "run", partial)
    for name in ("model.safetensors", "manifest.json"):
        (partial / name).unlink()  # as a killed training leaves it
    assert main(["evaluate", str(partial), "--no-plots"]) == 2
    assert "an unfinished training" in _err(capsys)


@pytest.fixture
def lv_run(tmp_path):
    """A finished last_value run (fast: fitted, not trained) and its test metrics."""
    _synth(tmp_path)
    assert _train_last_value(tmp_path) == 0
    return tmp_path / "run"


def _evaluate(run, capsys):
    import json

    capsys.readouterr()
    code = main(["evaluate", str(run), "--json", "--no-plots"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err.strip())


@pytest.mark.parametrize("edit, message", [
    (lambda r: _sub(r / "config.yaml", "horizon: 12", "horizon: 6"),
     "model settings (model section, data.history, data.horizon) were edited after training (data.horizon: 12 -> 6)"),
    (lambda r: _sub(r / "config.yaml", "name: last_value", "name: historical_average"),
     "config.yaml's model section was edited after training (model.name: 'last_value' -> 'historical_average')"),
    (lambda r: (r / "model.safetensors").write_bytes((r / "model.safetensors").read_bytes() + b" "),
     "model.safetensors is not the file this run wrote"),
    (lambda r: _sub(r / "data.json", '"units": "km/h"', '"units": "mph"'), "data.json is not the file this run wrote"),
    (lambda r: (r / "graph.npz").write_bytes(b"garbage"), "graph.npz is not the file this run wrote"),
])
def test_files_changed_after_training_are_named(lv_run, capsys, edit, message):
    edit(lv_run)
    code, err = _evaluate(lv_run, capsys)
    assert code == 2 and message in err and "\n" not in err and "--overwrite" in err, err


def _sub(path, old, new):
    text = path.read_text()
    assert old in text, (old, text[:300])
    path.write_text(text.replace(old, new))


def test_edits_users_may_make_keep_the_run_usable(lv_run, capsys):
    code, before = _evaluate(lv_run, capsys)
    assert code == 0
    moved = lv_run.parent / "moved_city"
    (lv_run.parent / "city").rename(moved)
    cfg = (lv_run / "config.yaml").read_text()
    assert "city" in cfg
    _sub(lv_run / "config.yaml", str((lv_run.parent / "city").resolve()), str(moved.resolve()))  # data moved
    _sub(lv_run / "config.yaml", "batch_size: 32", "batch_size: 8")  # train section: not the model
    code, after = _evaluate(lv_run, capsys)
    assert code == 0 and after["mae"] == before["mae"]
    (lv_run / "manifest.json").unlink()  # runs written before the manifest still load
    assert _evaluate(lv_run, capsys)[0] == 0


def test_damaged_run_files_without_a_manifest_give_one_line_errors(tmp_path, tiny_panel, capsys):
    """Older runs (no manifest): a damaged weights file, a malformed data.json, a config whose sizes no
    longer fit the weights are each one line, never torch's or safetensors' traceback."""
    from stmgt.config import load_config
    from stmgt.data.windows import PanelData
    from stmgt.errors import RunError
    from stmgt.forecaster import data_info
    from stmgt.models import build_model

    cfg = load_config(None, {"model.name": "gru", "model.hidden": 8})
    data = PanelData(tiny_panel, 12, 12)
    run = Run(tmp_path / "run")
    run.save_setup(cfg, data)
    run.save_weights(build_model(cfg.model, data_info(data)))
    run.model()
    good = {n: (run.dir / n).read_bytes() for n in ("model.safetensors", "data.json", "config.yaml")}
    cases = [("model.safetensors", good["model.safetensors"][:300], "damaged, not a readable safetensors file"),
             ("data.json", b'{"name": ', "data.json: not valid JSON"),
             ("data.json", b'{"name": "tiny"}', "data.json: lacks node_ids"),
             ("data.json", b'[1, 2]', "data.json: not a JSON object"),
             ("config.yaml", good["config.yaml"].replace(b"hidden: 8", b"hidden: 16"), "size mismatch for")]
    for name, content, message in cases:
        (run.dir / name).write_bytes(content)
        with pytest.raises(RunError, match=message) as e:
            run.model()
        assert "\n" not in str(e.value) and "stmgt train --overwrite" in str(e.value)
        (run.dir / name).write_bytes(good[name])
    run.model()


def test_calibration_is_written_whole_and_a_damaged_one_is_refused(lv_run, capsys):
    import json

    assert main(["calibrate", str(lv_run)]) == 0
    assert len(json.loads((lv_run / "calibration.json").read_text())["factors"]) == 12
    assert [p.name for p in lv_run.iterdir() if ".tmp" in p.name] == []
    (lv_run / "calibration.json").write_text('{"factors": [1, ')
    code, err = _evaluate(lv_run, capsys)
    assert code == 2 and "calibration.json: unreadable" in err


@pytest.mark.slow
def test_a_killed_retraining_leaves_the_old_run_whole(tmp_path, capsys):
    """SIGKILL a re-training of an existing run once its partial folder holds a checkpoint: the run
    folder still evaluates the old run with the old numbers, and the partial folder is refused."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import stmgt

    _synth(tmp_path, nodes=5, days=2)
    (tmp_path / "c.yaml").write_text("model: {name: gru, hidden: 8}\ntrain: {max_epochs: 1, progress: false,"
                                     " batch_size: 64, num_threads: 1, limit_train_batches: 3}\n")
    base = ["train", "--config", str(tmp_path / "c.yaml"), "--data", str(tmp_path / "city")]
    run = tmp_path / "run"
    assert main(base + ["--out", str(run)]) == 0
    code, old = _evaluate(run, capsys)
    assert code == 0
    # the same data with another width: mixing its setup files with the old weights would not even load
    (tmp_path / "long.yaml").write_text("model: {name: gru, hidden: 12}\ntrain: {max_epochs: 1000, patience: 1000,"
                                        " progress: false, batch_size: 64, num_threads: 1}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(stmgt.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stmgt", "train", "--config", str(tmp_path / "long.yaml"),
                             "--data", str(tmp_path / "city"), "--out", str(run), "--overwrite"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / f"run.partial-{proc.pid}"
    try:
        deadline = time.time() + 300
        while not (partial / "checkpoints" / "last.ckpt").exists():
            assert proc.poll() is None and time.time() < deadline, "the re-training ended or never checkpointed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (partial / "config.yaml").exists() and not (partial / "model.safetensors").exists()
    code, again = _evaluate(run, capsys)
    assert code == 0 and json.dumps(again["mae"]) == json.dumps(old["mae"])
    assert Run(run).config().model.hidden == 8
    code, err = _evaluate(partial, capsys)
    assert code == 2 and "an unfinished training" in err


def test_every_file_of_a_run_has_the_same_mode_so_another_user_can_serve_it(lv_run):
    """safetensors writes 0600 by itself; the weights get the mode the umask gives every other file."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    modes = {f.name: f.stat().st_mode & 0o777 for f in lv_run.iterdir() if f.is_file()}
    assert modes["model.safetensors"] == 0o666 & ~mask
    assert set(modes.values()) == {0o666 & ~mask}, modes
