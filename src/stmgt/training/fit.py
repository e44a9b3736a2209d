"""Train a model end to end into a run folder (:func:`fit`)."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, Timer

from stmgt.config import Config
from stmgt.console import duration, notice
from stmgt.data.panel import Panel
from stmgt.data.source import load_source
from stmgt.data.windows import PanelData
from stmgt.errors import ConfigError, DataError, Interrupted, RunError
from stmgt.forecaster import TrainedRun, data_info
from stmgt.models import build_model
from stmgt.run_folder import Run, is_run_folder
from stmgt.runtime import (
    ThreadGovernor,
    choose_threads,
    explicit_threads,
    keep_freed_memory,
    require_cuda,
    resolve_precision,
)
from stmgt.training.module import ForecastTask, NonFiniteLoss
from stmgt.training.progress import EpochProgress

PARTIAL = ".partial-"
"""A run trains into ``RUN_DIR.partial-<pid>`` and is renamed to ``RUN_DIR`` once complete."""


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
        if not resume or not path.is_file():
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


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that, when resuming, keeps the best-so-far of the run it continues.

    A run trains in a temporary folder, so the folder recorded in its checkpoints is never the one a
    resumed training writes to, and Lightning would then forget the best score (and take the first
    resumed epoch as best whatever its score). The checkpoints the state names are copied from the
    folder of the checkpoint resumed from (``source``) and the state is re-pointed at ``dirpath``.
    """

    def __init__(self, *args, source: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.source = source

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def _moved(self, path) -> str:
        """``path``'s file copied into ``dirpath`` (its new path), or "" when it is not there to copy."""
        if not path or self.source is None:
            return ""
        name = Path(path).name
        src, dst = self.source / name, Path(self.dirpath) / name
        if not dst.is_file():
            if not src.is_file():
                return ""
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)  # a copy: Lightning rewrites checkpoint files in place
        return str(dst)

    def load_state_dict(self, state_dict: dict) -> None:
        if self.source is not None:  # even where the recorded folder has this one's name (same process id)
            state = dict(state_dict, dirpath=self.dirpath)
            state["best_k_models"] = {m: v for k, v in (state.get("best_k_models") or {}).items()
                                      if (m := self._moved(k))}
            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                state[key] = self._moved(state.get(key))
            if not state["best_model_path"]:
                state["best_model_score"] = None
            state_dict = state
        super().load_state_dict(state_dict)


class EpochLog(Callback):
    """One line per epoch on stderr, in a log as on a terminal (where it replaces the epoch's
    :class:`~stmgt.training.progress.EpochProgress` line)::

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
        notice(f"{self.prefix}epoch {trainer.current_epoch + 1}/{trainer.max_epochs}{loss}  val MAE {val:.3f}"
               f" (best {self.best:.3f})  {duration(time.perf_counter() - self.t0)}", self.stream)


class AdaptiveThreads(Callback):
    """Re-chooses the thread count during training from the other processes' load
    (:class:`~stmgt.runtime.ThreadGovernor`): used when no thread count was asked for."""

    def __init__(self, period: float = 20.0):
        self.governor = ThreadGovernor(period)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.governor.tick()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.governor.tick()


def keeps_freed_memory(cfg: Config) -> bool:
    """``train.keep_freed_memory``, or when it is None: True unless the model saves memory
    (``checkpoint``, ``node_chunk`` or ``graph_chunk``), whose peak the kept heap would inflate."""
    if cfg.train.keep_freed_memory is not None:
        return cfg.train.keep_freed_memory
    m = cfg.model
    return not (getattr(m, "checkpoint", False) or any(getattr(m, k, None) is not None
                                                        for k in ("node_chunk", "graph_chunk")))


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*num_workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*index_reduce.*")


def resume_run_dir(checkpoint: str | Path) -> Path | None:
    """The run folder holding ``checkpoint`` (``RUN_DIR`` for ``RUN_DIR/checkpoints/last.ckpt``,
    when it has a ``config.yaml``), or None."""
    c = Path(checkpoint)
    run = c.parent.parent if c.parent.name == "checkpoints" else None
    return run if run is not None and is_run_folder(run) else None


INTERRUPTED = ".interrupted"


def interrupted_target(run_dir: Path) -> Path:
    """The run folder a resumed run is written to by default: ``OUT`` for the ``OUT.interrupted``
    folder an interrupted training leaves and for the ``OUT.partial-<pid>`` folder of a training that was
    killed outright, else ``run_dir`` itself."""
    name = run_dir.name
    if name.endswith(INTERRUPTED):
        return run_dir.with_name(name[: -len(INTERRUPTED)])
    head, sep, pid = name.rpartition(PARTIAL)
    return run_dir.with_name(head) if sep and head and pid.isdigit() else run_dir


class SessionBudget(Timer):
    """Lightning's ``Timer`` (stop after ``duration``) without restoring the elapsed time from a
    checkpoint: ``train.max_minutes`` is a budget per invocation, so a run stopped by its budget continues
    for another budget when resumed (a restored Timer would stop it at once)."""

    def load_state_dict(self, state_dict: dict) -> None:
        return None


class SaveOnInterrupt(Callback):
    """When Lightning stops training for SIGTERM (its ``SIGTERMException``, raised after the batch in
    progress) or Ctrl-C, save ``last.ckpt`` in ``dirpath`` and remember which signal and where."""

    def __init__(self, dirpath: Path):
        self.dirpath, self.signal, self.where = Path(dirpath), None, ""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            self.signal = signal.SIGTERM
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = signal.SIGINT
        else:
            return
        loop = trainer.fit_loop.epoch_loop
        done = loop.batch_progress.current.completed
        self.where = (f"epoch {trainer.current_epoch + 1}, after batch {done} of {trainer.num_training_batches}"
                      if done else f"epoch {trainer.current_epoch + 1}, before its first batch")
        self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.dirpath / "last.ckpt")


def _same_folder(a: Path, b: Path | None) -> bool:
    return b is not None and os.path.realpath(a) == os.path.realpath(b)


def check_out(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse (one-line :class:`~stmgt.errors.RunError`) an output folder that cannot become a run
    folder: a file, a folder holding a run without ``overwrite``, a non-empty folder that is not a run
    folder (never replaced), the current folder, or a place that cannot be written. Writes nothing."""
    out = Path(os.path.abspath(out_dir))
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise RunError(f"{out_dir}: is a file, not a folder; choose a new folder name for the run (--out)")
        try:
            full = any(out.iterdir())
        except OSError as e:
            raise RunError(f"{out_dir}: cannot be read ({e.strerror}); choose another --out") from None
        if full:
            here = Path.cwd().resolve()
            if out.resolve() == here or out.resolve() in here.parents:
                raise RunError(f"{out_dir}: is the current folder or holds it; choose a new folder for the run (--out)")
            if not is_run_folder(out):
                raise RunError(f"{out_dir}: holds files but is not a run folder (no config.yaml); choose a new or"
                               " empty folder (--overwrite only replaces run folders)")
            if not overwrite:
                raise RunError(f"{out_dir}: already holds a run; pass --overwrite to replace it once the new run is"
                               " complete (a failed training keeps the old one), or choose another --out")
    anc = out.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise RunError(f"{out_dir}: {anc} is a file, not a folder; choose another --out")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise RunError(f"{out_dir}: cannot write there ({anc} is not writable); choose another --out")


def _make_partial(out: Path, shown) -> Path:
    """The empty temporary folder ``OUT.partial-<pid>`` beside ``out`` (same file system: renamed at the end)."""
    tmp = out.parent / f"{out.name}{PARTIAL}{os.getpid()}"
    try:
        if tmp.exists():  # this process's own earlier attempt
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    except OSError as e:
        raise RunError(f"{shown}: cannot write the run folder there ({e.strerror}); choose another --out") from None
    return tmp


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the complete run ``tmp`` to ``out``; a previous ``out`` is removed only after that."""
    if out.is_dir() and any(out.iterdir()) and not overwrite:  # written meanwhile by someone else
        keep = out.with_name(f"{out.name}.new-{os.getpid()}")
        os.replace(tmp, keep)
        raise RunError(f"{out}: another run was written there while this one trained; the new run is kept in {keep}")
    if out.exists() or out.is_symlink():
        old = out.with_name(f"{out.name}.replaced-{os.getpid()}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _check_observed(data: PanelData) -> None:
    """A one-line DataError when the training or validation split has no observed target to score."""
    for split, name in (("train", "training"), ("val", "validation")):
        lo, hi = data.bounds[split]
        if not data.panel.mask[lo + data.history:hi].any():
            raise DataError(f"{data.panel.name}: the {name} split (steps {lo}-{hi}) holds no observed value to"
                            f" {'train on' if split == 'train' else 'choose the checkpoint by'}; check the"
                            " data's gaps there or change data.split")


def check_checkpoint(path: str | Path, task: L.LightningModule) -> dict:
    """The Lightning checkpoint at ``path`` (read with ``weights_only=True``) after checking that it
    is one of ``task``'s model: same parameter names and shapes. One-line RunError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise RunError(f"{p}: no checkpoint to resume from (look for RUN_DIR/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, foreign pickle: torch's message suggests weights_only=False, never do
        raise RunError(f"{p}: not a readable checkpoint (truncated, damaged or not written by `stmgt train`);"
                       " resume from RUN_DIR/checkpoints/last.ckpt of a run") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "epoch", "optimizer_states"} <= set(ckpt):
        raise RunError(f"{p}: not a Lightning checkpoint of `stmgt train`; resume from"
                       " RUN_DIR/checkpoints/last.ckpt of a run")
    want = {k: tuple(v.shape) for k, v in task.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    fix = "resume with the config the run was trained with (--config RUN_DIR/config.yaml, or no --config)"
    missing = [k for k in want if k not in got and not k.endswith("_cache")]
    unexpected = [k for k in got if k not in want]
    if missing or unexpected:
        raise RunError(f"{p}: a checkpoint of another model (missing {missing[:2]}, unexpected {unexpected[:2]});"
                       f" {fix}")
    for k, shape in want.items():
        if k in got and got[k] != shape:
            raise RunError(f"{p}: a checkpoint of another model ({k} is {list(got[k])} there, {list(shape)} in"
                           f" this config); {fix}")
    return ckpt


def _copy_history(src_run: Path | None, dst: Path, epoch: int) -> None:
    """``history.csv`` of the run resumed from, up to the checkpoint's (0-based) ``epoch``."""
    src = None if src_run is None else src_run / "history.csv"
    if src is None or not src.is_file():
        return
    with src.open(newline="") as f:
        rows = list(csv.reader(f))
    keep = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= epoch]
    with dst.open("w", newline="") as f:
        csv.writer(f).writerows(keep)


