"""Train a model end to end into a run folder (:func:`fit`)."""

from __future__ import annotations

import csv
import logging
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from stmgt.config import Config
from stmgt.data.panel import Panel
from stmgt.data.source import load_source
from stmgt.data.windows import PanelData
from stmgt.errors import RunError
from stmgt.models import build_model
from stmgt.run import Run, data_info
from stmgt.runtime import keep_freed_memory, require_cuda, resolve_precision
from stmgt.training.module import ForecastTask


def _epoch_metrics(trainer) -> dict[str, float] | None:
    """The logged metrics at the end of a training epoch as floats; None where nothing is to be
    written (the sanity check, DDP ranks other than 0)."""
    if trainer.sanity_checking or not trainer.is_global_zero:
        return None
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


class HistoryWriter(Callback):
    """Appends ``epoch, train_loss, train_nll, val_mae, lr`` to ``history.csv`` after each epoch."""

    FIELDS = ("epoch", "train_loss", "train_nll", "val_mae", "lr")

    def __init__(self, path: Path, resume: bool = False):
        self.path = path
        if not resume or not path.exists():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = _epoch_metrics(trainer)
        if m is None:
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        row = [trainer.current_epoch] + [m.get(k, "") for k in self.FIELDS[1:4]] + [lr]
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(row)


class EpochLog(Callback):
    """One line per epoch on stderr (used where no progress bar is drawn: logs, CI, benchmarks)::

        stmgt seed 0: epoch 3/6  train loss 0.0784  val MAE 3.697 (best 3.697)  8m40s
    """

    def __init__(self, prefix: str, stream=None):
        self.prefix, self.stream = prefix, stream
        self.best = float("inf")
        self.t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = _epoch_metrics(trainer)
        if m is None:
            return
        val = m.get("val_mae", float("nan"))
        self.best = min(self.best, val)
        loss = f"  train loss {m['train_loss']:.4f}" if "train_loss" in m else ""
        dur = int(time.perf_counter() - self.t0)
        print(f"{self.prefix}epoch {trainer.current_epoch + 1}/{trainer.max_epochs}{loss}  val MAE {val:.3f}"
              f" (best {self.best:.3f})  {dur // 60}m{dur % 60:02d}s", file=self.stream or sys.stderr, flush=True)


def keeps_freed_memory(cfg: Config) -> bool:
    """``train.keep_freed_memory``, or when it is None: True unless the model saves memory
    (``checkpoint``, ``node_chunk`` or ``graph_chunk``), whose peak the kept heap would inflate."""
    if cfg.train.keep_freed_memory is not None:
        return cfg.train.keep_freed_memory
    m = cfg.model
    return not (m.checkpoint or m.node_chunk is not None or m.graph_chunk is not None)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*num_workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*index_reduce.*")


def fit(cfg: Config, out_dir: str | Path, panel: Panel | None = None, resume: str | Path | None = None) -> Run:
    """Train ``cfg.model`` on ``cfg.data`` (or on ``panel``) and write the run folder ``out_dir``.

    The checkpoint with the lowest validation MAE is kept (``model.safetensors``); training stops
    after ``cfg.train.patience`` epochs without improvement or at ``cfg.train.max_epochs``.
    ``resume`` continues from a Lightning checkpoint (e.g. ``RUN_DIR/checkpoints/last.ckpt``).
    """
    _quiet_lightning()
    t = cfg.train
    if t.accelerator in ("gpu", "cuda"):
        require_cuda(f"train.accelerator is {t.accelerator!r} (--accelerator cpu to train here)")
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if keeps_freed_memory(cfg):
        keep_freed_memory()
    L.seed_everything(t.seed, workers=True, verbose=False)
    panel = panel if panel is not None else load_source(cfg.data)
    data = PanelData(panel, cfg.data.history, cfg.data.horizon, cfg.data.split, t.batch_size)
    run = Run(out_dir)
    run.save_setup(cfg, data)
    model = build_model(cfg.model, data_info(data))
    if not model.trainable:
        model.fit(data)
        run.save_weights(model)
        return run

    task = ForecastTask(model, data.edge_index, data.scaler.target_loc, data.scaler.target_scale, t)
    precision = resolve_precision(t.precision, t.accelerator)
    ckpt_dir = run.dir / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_mae", mode="min", save_last=True,
                           enable_version_counter=False)
    stop = EarlyStopping(monitor="val_mae", mode="min", patience=t.patience)
    if resume is not None and not Path(resume).is_file():
        raise RunError(f"{resume}: no checkpoint to resume from (look for RUN_DIR/checkpoints/last.ckpt)")
    bar = t.progress and sys.stdout.isatty()  # a bar only where someone watches a terminal
    callbacks = [best, stop, HistoryWriter(run.dir / "history.csv", resume=resume is not None)]
    if not bar:
        callbacks.append(EpochLog(f"{cfg.model.name} seed {t.seed}: "))
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator="gpu" if t.accelerator == "cuda" else t.accelerator,
        devices=t.devices,
        strategy=("ddp" if t.devices * t.num_nodes > 1 else "auto") if t.strategy == "auto" else t.strategy,
        num_nodes=t.num_nodes,
        precision=precision,
        max_time={"minutes": t.max_minutes} if t.max_minutes else None,
        gradient_clip_val=t.grad_clip,
        gradient_clip_algorithm="norm",
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=t.limit_train_batches,
        default_root_dir=str(run.dir),
    )
    if t.strategy == "ddp_spawn":
        # tensors reach the spawned processes through files, not file descriptors
        torch.multiprocessing.set_sharing_strategy("file_system")
    g = torch.Generator().manual_seed(t.seed)
    started = time.perf_counter()
    trainer.fit(task, data.loader("train", generator=g), data.loader("val", shuffle=False),
                ckpt_path=str(resume) if resume else None, weights_only=True)
    if trainer.is_global_zero:
        path = best.best_model_path or best.last_model_path
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt["state_dict"]
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        run.save_weights(model)
        best_epoch = int(ckpt["epoch"]) + 1 if path == best.best_model_path else None  # 1-based
        run.save_training(training_summary(trainer, best_epoch, best.best_model_score, stop, t, precision,
                                           time.perf_counter() - started))
    return run


def training_summary(trainer, best_epoch: int | None, score, stop: EarlyStopping, t, precision: str,
                     seconds: float) -> dict:
    """What ``training.json`` records: epochs run, the best epoch (1-based) and its validation MAE, why training
    stopped (``early_stop``, ``max_epochs`` or ``budget``), wall-clock seconds, precision, threads, and
    the code (git commit) and torch version: the same code, config and thread count give the same
    numbers bit for bit on one machine, and another thread count already changes the float sums."""
    epochs = trainer.current_epoch  # epochs completed
    if stop.stopped_epoch > 0:
        reason = "early_stop"
    elif epochs >= t.max_epochs:
        reason = "max_epochs"
    else:
        reason = "budget"
    from stmgt.run import versions

    v = versions()
    return {"epochs": int(epochs), "best_epoch": best_epoch,
            "best_val_mae": None if score is None else float(score), "stop_reason": reason,
            "train_seconds": round(seconds, 1), "precision": precision, "threads": torch.get_num_threads(),
            "code": v["git"], "torch": v["torch"]}
