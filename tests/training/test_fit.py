import io
from types import SimpleNamespace

import pytest
import torch

from stmgt.training.fit import EpochLog


def test_epoch_log_prints_one_line_per_epoch_with_the_best_so_far():
    out = io.StringIO()
    log = EpochLog("stmgt seed 0: ", stream=out)
    for epoch, val in enumerate([3.9, 3.7, 3.8]):
        trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=epoch, max_epochs=6,
                                  callback_metrics={"val_mae": torch.tensor(val), "train_loss": torch.tensor(0.5)})
        log.on_train_epoch_start(trainer, None)
        log.on_train_epoch_end(trainer, None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("stmgt seed 0: epoch 1/6  train loss 0.5000  val MAE 3.900 (best 3.900)  0m0")
    assert "epoch 3/6" in lines[2] and "val MAE 3.800 (best 3.700)" in lines[2]
    silent = SimpleNamespace(sanity_checking=False, is_global_zero=False, current_epoch=0, max_epochs=1,
                             callback_metrics={})
    log.on_train_epoch_end(silent, None)  # other DDP ranks print nothing
    assert len(out.getvalue().splitlines()) == 3


def test_cuda_requested_without_a_device_is_a_one_line_config_error(monkeypatch, tmp_path):
    import pytest

    from stmgt.config import Config
    from stmgt.errors import ConfigError
    from stmgt.training.fit import fit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = Config.model_validate({"train": {"accelerator": "cuda"}})
    with pytest.raises(ConfigError, match="no usable CUDA device") as e:
        fit(cfg, tmp_path / "run")
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()  # nothing written


def test_freed_memory_is_kept_unless_the_model_saves_memory():
    from stmgt.config import Config
    from stmgt.training.fit import keeps_freed_memory

    def cfg(model=None, train=None):
        return Config.model_validate({"model": model or {}, "train": train or {}})

    assert keeps_freed_memory(cfg())
    for saving in ({"checkpoint": True}, {"name": "stmamba", "node_chunk": 64}, {"name": "stmamba", "graph_chunk": 8}):
        assert not keeps_freed_memory(cfg(saving))
        assert keeps_freed_memory(cfg(saving, {"keep_freed_memory": True}))  # an explicit choice wins
    assert not keeps_freed_memory(cfg(train={"keep_freed_memory": False}))


@pytest.mark.slow
def test_training_json_records_epochs_best_epoch_and_why_training_stopped(tmp_path):
    """The best epoch and stop reason are read back against history.csv, the independent record."""
    import csv

    from stmgt.config import load_config
    from stmgt.forecaster import TrainedRun
    from stmgt.training.fit import fit

    small = {"data.synthetic.nodes": 5, "data.synthetic.days": 2, "model.hidden": 8, "model.heads": 2,
             "model.blocks": 1, "train.progress": False, "train.batch_size": 64}
    fit(load_config(None, {**small, "train.max_epochs": 3}), tmp_path / "a")
    info = TrainedRun(tmp_path / "a").training()
    rows = list(csv.DictReader((tmp_path / "a" / "history.csv").open()))
    vals = [float(r["val_mae"]) for r in rows]
    assert info["epochs"] == len(rows) == 3 and info["stop_reason"] == "max_epochs"
    assert info["best_epoch"] == 1 + vals.index(min(vals))
    assert abs(info["best_val_mae"] - min(vals)) < 1e-5
    assert info["precision"] == "32" and info["train_seconds"] > 0 and info["threads"] >= 1 and "code" in info
    assert info["threads"] in info["threads_used"] and all(n >= 1 for n in info["threads_used"])

    # patience 1 on a learning rate too small to improve anything: early stop after two epochs
    fit(load_config(None, {**small, "train.max_epochs": 20, "train.patience": 1, "train.lr": 1e-12}), tmp_path / "b")
    info = TrainedRun(tmp_path / "b").training()
    assert info["stop_reason"] == "early_stop" and info["epochs"] < 20


def test_auto_precision_follows_the_cpu(monkeypatch):
    from stmgt import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.resolve_precision("auto") == "32"
    assert runtime.resolve_precision("bf16-mixed") == "bf16-mixed"


# ------------------------------------------------------------------ trustworthy failures (#11)

def _small(city, **extra):
    from stmgt.config import load_config

    return load_config(None, {"data.source": str(city), "model.name": "gru", "model.hidden": 8,
                              "train.max_epochs": 1, "train.progress": False, "train.batch_size": 64,
                              "train.num_threads": 1, "train.limit_train_batches": 3, **extra})


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    """A tiny city and a 1-epoch GRU run on it (a few seconds)."""
    from stmgt.cli import main
    from stmgt.training.fit import fit

    d = tmp_path_factory.mktemp("gru")
    assert main(["data", "synth", "--out", str(d / "city"), "--nodes", "5", "--days", "2"]) == 0
    fit(_small(d / "city"), d / "run")
    return d


@pytest.mark.slow
def test_resume_is_checked_before_anything_is_written(gru_run, capsys):
    from stmgt.cli import main

    run = gru_run / "run"
    ckpts = run / "checkpoints"
    (gru_run / "big.yaml").write_text("model: {name: gru, hidden: 16}\ntrain: {progress: false}\n")
    # damaged checkpoints inside the run's own checkpoints/: resuming from them would replace the run
    bad = {"trunc.ckpt": (ckpts / "last.ckpt").read_bytes()[:2000], "text.ckpt": b"not a checkpoint"}
    for name, content in bad.items():
        (ckpts / name).write_bytes(content)
    torch.save({"weights": torch.zeros(3)}, ckpts / "plain.ckpt")  # a torch file, not a Lightning checkpoint
    torch.save({"state_dict": {}, "epoch": 0, "optimizer_states": [], "x": __import__("argparse").Namespace(a=1)},
               ckpts / "pickled.ckpt")  # needs unpickling: torch's weights_only message must not show
    before = _snapshot(run)
    cases = [
        (["--resume", str(ckpts / "trunc.ckpt")], "not a readable checkpoint (truncated, damaged"),
        (["--resume", str(ckpts / "text.ckpt")], "not a readable checkpoint"),
        (["--resume", str(ckpts / "pickled.ckpt")], "not a readable checkpoint"),
        (["--resume", str(ckpts / "plain.ckpt")], "not a Lightning checkpoint of `stmgt train`"),
        (["--resume", str(ckpts / "last.ckpt"), "--config", str(gru_run / "big.yaml"), "--out", str(run)],
         "a checkpoint of another model (model."),
    ]
    for extra, message in cases:
        assert main(["train", "--data", str(gru_run / "city"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("stmgt: error:") and message in err and "\n" not in err, err
        assert "weights_only" not in err
        assert _snapshot(run) == before  # the run it names is untouched
    for name in ("trunc.ckpt", "text.ckpt", "plain.ckpt", "pickled.ckpt"):
        (ckpts / name).unlink()
    assert [p.name for p in gru_run.iterdir() if ".partial-" in p.name] == []


@pytest.mark.slow
def test_resume_continues_its_own_run_and_drops_files_of_the_old_weights(gru_run, capsys):
    import shutil

    import pandas as pd

    from stmgt.cli import main
    from stmgt.forecaster import TrainedRun

    run = gru_run / "cont"
    shutil.copytree(gru_run / "run", run)
    (run / "calibration.json").write_text('{"factors": [1.0]}')
    # no --out, no --config: the run folder holding the checkpoint and its own config.yaml
    assert main(["train", "--resume", str(run / "checkpoints" / "last.ckpt"), "--max-epochs", "2"]) == 0
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1]
    assert TrainedRun(run).training()["epochs"] == 2 and not (run / "calibration.json").exists()
    assert TrainedRun(run).config().model.hidden == 8
    TrainedRun(run).model()


def test_resumed_checkpoint_keeps_the_best_so_far_of_the_run_it_continues(tmp_path):
    """The resumed run trains in another folder than the one its checkpoints recorded: the best
    checkpoint is copied over and its score kept, so a worse resumed epoch does not become the best."""
    from stmgt.training.fit import RunCheckpoint

    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best.ckpt").write_bytes(b"best")
    (old / "last.ckpt").write_bytes(b"last")
    gone = str(tmp_path / "run.partial-7" / "checkpoints")  # where the first training wrote them
    cb = RunCheckpoint(dirpath=new, filename="best", monitor="val_mae", mode="min", save_last=True, source=old)
    from lightning.pytorch.callbacks import ModelCheckpoint

    assert cb.state_key == ModelCheckpoint(dirpath=new, filename="best", monitor="val_mae", mode="min",
                                           save_last=True).state_key  # old checkpoints' state is found
    cb.load_state_dict({"monitor": "val_mae", "best_model_score": torch.tensor(3.5), "dirpath": gone,
                        "best_model_path": f"{gone}/best.ckpt", "best_k_models": {f"{gone}/best.ckpt": 3.5},
                        "kth_best_model_path": f"{gone}/best.ckpt", "kth_value": 3.5,
                        "last_model_path": f"{gone}/last.ckpt", "current_score": 3.9})
    assert cb.best_model_path == str(new / "best.ckpt") and float(cb.best_model_score) == 3.5
    assert (new / "best.ckpt").read_bytes() == b"best" and cb.best_k_models == {str(new / "best.ckpt"): 3.5}
    assert (old / "best.ckpt").read_bytes() == b"best"  # copied, not moved or linked
    # a run resumed in the process that trained it: the recorded folder has the new folder's name
    (new / "best.ckpt").unlink()
    cb2 = RunCheckpoint(dirpath=new, filename="best", monitor="val_mae", mode="min", save_last=True, source=old)
    cb2.load_state_dict({"monitor": "val_mae", "best_model_score": torch.tensor(3.5), "dirpath": str(new),
                         "best_model_path": str(new / "best.ckpt"), "last_model_path": str(new / "last.ckpt")})
    assert (new / "best.ckpt").read_bytes() == b"best" and float(cb2.best_model_score) == 3.5


@pytest.mark.slow
def test_a_non_finite_training_loss_stops_training_and_writes_nothing(gru_run):
    from stmgt.errors import RunError
    from stmgt.forecaster import TrainedRun
    from stmgt.training.fit import fit

    run = gru_run / "run"
    before = _snapshot(run)
    cfg = _small(gru_run / "city", **{"train.lr": 1e8, "train.grad_clip": 1e9, "train.max_epochs": 3,
                                      "train.limit_train_batches": None})
    for out, overwrite in ((gru_run / "fresh", False), (run, True)):
        with pytest.raises(RunError, match=r"training loss became (nan|inf|-inf) at epoch 1 \(batch \d+\);"
                                           r" the learning rate \(train.lr 1e\+08\) is probably too high") as e:
            fit(cfg, out, overwrite=overwrite)
        assert "\n" not in str(e.value)
    assert not (gru_run / "fresh").exists() and _snapshot(run) == before
    assert [p.name for p in gru_run.iterdir() if ".partial-" in p.name] == []
    TrainedRun(run).model()


def test_a_validation_split_without_observed_values_is_a_data_error(tiny_panel, tmp_path):
    from stmgt.data.panel import Panel
    from stmgt.data.windows import chronological_splits
    from stmgt.errors import DataError
    from stmgt.training.fit import fit

    lo, hi = chronological_splits(tiny_panel.num_steps)["val"]
    mask = tiny_panel.mask.copy()
    mask[lo:hi] = False
    panel = Panel(values=tiny_panel.values, mask=mask, timestamps=tiny_panel.timestamps,
                  edge_index=tiny_panel.edge_index, covariates=tiny_panel.covariates,
                  covariate_names=tiny_panel.covariate_names, name="gappy")
    with pytest.raises(DataError, match="gappy: the validation split .* holds no observed value") as e:
        fit(_small("synthetic"), tmp_path / "run", panel=panel)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []
