"""A run folder: everything needed to evaluate, predict from and resume a trained model.

Layout::

    RUN_DIR/
      config.yaml        resolved configuration (every default written out)
      versions.json      python, torch, lightning, numpy, pandas, stmgt versions and platform
      data.json          scalers, node ids, covariate names, interval, split bounds, data fingerprint
      graph.npz          edge_index (and edge_weight)
      model.safetensors  weights of the checkpoint chosen on validation
      history.csv        per-epoch train loss, validation MAE and learning rate
      checkpoints/       Lightning checkpoints (``last.ckpt`` for --resume; ``best.ckpt``)
      training.json      epochs, best epoch, stop reason, time (trained models)
      manifest.json      sha256 of model.safetensors, data.json, graph.npz and the model settings
      metrics.json, report.md, figures/   written by ``stmgt evaluate``
      calibration.json   written by ``stmgt calibrate``

This module is the folder's files and their checks; rebuilding the model, its data and the forecaster
from them is :class:`stmgt.forecaster.TrainedRun`.

A run folder is written as a unit: :func:`~stmgt.training.fit.fit` trains into a sibling
``RUN_DIR.partial-<pid>`` and renames it into place once the weights, ``training.json`` and
``manifest.json`` are written, so a folder named ``RUN_DIR`` is always a finished run (a folder left
as ``*.partial-*`` is a training that was killed). :meth:`Run.verify` (called before any model is loaded)
checks the files against ``manifest.json``: weights, scalers or model settings changed after training are
refused.

Weights are read with ``safetensors`` and checkpoints with ``torch.load(weights_only=True)``:
nothing in a run folder is unpickled.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from stmgt.config import Config, load_config
from stmgt.data.panel import day_classes
from stmgt.data.windows import PanelData, Scaler
from stmgt.errors import RunError
from stmgt.models.base import ForecastModel
from stmgt.paths import sha256_file


def versions() -> dict:
    import lightning
    import pandas
    import torch

    import stmgt

    return {
        "stmgt": stmgt.__version__, "git": _git_commit(), "python": sys.version.split()[0], "torch": torch.__version__,
        "lightning": lightning.__version__, "numpy": np.__version__, "pandas": pandas.__version__,
        "platform": platform.platform(), "threads": torch.get_num_threads(),
    }


def _git_commit() -> str | None:
    """The commit of the stmgt source tree when it is a git checkout (``+dirty`` with local changes)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def steps_per_day(interval_minutes: float) -> int:
    return max(1, int(round(1440 / interval_minutes)))


def training_day_classes(data: PanelData) -> tuple[int, ...]:
    """:func:`~stmgt.data.panel.day_classes` of the days in the training split (recorded in ``data.json``)."""
    lo, hi = data.bounds["train"]
    return day_classes(data.panel.calendar()[1][lo:hi])


MANIFEST = "manifest.json"
HASHED = ("model.safetensors", "data.json", "graph.npz")
"""The files whose sha256 ``manifest.json`` records."""
META_KEYS = ("node_ids", "covariate_names", "in_channels", "history", "horizon", "steps_per_day", "scaler",
             "cov_scaler", "fingerprint", "interval_minutes")
"""Keys ``data.json`` must hold (every run folder since the first release writes them)."""


def model_settings(cfg: Config) -> dict:
    """The part of a config the weights depend on: the ``model`` section and ``data.history`` /
    ``data.horizon`` (not ``data.source``, which may point at moved data, nor ``train``)."""
    return {"model": cfg.model.model_dump(mode="json"),
            "data": {"history": cfg.data.history, "horizon": cfg.data.horizon}}


def _canonical_sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def is_run_folder(directory: str | Path) -> bool:
    """Whether ``directory`` looks like a run folder (holds ``config.yaml``), finished or not."""
    return (Path(directory) / "config.yaml").is_file()


