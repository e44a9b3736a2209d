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
      metrics.json, report.md, figures/   written by ``stmgt evaluate``

Weights are read with ``safetensors`` and checkpoints with ``torch.load(weights_only=True)``:
nothing in a run folder is unpickled.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

from stmgt.config import Config, load_config
from stmgt.data.panel import Panel, day_classes
from stmgt.data.windows import PanelData, Scaler
from stmgt.errors import RunError
from stmgt.models.base import DataInfo, ForecastModel


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
    """:func:`~stmgt.data.panel.day_classes` of the days in the training split."""
    lo, hi = data.bounds["train"]
    return day_classes(data.panel.calendar()[1][lo:hi])


def data_info(data: PanelData) -> DataInfo:
    return DataInfo(num_nodes=data.num_nodes, in_channels=data.in_channels, weather_dim=data.weather_dim,
                    history=data.history, horizon=data.horizon,
                    steps_per_day=steps_per_day(data.panel.interval_minutes),
                    day_classes=training_day_classes(data))


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

    def save_setup(self, cfg: Config, data: PanelData) -> None:
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
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(self.dir / "model.safetensors"))

    # ---------------------------------------------------------------- reading
    def _need(self, name: str) -> Path:
        p = self.dir / name
        if not p.exists():
            if not self.dir.is_dir():
                raise RunError(f"{self.dir}: no such run folder; train one with `stmgt train --out {self.dir}`")
            raise RunError(f"{self.dir}: {name} is missing; is this a finished `stmgt train` run folder?")
        return p

    def config(self) -> Config:
        return load_config(self._need("config.yaml"))

    def meta(self) -> dict:
        return json.loads(self._need("data.json").read_text())

    def graph(self) -> tuple[np.ndarray, np.ndarray | None]:
        with np.load(self._need("graph.npz"), allow_pickle=False) as z:
            return z["edge_index"], (z["edge_weight"] if "edge_weight" in z.files else None)

    def scalers(self) -> tuple[Scaler, Scaler | None]:
        m = self.meta()
        return Scaler(**m["scaler"]), (Scaler(**m["cov_scaler"]) if m["cov_scaler"] else None)

    def info(self) -> DataInfo:
        m = self.meta()
        return DataInfo(num_nodes=len(m["node_ids"]), in_channels=m["in_channels"],
                        weather_dim=len(m["covariate_names"]), history=m["history"], horizon=m["horizon"],
                        steps_per_day=m["steps_per_day"],
                        day_classes=tuple(m.get("day_classes", range(7))))  # runs before it: seven

    def model(self) -> ForecastModel:
        """The trained model (eval mode) with the weights chosen on validation."""
        from safetensors.torch import load_file

        from stmgt.models import build_model

        model = build_model(self.config().model, self.info())
        state = load_file(str(self._need("model.safetensors")))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.endswith("_cache")]:
            raise RunError(f"{self.dir}: the weights do not fit the configured model (missing {missing[:3]},"
                           f" unexpected {unexpected[:3]}); was config.yaml edited after training?")
        return model.eval()

    def data(self, panel: Panel | None = None) -> PanelData:
        """The training data again (re-read from its source), checked against the fingerprint."""
        from stmgt.data.source import fingerprint, load_source

        cfg = self.config()
        src = cfg.data.source
        if panel is None and src != "synthetic" and not Path(src).exists():
            raise RunError(f"{self.dir}: the data this run was trained on, {src!r}, is not there (a relative path"
                           f" is read from the current folder); put it back or set data.source in"
                           f" {self.dir / 'config.yaml'}")
        panel = panel if panel is not None else load_source(cfg.data)
        m = self.meta()
        if fingerprint(panel) != m["fingerprint"]:
            raise RunError(f"{self.dir}: the data at {cfg.data.source!r} is not the data this run was trained on"
                           " (fingerprint differs)")
        data = PanelData(panel, cfg.data.history, cfg.data.horizon, cfg.data.split, cfg.train.batch_size)
        return data
