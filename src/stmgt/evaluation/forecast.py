"""Evaluate a model (and the two reference baselines) on one split, in data units, masked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from stmgt.config import model_config
from stmgt.data.windows import PanelData
from stmgt.distributions.mixture import GaussianMixture
from stmgt.evaluation.metrics import MetricAccumulator
from stmgt.forecaster import Forecaster, data_info
from stmgt.models import build_model
from stmgt.models.base import ForecastModel

REFERENCE_BASELINES = ("last_value", "historical_average")
#: Scores reported before calibration beside the calibrated ones.
UNCALIBRATED_KEYS = ("crps", "crps_normalised", "nll", "coverage80", "coverage90", "width80", "width90")


@dataclass
class Forecasts:
    """Forecasts of a whole split kept for plots: ``[W, H, N]`` arrays in data units."""

    starts: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    mean: np.ndarray
    lo80: np.ndarray
    hi80: np.ndarray


@torch.no_grad()
def forecast_split(model: ForecastModel | Forecaster, data: PanelData, split: str = "test", calibration=None,
                   keep: bool = False, progress: bool = False, batch_size: int = 64):
    """Run ``model`` over every window of ``split``; returns ``(metrics dict, Forecasts or None)``.

    ``model`` is a :class:`~stmgt.forecaster.Forecaster` (its calibration, if any, is applied) or a bare
    model (on ``data``'s scaler and graph). ``calibration`` (``(dist, batch) -> dist`` on data units) replaces
    the forecaster's. With a calibration the metrics and the kept forecasts are the calibrated ones, and
    ``metrics["uncalibrated"]`` holds the probabilistic scores before calibration, from the same pass.
    """
    f = model if isinstance(model, Forecaster) else Forecaster.for_data(model, data)
    if calibration is not None:
        f = Forecaster(f.model, f.loc, f.scale, f.edge_index, f.edge_weight, calibration)
    f.model.eval()
    acc = MetricAccumulator(data.horizon)
    raw = MetricAccumulator(data.horizon) if f.calibrated else None
    parts: dict[str, list] = {k: [] for k in ("starts", "y", "mask", "mean", "lo80", "hi80")}
    loader = data.loader(split, shuffle=False, batch_size=batch_size)
    for batch in tqdm(loader, desc=f"{getattr(f.model, 'name', 'model')} on {split}", disable=not progress,
                      leave=False):
        dist: GaussianMixture = f.uncalibrated(batch)
        if raw is not None:
            raw.update(dist, batch.y, batch.y_mask)
            dist = f.calibrate(dist, batch)
        acc.update(dist, batch.y, batch.y_mask)
        if keep:
            lo, hi = dist.interval(0.8)
            for k, v in (("starts", batch.start), ("y", batch.y), ("mask", batch.y_mask), ("mean", dist.mean),
                         ("lo80", lo), ("hi80", hi)):
                parts[k].append(v.cpu().numpy())
    fc = Forecasts(**{k: np.concatenate(v) for k, v in parts.items()}) if keep else None
    metrics = acc.compute()
    if raw is not None:
        r = raw.compute()
        metrics["uncalibrated"] = {k: r[k] for k in UNCALIBRATED_KEYS}
    return metrics, fc


def baseline_metrics(data: PanelData, split: str = "test", names=REFERENCE_BASELINES) -> dict[str, dict]:
    """Fit each statistical baseline on the training split and evaluate it on ``split``."""
    out = {}
    for name in names:
        model = build_model(model_config(name), data_info(data))
        model.fit(data)
        out[name], _ = forecast_split(model, data, split)
    return out
