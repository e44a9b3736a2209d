"""The one seam between a trained model and everything that reads its forecasts.

A model maps a :class:`~stmgt.data.windows.Batch` to a :class:`~stmgt.distributions.mixture.GaussianMixture`
in *scaled* units (the training split's standardisation of the target). Turning that into the forecast a
user reads takes three more things: the target scaler, the road graph the model was trained on, and the
stored spread calibration. :class:`Forecaster` holds the four together and has the one method that does
the conversion; training's validation, ``stmgt calibrate``, ``stmgt evaluate``, ``stmgt predict``,
``stmgt benchmark`` and ``stmgt serve`` all forecast through it, so they cannot disagree.

:class:`TrainedRun` rebuilds a :class:`Forecaster` (and the training data) from a run folder; the folder
itself (files, manifest, checks) is :class:`~stmgt.run_folder.Run`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stmgt.data.panel import Panel
from stmgt.data.windows import Batch, PanelData, PanelTensors, Scaler, WindowCollator
from stmgt.distributions.mixture import GaussianMixture
from stmgt.errors import DataError, RunError
from stmgt.models.base import DataInfo, ForecastModel
from stmgt.run_folder import Run, steps_per_day, training_day_classes

Calibrator = Callable[[GaussianMixture, Batch], GaussianMixture]
"""``(dist, batch) -> dist`` on data-unit mixtures (:func:`~stmgt.calibration.spread_calibrator`)."""


class Forecaster:
    """A trained model with what turns its output into data units: the target scaler, graph and calibration.

    Args:
        model: the :class:`~stmgt.models.base.ForecastModel` (scaled units in and out).
        loc, scale: the target scaler: ``data = loc + scale * scaled``.
        edge_index: ``[2, E]`` the static graph the model was trained on.
        edge_weight: ``[E]`` its weights or None (default); the model reads them only with its
            ``edge_weights`` switch on.
        calibrator: ``(dist, batch) -> dist`` on data-unit mixtures (``stmgt calibrate``'s spread factors), or None
            (default: uncalibrated).

    Shapes: ``forecast(batch)`` with ``batch.x [B, T, N, C]`` -> :class:`GaussianMixture` ``[B, H, N]`` in data
    units.
    """

    def __init__(self, model: ForecastModel, loc: float, scale: float, edge_index: Tensor,
                 edge_weight: Tensor | None = None, calibrator: Calibrator | None = None):
        self.model, self.loc, self.scale = model, float(loc), float(scale)
        self.edge_index, self.edge_weight, self.calibrator = edge_index, edge_weight, calibrator

    @classmethod
    def for_data(cls, model: ForecastModel, data: PanelData, calibrator: Calibrator | None = None) -> Forecaster:
        """The forecaster of ``model`` on ``data``'s scaler and graph."""
        return cls(model, data.scaler.target_loc, data.scaler.target_scale, data.edge_index, data.edge_weight,
                   calibrator)

    @property
    def calibrated(self) -> bool:
        return self.calibrator is not None

    def uncalibrated(self, batch: Batch, stream: bool = False) -> GaussianMixture:
        """The model's forecast in data units, before calibration (``stream``: a recurrent model's
        step-by-step scan, :meth:`~stmgt.models.stmamba.STMamba.stream_forecast`)."""
        if stream:
            if not hasattr(self.model, "stream_forecast"):
                raise DataError(f"--stream needs a recurrent model (stmamba); this run is {self.model.name}")
            scaled = self.model.stream_forecast(batch, self.edge_index, self.edge_weight)
        else:
            scaled = self.model(batch, self.edge_index, self.edge_weight)
        return scaled.affine(self.loc, self.scale)  # the one conversion from scaled to data units

    def calibrate(self, dist: GaussianMixture, batch: Batch | None = None) -> GaussianMixture:
        """``dist`` (data units; the forecast of ``batch``) with the calibration applied (unchanged without one)."""
        return dist if self.calibrator is None else self.calibrator(dist, batch)

    def forecast(self, batch: Batch, stream: bool = False) -> GaussianMixture:
        """The calibrated forecast of ``batch`` in data units."""
        return self.calibrate(self.uncalibrated(batch, stream), batch)

    __call__ = forecast


def future_steps(panel: Panel, horizon: int, interval_minutes: float) -> np.ndarray:
    """The ``horizon`` step times after ``panel``'s last (``datetime64[ns] [H]``)."""
    step = np.timedelta64(int(round(interval_minutes * 60)), "s")
    return (panel.timestamps[-1] + step * np.arange(1, horizon + 1)).astype("datetime64[ns]")


def window_batch(panel: Panel, scaler: Scaler, cov_scaler: Scaler | None, horizon: int,
                 interval_minutes: float) -> Batch:
    """The batch of one forecast from ``panel`` (exactly the model's ``history`` steps): the horizon's
    calendar is extrapolated from the clock and its weather held at the last step, and the window is
    gathered by the same :class:`~stmgt.data.windows.WindowCollator` as in training.

    Shapes: ``panel.values [T, N, C]`` -> a :class:`~stmgt.data.windows.Batch` with ``B = 1``."""
    T, H = panel.num_steps, horizon
    future = future_steps(panel, H, interval_minutes)
    pad = np.zeros((H, panel.num_nodes, panel.num_channels), np.float32)
    cov = None if panel.covariates is None else np.concatenate([panel.covariates,
                                                                np.repeat(panel.covariates[-1:], H, 0)])
    ext = Panel(values=np.concatenate([panel.values, pad]), mask=np.concatenate([panel.mask, pad.astype(bool)]),
                timestamps=np.concatenate([panel.timestamps, future]), edge_index=panel.edge_index,
                node_ids=panel.node_ids, covariates=cov, covariate_names=panel.covariate_names,
                name=panel.name)  # [T + H, N, C]: the horizon's readings are padding, masked
    return WindowCollator(PanelTensors(ext, scaler, cov_scaler), T, H)([0])


def data_info(data: PanelData) -> DataInfo:
    """What a model needs to know about ``data`` to be built (the data-to-model hand-off)."""
    return DataInfo(num_nodes=data.num_nodes, in_channels=data.in_channels, weather_dim=data.weather_dim,
                    history=data.history, horizon=data.horizon,
                    steps_per_day=steps_per_day(data.panel.interval_minutes),
                    day_classes=training_day_classes(data))


class TrainedRun(Run):
    """A finished run folder as a model one can forecast with: rebuilds the model, its data and its
    :class:`Forecaster` from the folder's files (checked against the manifest first)."""

    def info(self) -> DataInfo:
        """The :class:`DataInfo` the model was built with (from ``data.json``)."""
        m = self.meta()
        return DataInfo(num_nodes=len(m["node_ids"]), in_channels=m["in_channels"],
                        weather_dim=len(m["covariate_names"]), history=m["history"], horizon=m["horizon"],
                        steps_per_day=m["steps_per_day"],
                        day_classes=tuple(m.get("day_classes", range(7))))  # runs before it: seven

    def calibrator(self) -> Calibrator | None:
        """The spread correction ``stmgt calibrate`` stored, or None."""
        from stmgt.calibration import stored_calibrator

        return stored_calibrator(self.dir)

    def model(self) -> ForecastModel:
        """The trained model (eval mode) with the weights chosen on validation; the files are first
        checked against ``manifest.json`` (:meth:`~stmgt.run_folder.Run.verify`)."""
        from safetensors.torch import load_file

        from stmgt.models import build_model

        weights = self._need("model.safetensors")
        self.verify()
        model = build_model(self.config().model, self.info())
        retrain = f"retrain with `stmgt train --overwrite --out {self.dir}`"
        try:
            state = load_file(str(weights))
        except Exception as e:  # safetensors raises its own SafetensorError (and OSError) for a damaged file
            raise RunError(f"{weights}: damaged, not a readable safetensors file ({str(e).splitlines()[0][:120]});"
                           f" {retrain}") from None
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # size mismatch
            first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), "size mismatch")
            raise RunError(f"{self.dir}: the weights do not fit the model config.yaml describes ({first[:200]});"
                           f" was config.yaml edited after training? Put it back or {retrain}") from None
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
        if fingerprint(panel) != self.meta()["fingerprint"]:
            raise RunError(f"{self.dir}: the data at {cfg.data.source!r} is not the data this run was trained on"
                           " (fingerprint differs)")
        return PanelData(panel, cfg.data.history, cfg.data.horizon, cfg.data.split, cfg.train.batch_size)

    def forecaster(self, graph: tuple | None = None, calibrated: bool = True) -> Forecaster:
        """The run's :class:`Forecaster`: its model, target scaler, graph (``graph.npz``, or ``graph`` given
        as ``(edge_index, edge_weight)`` arrays) and, with ``calibrated``, its stored calibration."""
        model = self.model()  # first: it checks the files against the manifest (a damaged graph.npz is named so)
        ei, ew = graph if graph is not None else self.graph()
        scaler, _ = self.scalers()
        return Forecaster(model, scaler.target_loc, scaler.target_scale,
                          torch.as_tensor(np.asarray(ei), dtype=torch.long),
                          None if ew is None else torch.as_tensor(np.asarray(ew), dtype=torch.float32),
                          self.calibrator() if calibrated else None)


def calibrate_run(run_dir: str | Path, progress: bool = True) -> dict:
    """Fit spread factors on the run's validation split (:func:`~stmgt.calibration.fit_spread_factors`); write
    ``calibration.json``; return it."""
    from stmgt.calibration import fit_spread_factors, save_calibration

    run = TrainedRun(run_dir)
    data = run.data()
    f = Forecaster.for_data(run.model(), data)  # uncalibrated: the factors are fitted on the raw mixture
    dists, ys, ms = [], [], []
    with torch.no_grad():
        for batch in data.loader("val", shuffle=False, batch_size=64):
            dists.append(f.forecast(batch))
            ys.append(batch.y)
            ms.append(batch.y_mask)
    return save_calibration(run_dir, fit_spread_factors(dists, ys, ms))