class Run:
    """Reads and writes one run folder (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    # ---------------------------------------------------------------- writing
    def save_training(self, summary: dict) -> None:
        """``training.json``: epochs, best epoch, stop reason, time (:func:`~stmgt.training.fit.training_summary`)."""
        (self.dir / "training.json").write_text(json.dumps(summary, indent=1))

    def training(self) -> dict:
        """``training.json`` of a trained model ({} for statistical models and older runs)."""
        p = self.dir / "training.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def history(self) -> list[dict[str, float]]:
        """``history.csv``: one dict per epoch (``epoch`` 0-based, ``train_loss``, ``train_nll``, ``val_mae``,
        ``lr``; NaN where a value was not logged); [] for statistical models."""
        p = self.dir / "history.csv"
        if not p.is_file():
            return []
        with p.open() as f:
            return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                    for row in csv.DictReader(f)]

    def save_setup(self, cfg: Config, data: PanelData) -> None:
        """``config.yaml``, ``versions.json``, ``data.json`` and ``graph.npz`` of a run about to train."""
        from stmgt.data.source import fingerprint

        self.dir.mkdir(parents=True, exist_ok=True)
        src = cfg.data.source
        if src != "synthetic" and Path(src).exists():  # evaluate/calibrate may run from another folder
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": str(Path(src).resolve())})})
        cfg.save(self.dir / "config.yaml")
        (self.dir / "versions.json").write_text(json.dumps(versions(), indent=1))
        p = data.panel
        meta = {
            "name": p.name, "units": p.units, "fingerprint": fingerprint(p),
            "node_ids": p.node_ids, "covariate_names": p.covariate_names,
            "interval_minutes": p.interval_minutes, "steps_per_day": steps_per_day(p.interval_minutes),
            "num_steps": p.num_steps, "start": str(p.timestamps[0]), "bounds": data.bounds,
            "history": data.history, "horizon": data.horizon, "in_channels": data.in_channels,
            "scaler": data.scaler.__dict__, "cov_scaler": None if data.cov_scaler is None else data.cov_scaler.__dict__,
            "coords": None if p.coords is None else p.coords.tolist(),
            "day_classes": list(training_day_classes(data)),
        }
        (self.dir / "data.json").write_text(json.dumps(meta, indent=1))
        arrays = {"edge_index": p.edge_index}
        if p.edge_weight is not None:
            arrays["edge_weight"] = p.edge_weight
        np.savez(self.dir / "graph.npz", **arrays)

    def save_weights(self, model: ForecastModel) -> None:
        """``model.safetensors``: the model's state dict."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        path = self.dir / "model.safetensors"
        save_file(state, str(path))
        # safetensors writes its file mode 0600; give it the mode of every other file of the run (0644 under
        # the usual umask) so that a service running as another user can read the run it is given
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)

    def save_manifest(self) -> None:
        """``manifest.json``: sha256 of the weights, ``data.json`` and ``graph.npz``, and the model
        settings (read back from ``config.yaml``) with their canonical-JSON sha256. Written last."""
        settings = model_settings(self.config())
        manifest = {"sha256": {name: sha256_file(self.dir / name) for name in HASHED},
                    "model_settings": settings, "model_settings_sha256": _canonical_sha(settings)}
        (self.dir / MANIFEST).write_text(json.dumps(manifest, indent=1))

    def verify(self) -> None:
        """Check the run's files against ``manifest.json`` (runs written before it existed are not
        checked); raises a one-line :class:`~stmgt.errors.RunError` naming the file that changed."""
        p = self.dir / MANIFEST
        if not p.is_file():
            return
        retrain = f"retrain with `stmgt train --overwrite --out {self.dir}`"
        try:
            manifest = json.loads(p.read_text())
            hashes, settings = manifest["sha256"], manifest["model_settings"]
        except (ValueError, KeyError, TypeError):
            raise RunError(f"{p}: unreadable (not the manifest `stmgt train` writes); {retrain}") from None
        for name, digest in hashes.items():
            if sha256_file(self._need(name)) != digest:
                raise RunError(f"{self.dir / name} is not the file this run wrote (its sha256 differs from"
                               f" {MANIFEST}); put the original back or {retrain}")
        now = model_settings(self.config())
        if _canonical_sha(now) != manifest.get("model_settings_sha256"):
            was, cur = _flat(settings), _flat(now)
            # settings added to stmgt since training keep their defaults: only the recorded ones count
            diffs = [f"{k}: {was[k]!r} -> {cur[k]!r}" for k in was if k in cur and cur[k] != was[k]]
            if diffs:
                what = ("model section was" if all(d.startswith("model.") for d in diffs)
                        else "model settings (model section, data.history, data.horizon) were")
                raise RunError(f"{self.dir / 'config.yaml'}'s {what} edited after training"
                               f" ({'; '.join(diffs[:3])}); the weights were trained with the old values:"
                               f" put them back, or {retrain}")

    # ---------------------------------------------------------------- reading
    def _need(self, name: str) -> Path:
        p = self.dir / name
        if not p.exists():
            if not self.dir.is_dir():
                raise RunError(f"{self.dir}: no such run folder; train one with `stmgt train --out {self.dir}`")
            if ".partial-" in self.dir.name:
                raise RunError(f"{self.dir}: an unfinished training (stopped before its weights were written);"
                               " delete it and use the run folder without .partial-<pid>")
            raise RunError(f"{self.dir}: {name} is missing; is this a finished `stmgt train` run folder?")
        return p

    def config(self) -> Config:
        return load_config(self._need("config.yaml"), saved_run=True)

    def meta(self) -> dict:
        """``data.json`` (scalers, node ids, sizes), checked to be a JSON object with the keys runs need."""
        p = self._need("data.json")
        fix = f"it is written by `stmgt train`: retrain with `stmgt train --overwrite --out {self.dir}`"
        try:
            m = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise RunError(f"{p}: not valid JSON ({str(e).splitlines()[0]}); {fix}") from None
        if not isinstance(m, dict):
            raise RunError(f"{p}: not a JSON object; {fix}")
        missing = [k for k in META_KEYS if k not in m]
        if missing:
            raise RunError(f"{p}: lacks {', '.join(missing)}; {fix}")
        return m

    def graph(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(edge_index, edge_weight or None)`` from ``graph.npz``."""
        p = self._need("graph.npz")
        try:
            with np.load(p, allow_pickle=False) as z:
                return z["edge_index"], (z["edge_weight"] if "edge_weight" in z.files else None)
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise RunError(f"{p}: unreadable ({type(e).__name__}); retrain with"
                           f" `stmgt train --overwrite --out {self.dir}`") from None

    def scalers(self) -> tuple[Scaler, Scaler | None]:
        m = self.meta()
        return Scaler(**m["scaler"]), (Scaler(**m["cov_scaler"]) if m["cov_scaler"] else None)