def fit(cfg: Config, out_dir: str | Path, panel: Panel | None = None, resume: str | Path | None = None,
        overwrite: bool = False, quiet: bool = False, label: str | None = None) -> TrainedRun:
    """Train ``cfg.model`` on ``cfg.data`` (or on ``panel``) and write the run folder ``out_dir``.

    The checkpoint with the lowest validation MAE is kept (``model.safetensors``); training stops
    after ``cfg.train.patience`` epochs without improvement or at ``cfg.train.max_epochs``.
    ``resume`` continues from a Lightning checkpoint (e.g. ``RUN_DIR/checkpoints/last.ckpt``):
    resuming into the run folder that holds it replaces that folder (as ``overwrite``).

    The run is written into ``OUT.partial-<pid>`` and renamed to ``out_dir`` only when complete
    (weights, ``training.json``, ``manifest.json``); a folder already at ``out_dir`` is refused
    unless ``overwrite`` (it is then replaced at that moment: a failed training keeps it). Every
    check (output folder, data, checkpoint) is made before anything is written.

    While training, each epoch ends with one line on stderr (:class:`EpochLog`), and on a terminal
    a status line shows the epoch's progress (:class:`~stmgt.training.progress.EpochProgress`;
    ``train.progress: false`` turns it off). Both start with ``label`` (default ``<model> seed
    <seed>``); ``quiet`` prints neither.
    """
    _quiet_lightning()
    t = cfg.train
    if t.accelerator in ("gpu", "cuda"):
        require_cuda(f"train.accelerator is {t.accelerator!r} (--accelerator cpu to train here)")
    out = Path(os.path.abspath(out_dir))
    source = None
    if resume is not None:
        if not Path(resume).is_file():
            raise RunError(f"{resume}: no checkpoint to resume from (look for RUN_DIR/checkpoints/last.ckpt)")
        source = resume_run_dir(resume)
        overwrite = overwrite or _same_folder(out, source)  # continuing a run replaces it
    check_out(out_dir, overwrite)
    if t.devices * t.num_nodes == 1 or t.num_threads:  # DDP processes keep torch's own split unless told
        choose_threads(t.num_threads)
    if keeps_freed_memory(cfg):
        keep_freed_memory()
    L.seed_everything(t.seed, workers=True, verbose=False)
    panel = panel if panel is not None else load_source(cfg.data)
    data = PanelData(panel, cfg.data.history, cfg.data.horizon, cfg.data.split, t.batch_size)
    model = build_model(cfg.model, data_info(data))
    if not model.trainable:
        if resume is not None:
            raise ConfigError(f"--resume continues a training; {cfg.model.name} is fitted, not trained")
        tmp = _make_partial(out, out_dir)
        try:
            run = Run(tmp)
            run.save_setup(cfg, data)
            model.fit(data)
            run.save_weights(model)
            run.save_manifest()
            _install(tmp, out, overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return TrainedRun(out_dir)

    _check_observed(data)
    model.prepare(data)  # training-split statistics the model keeps (a resumed checkpoint holds the same)
    task = ForecastTask(model, data.edge_index, data.scaler.target_loc, data.scaler.target_scale, t,
                        edge_weight=data.edge_weight)
    resumed_epoch = None if resume is None else int(check_checkpoint(resume, task)["epoch"])
    tmp = _make_partial(out, out_dir)
    try:
        return _train(cfg, data, model, task, tmp, out, resume, resumed_epoch, source, overwrite, out_dir,
                      None if quiet else label or f"{cfg.model.name} seed {t.seed}")
    except NonFiniteLoss as e:
        raise RunError(f"training loss became {e.value} at epoch {e.epoch} (batch {e.batch}); the learning rate"
                       f" (train.lr {t.lr:g}) is probably too high, or the data hold inf or extreme values: lower"
                       f" train.lr or check the data; nothing was written to {out_dir}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _train(cfg: Config, data: PanelData, model, task: ForecastTask, tmp: Path, out: Path, resume, resumed_epoch,
           source: Path | None, overwrite: bool, out_dir, label: str | None) -> Run:
    """The Lightning training of :func:`fit` in the temporary folder ``tmp``, renamed to ``out`` at the end;
    ``label`` starts the epoch lines and status line (None: quiet)."""
    t = cfg.train
    run = Run(tmp)
    run.save_setup(cfg, data)
    if resume is not None:
        _copy_history(source if source is not None else Path(resume).parent, run.dir / "history.csv",
                      resumed_epoch)
    precision = resolve_precision(t.precision, t.accelerator)
    ckpt_dir = run.dir / "checkpoints"
    best = RunCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_mae", mode="min", save_last=True,
                         enable_version_counter=False, source=None if resume is None else Path(resume).parent)
    stop = EarlyStopping(monitor="val_mae", mode="min", patience=t.patience)
    saver = SaveOnInterrupt(ckpt_dir)
    callbacks = [best, stop, HistoryWriter(run.dir / "history.csv", resume=resume is not None), saver]
    if t.max_minutes:  # counted from this invocation's start, also when resumed from a checkpoint
        callbacks.append(SessionBudget(duration={"minutes": t.max_minutes}))
    threads = None
    if t.devices * t.num_nodes == 1 and t.accelerator == "cpu" and explicit_threads(t.num_threads) is None:
        threads = AdaptiveThreads()
        callbacks.append(threads)
    if label is not None:
        callbacks.append(EpochLog(f"{label}: "))
        if t.progress:  # a status line only where someone watches a terminal
            callbacks.append(EpochProgress(f"{label}: "))
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator="gpu" if t.accelerator == "cuda" else t.accelerator,
        devices=t.devices,
        strategy=("ddp" if t.devices * t.num_nodes > 1 else "auto") if t.strategy == "auto" else t.strategy,
        num_nodes=t.num_nodes,
        precision=precision,
        gradient_clip_val=t.grad_clip,
        gradient_clip_algorithm="norm",
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=t.limit_train_batches,
        default_root_dir=str(run.dir),
    )
    if t.strategy == "ddp_spawn":
        # tensors reach the spawned processes through files, not file descriptors
        torch.multiprocessing.set_sharing_strategy("file_system")
    g = torch.Generator().manual_seed(t.seed)
    task.started = time.perf_counter()
    try:
        trainer.fit(task, data.loader("train", generator=g), data.loader("val", shuffle=False),
                    ckpt_path=str(resume) if resume else None, weights_only=True)
    except SystemExit:  # Lightning's SIGTERMException, and its exit after a Ctrl-C, are SystemExit
        if saver.signal is None or not trainer.is_global_zero:
            raise
        _keep_interrupted(run.dir, out, saver, out_dir)
    if not trainer.is_global_zero:  # other DDP processes: rank 0 writes the run
        return TrainedRun(out_dir)
    path = best.best_model_path or best.last_model_path
    if not path or not Path(path).is_file():
        raise RunError(f"{out_dir}: training ended without a checkpoint (no epoch completed; train.max_epochs"
                       f" {t.max_epochs}, train.max_minutes {t.max_minutes}); nothing was written")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    kept = "model." if task.ema is None else "ema."  # the weights validation scored
    model.load_state_dict({k.removeprefix(kept): v for k, v in state.items() if k.startswith(kept)})
    run.save_weights(model)
    best_epoch = int(ckpt["epoch"]) + 1 if path == best.best_model_path else None  # 1-based
    run.save_training(training_summary(trainer, best_epoch, best.best_model_score, stop, t, precision,
                                       task.train_seconds(),
                                       None if threads is None else threads.governor.counts))
    run.save_manifest()
    _install(tmp, out, overwrite)
    if source is not None and source != interrupted_target(source) and _same_folder(interrupted_target(source), out):
        shutil.rmtree(source, ignore_errors=True)  # the interrupted (or killed) run is complete now
    return TrainedRun(out_dir)


