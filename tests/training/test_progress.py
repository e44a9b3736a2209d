"""The live status line of training (drawn on a terminal only), durations and notices."""

import io
import sys
from types import SimpleNamespace

import torch

from stmgt.console import StatusLine, duration, notice
from stmgt.training.progress import EpochProgress


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _trainer(**kw):
    base = dict(sanity_checking=False, is_global_zero=True, current_epoch=2, max_epochs=50,
                num_training_batches=44, num_val_batches=[10])
    return SimpleNamespace(**{**base, **kw})


def _batch(n=8):
    return SimpleNamespace(y=torch.zeros(n, 12, 5))


def _lines(stream) -> list[str]:
    """What was drawn, one entry per redraw (the padding of each one stripped)."""
    return [part.rstrip() for part in stream.getvalue().split("\r") if part.strip()]


def test_duration():
    assert duration(0) == "0m00s" and duration(41.9) == "0m41s" and duration(430) == "7m10s"
    assert duration(3725) == "1h02m05s" and duration(-3) == "0m00s"


def test_status_line_shows_batches_loss_rate_and_time_left_rate_limited():
    out, clock = Terminal(), Clock()
    p = EpochProgress("gwnet seed 1: ", stream=out, interval=2.0, clock=clock)
    trainer = _trainer()
    p.on_train_epoch_start(trainer, None)
    assert _lines(out) == ["gwnet seed 1: epoch 3/50  0/44 batches  starting..."]  # before the first batch
    for i in range(12):  # 12 batches of 8 windows, half a second each
        clock.now += 0.5
        p.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.1 * (i % 2))}, _batch(), i)
    drawn = _lines(out)
    assert len(drawn) == 1 + 3  # at 2 s, 4 s and 6 s: not after every batch
    assert drawn[-1] == "gwnet seed 1: epoch 3/50  12/44 batches  loss 0.0500  16 samples/s  0m06s, ~0m16s left"
    assert "\n" not in out.getvalue()  # redrawn in place

    p.on_validation_start(trainer, None)
    clock.now += 5
    p.on_validation_batch_end(trainer, None, None, _batch(), 0)
    assert _lines(out)[-1].endswith("12/44 batches  loss 0.0500  16 samples/s  0m06s, ~0m16s left"
                                    "  validating 1/10 batches  0m05s")  # the training part stops at validation
    p.on_train_epoch_end(trainer, None)
    assert out.getvalue().endswith("\r") and not out.getvalue().rsplit("\r", 2)[-2].strip()  # erased


def test_slow_batches_are_each_shown_and_a_new_epoch_starts_over():
    out, clock = Terminal(), Clock()
    p = EpochProgress("", stream=out, clock=clock)
    trainer = _trainer(current_epoch=0, max_epochs=2, num_training_batches=3)
    p.on_train_epoch_start(trainer, None)
    for i in range(3):
        clock.now += 30
        p.on_train_batch_end(trainer, None, torch.tensor(2.0), _batch(3), i)
    drawn = _lines(out)
    assert [d.split("  ")[1] for d in drawn] == ["0/3 batches", "1/3 batches", "2/3 batches", "3/3 batches"]
    assert "0.1 samples/s" in drawn[1] and "~1m00s left" in drawn[1] and drawn[3].endswith("1m30s")
    p.on_train_epoch_end(trainer, None)
    trainer.current_epoch = 1
    p.on_train_epoch_start(trainer, None)
    assert _lines(out)[-1] == "epoch 2/2  0/3 batches  starting..."


def test_no_output_off_a_terminal_nor_on_other_ranks():
    for stream, trainer in ((io.StringIO(), _trainer()), (Terminal(), _trainer(is_global_zero=False))):
        clock = Clock()
        p = EpochProgress("stmgt seed 0: ", stream=stream, clock=clock)
        p.on_train_epoch_start(trainer, None)
        for i in range(5):
            clock.now += 3
            p.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, _batch(), i)
        p.on_validation_start(trainer, None)
        p.on_train_epoch_end(trainer, None)
        assert stream.getvalue() == ""


