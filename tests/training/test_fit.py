import io
from types import SimpleNamespace

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


def test_training_json_records_epochs_best_epoch_and_why_training_stopped(tmp_path):
    """The best epoch and stop reason are read back against history.csv, the independent record."""
    import csv

    from stmgt.config import load_config
    from stmgt.run import Run
    from stmgt.training.fit import fit

    small = {"data.synthetic.nodes": 5, "data.synthetic.days": 2, "model.hidden": 8, "model.heads": 2,
             "model.blocks": 1, "train.progress": False, "train.batch_size": 64}
    fit(load_config(None, {**small, "train.max_epochs": 3}), tmp_path / "a")
    info = Run(tmp_path / "a").training()
    rows = list(csv.DictReader((tmp_path / "a" / "history.csv").open()))
    vals = [float(r["val_mae"]) for r in rows]
    assert info["epochs"] == len(rows) == 3 and info["stop_reason"] == "max_epochs"
    assert info["best_epoch"] == 1 + vals.index(min(vals))
    assert abs(info["best_val_mae"] - min(vals)) < 1e-5
    assert info["precision"] == "32" and info["train_seconds"] > 0 and info["threads"] >= 1 and "code" in info

    # patience 1 on a learning rate too small to improve anything: early stop after two epochs
    fit(load_config(None, {**small, "train.max_epochs": 20, "train.patience": 1, "train.lr": 1e-12}), tmp_path / "b")
    info = Run(tmp_path / "b").training()
    assert info["stop_reason"] == "early_stop" and info["epochs"] < 20


def test_auto_precision_follows_the_cpu(monkeypatch):
    from stmgt import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.resolve_precision("auto") == "bf16-mixed"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.resolve_precision("auto") == "32"
    assert runtime.resolve_precision("bf16-mixed") == "bf16-mixed"
