"""Historical-average baseline: the training mean of each node at each weekly time slot.

The historical average (HA) is the seasonal baseline of the traffic-forecasting benchmarks
(Li et al., "Diffusion Convolutional Recurrent Neural Network: Data-Driven Traffic Forecasting",
ICLR 2018, table 2; Liu and Guan, "A Summary of Traffic Flow Forecasting Methods", 2004): the
forecast of a node at a future time is the average of its past readings at the same time of day
and day of week. Here it is probabilistic: a Gaussian whose standard deviation is the spread of
those same readings.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from stmgt.config import ModelConfig
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel
from stmgt.models.last_value import training_series


def tod_slot(tod, steps_per_day: int):
    """Slot index ``floor(tod * steps_per_day)`` in ``0..steps_per_day-1`` of a time of day in ``[0, 1)``.

    A tolerance of 1e-3 slot absorbs float32 rounding of ``k / steps_per_day``.
    """
    if torch.is_tensor(tod):
        return (tod.float() * steps_per_day + 1e-3).floor().long().clamp(0, steps_per_day - 1)
    return np.clip(np.floor(np.asarray(tod, np.float64) * steps_per_day + 1e-3).astype(np.int64), 0,
                   steps_per_day - 1)


def _moments(s: np.ndarray, s2: np.ndarray, n: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (``ddof=1``) from sums, NaN where ``n`` is below 1 (mean) or min_count (std)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n >= 1, s / n, np.nan)
        var = np.where(n >= max(min_count, 2), (s2 - n * mean**2) / (n - 1), np.nan)
    return mean, np.sqrt(np.maximum(var, 0.0))


class HistoricalAverageConfig(ModelConfig):
    """The historical-average baseline's settings (``model: {name: historical_average, ...}``)."""

    name: Literal["historical_average"] = "historical_average"
    min_count: int = Field(2, ge=1)
    """Readings needed for a standard deviation at a level (weekly slot, daily slot, node)."""
    std_floor: float = Field(0.05, gt=0)
    """Lower bound of every standard deviation (scaled units)."""


class HistoricalAverage(ForecastModel):
    """Per node, time-of-day slot x day-of-week mean and std of the training split (Li et al., ICLR 2018).

    :meth:`fit` computes, in scaled units and over observed training values only, for every
    node ``n``, day of week ``d`` and slot ``s = floor(tod * steps_per_day)``:

    * the mean of the readings at ``(d, s)``; where there is none, the mean at slot ``s`` over all
      days; where there is none either, the node's mean (0 for a node never observed);
    * the sample standard deviation the same way, each level needing ``min_count`` readings
      (node level: 1 for a node without two readings), floored at ``max(cfg.min_std, std_floor)``.

    The forecast at horizon step ``h`` is ``N(mean[d, s, n], std[d, s, n]^2)`` at that step's
    ``(d, s)``, read from ``batch.tod[:, T:]`` and ``batch.dow[:, T:]``.

    Args:
        cfg: :class:`HistoricalAverageConfig`: ``min_std`` (default 0.01), ``min_count`` (readings
            needed for a standard deviation at a level, default 2), ``std_floor`` (lower bound of every
            standard deviation in scaled units, default 0.05).
        info: :class:`~stmgt.models.base.DataInfo`; ``num_nodes`` and ``steps_per_day`` are read.

    Buffers (scaled units): ``mean [7, S, N]``, ``std [7, S, N]`` with ``S = steps_per_day``.

    Shapes: ``batch.tod``, ``batch.dow`` ``[B, T + H]`` -> :class:`GaussianMixture` with ``K = 1``
    and batch shape ``[B, H, N]``. ``edge_index``, ``edge_weight`` and the history values are ignored.
    """

    trainable = False
    name = "historical_average"
    Config = HistoricalAverageConfig
    paper: str = "historical average per weekly slot (Li et al., ICLR 2018)"

    def __init__(self, cfg: HistoricalAverageConfig, info: DataInfo):
        super().__init__()
        self.steps_per_day, self.min_count = info.steps_per_day, cfg.min_count
        self.floor = max(cfg.min_std, cfg.std_floor)
        S, N = info.steps_per_day, info.num_nodes
        self.register_buffer("mean", torch.zeros(7, S, N))
        self.register_buffer("std", torch.ones(7, S, N))

    @torch.no_grad()
    def fit(self, data) -> None:
        """Slot statistics of the training split ``data.bounds["train"]`` (observed values only)."""
        lo, hi = data.bounds["train"]
        z, m = training_series(data)  # [T_train, N]
        tod, dow = data.panel.calendar()
        S = self.steps_per_day
        key = torch.from_numpy(dow[lo:hi] * S + tod_slot(tod[lo:hi], S))  # [T_train] in 0..7S-1
        zm = torch.from_numpy(z * m)
        mf = torch.from_numpy(m.astype(np.float64))

        def sums(a: Tensor) -> np.ndarray:
            out = torch.zeros(7 * S, a.shape[1], dtype=torch.float64).index_add_(0, key, a)
            return out.view(7, S, -1).numpy()  # [7*S, N] -> [7, S, N]

        s, s2, n = sums(zm), sums(zm * zm), sums(mf)  # each [7, S, N]
        mean_ds, std_ds = _moments(s, s2, n, self.min_count)
        mean_s, std_s = _moments(s.sum(0), s2.sum(0), n.sum(0), self.min_count)  # [S, N]
        mean_n, std_n = _moments(s.sum((0, 1)), s2.sum((0, 1)), n.sum((0, 1)), 2)  # [N]
        mean_n = np.nan_to_num(mean_n, nan=0.0)
        std_n = np.nan_to_num(std_n, nan=1.0)
        mean = np.where(np.isnan(mean_ds), np.where(np.isnan(mean_s), mean_n, mean_s), mean_ds)
        std = np.where(np.isnan(std_ds), np.where(np.isnan(std_s), std_n, std_s), std_ds)
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(np.maximum(std, self.floor)))

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        T = batch.x.shape[1]
        slot = tod_slot(batch.tod[:, T:], self.steps_per_day)  # [B, H]
        day = batch.dow[:, T:].long()  # [B, H]
        mean = self.mean[day, slot].to(batch.x.dtype)  # [B, H, N]
        std = self.std[day, slot].to(batch.x.dtype)  # [B, H, N]
        return GaussianMixture.gaussian(mean, std)