def test_a_notice_clears_the_status_line_first_and_a_shorter_line_covers_a_longer_one():
    out = Terminal()
    line = StatusLine(out)
    line.show("a long status line")
    line.show("short")
    assert out.getvalue() == "\ra long status line\rshort" + " " * 13
    notice("epoch 1/2 done", out)
    assert out.getvalue().endswith("\r" + " " * 5 + "\repoch 1/2 done\n")
    line.clear()  # already erased: nothing more
    assert out.getvalue().endswith("epoch 1/2 done\n")
    StatusLine(io.StringIO()).show("not a terminal")  # writes nothing, and nothing breaks


def test_a_kernel_build_is_announced_only_when_it_happens(tmp_path, monkeypatch, capsys):
    from torch.utils import cpp_extension

    from stmgt import kernels

    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    names = []
    monkeypatch.setattr(cpp_extension, "load", lambda name, **kw: names.append(name) or "module")
    assert kernels._build("graph_attention", "graph-attention", "model.fused_attention: false") == "module"
    assert "compiling the CPU graph-attention kernels" in capsys.readouterr().err
    (tmp_path / f"{names[0]}.so").touch()  # built: loaded from the cache, silently
    kernels._build("graph_attention", "graph-attention", "model.fused_attention: false")
    assert capsys.readouterr().err == ""


def _tiny(**extra):
    from stmgt.config import load_config

    return load_config(None, {"data.synthetic.nodes": 4, "data.synthetic.days": 2, "model.name": "gru",
                              "model.hidden": 8, "train.max_epochs": 1, "train.batch_size": 16,
                              "train.num_threads": 1, "train.limit_train_batches": 3, **extra})


def test_a_real_training_draws_the_status_line_on_a_terminal_and_quiet_prints_nothing(tmp_path, monkeypatch):
    from stmgt.training.fit import fit

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    fit(_tiny(), tmp_path / "a", label="[2/3] gru seed 0")
    drawn = _lines(term)
    assert drawn[0] == "[2/3] gru seed 0: epoch 1/1  0/3 batches  starting..."  # at the start of training
    val = [d for d in drawn if "validating" in d]  # drawn when validation starts, whatever the pace
    assert val and "3/3 batches  loss " in val[0] and "samples/s" in val[0]
    lines = term.getvalue().split("\r")[-1].splitlines()  # after the erased status line: the epoch's line
    assert len(lines) == 1 and lines[0].startswith("[2/3] gru seed 0: epoch 1/1  train loss ")

    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    fit(_tiny(), tmp_path / "b", quiet=True)
    assert quiet.getvalue() == ""

    logged = io.StringIO()  # a log file: the epoch line, no status line
    monkeypatch.setattr(sys, "stderr", logged)
    fit(_tiny(), tmp_path / "c")
    assert "\r" not in logged.getvalue() and logged.getvalue().startswith("gru seed 0: epoch 1/1  train loss")
    assert len(logged.getvalue().splitlines()) == 1


def test_progress_false_keeps_the_epoch_line_without_the_status_line(tmp_path, monkeypatch):
    from stmgt.training.fit import fit

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    fit(_tiny(**{"train.progress": False}), tmp_path / "a")
    assert "\r" not in term.getvalue() and term.getvalue().startswith("gru seed 0: epoch 1/1  train loss")


def test_a_lock_left_by_a_killed_kernel_build_is_cleared_and_builds_are_serialised(tmp_path, monkeypatch, capsys):
    """torch's plain-file lock left by a killed build made every later start wait forever (issue 21)."""
    import fcntl

    from torch.utils import cpp_extension

    from stmgt import kernels

    build = tmp_path / "build"
    build.mkdir()
    (build / "lock").write_text("")  # what a build killed midway leaves
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(build))
    seen = []

    def load(name, **kw):
        seen.append((build / "lock").exists())
        with open(tmp_path / "build.stmgt-lock") as f:  # the builder holds the flock while torch builds
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
        return "module"

    monkeypatch.setattr(cpp_extension, "load", load)
    assert kernels._build("graph_attention", "graph-attention", "model.fused_attention: false") == "module"
    assert seen == [False, "held"]
    assert "left by a kernel build that was interrupted" in capsys.readouterr().err