def _keep_interrupted(tmp: Path, out: Path, saver: SaveOnInterrupt, out_dir) -> None:
    """Keep the interrupted run ``tmp`` as ``OUT.interrupted`` (replacing an older one) and raise
    :class:`~stmgt.errors.Interrupted` saying how to resume it."""
    keep = out.with_name(out.name + INTERRUPTED)
    shutil.rmtree(keep, ignore_errors=True)
    tmp.rename(keep)
    ckpt = keep / "checkpoints" / "last.ckpt"
    code = 128 + int(saver.signal)  # the shell's status for a process ended by that signal: 143, 130
    raise Interrupted(f"training stopped by {saver.signal.name} at {saver.where}; the checkpoint to resume from is"
                      f" {ckpt} (stmgt train --resume {ckpt} writes {out_dir}); exit status {code}", code)


def training_summary(trainer, best_epoch: int | None, score, stop: EarlyStopping, t, precision: str,
                     seconds: float, thread_counts: list[int] | None = None) -> dict:
    """What ``training.json`` records: epochs run, the best epoch (1-based) and its validation MAE, why training
    stopped (``early_stop``; ``schedule_end``: a ``one_cycle`` schedule reached its final learning rate, the end
    of its optimisation; ``max_epochs`` or ``budget``), wall-clock seconds, precision, threads, and
    the code (git commit) and torch version: the same code, config and thread count give the same
    numbers bit for bit on one machine, and another thread count already changes the float sums.
    ``thread_counts``: the counts the automatic thread policy used, in order (``threads_used``; the
    run is bit-reproducible only with one count: set ``train.num_threads`` for that)."""
    epochs = trainer.current_epoch  # epochs completed
    if stop.stopped_epoch > 0:
        reason = "early_stop"
    elif t.schedule == "one_cycle" and epochs >= (t.cycle_epochs or t.max_epochs):
        reason = "schedule_end"
    elif epochs >= t.max_epochs:
        reason = "max_epochs"
    else:
        reason = "budget"
    from stmgt.run_folder import versions

    v = versions()
    return {"epochs": int(epochs), "best_epoch": best_epoch,
            "best_val_mae": None if score is None else float(score), "stop_reason": reason,
            "train_seconds": round(seconds, 1), "precision": precision, "threads": torch.get_num_threads(),
            "threads_used": sorted(set(thread_counts or [torch.get_num_threads()])),
            "code": v["git"], "torch": v["torch"]}
