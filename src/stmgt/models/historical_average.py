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
from stmgt.data.seasonal import tod_slot, weekly_profile
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel


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

    * the mean of the readings at ``(d, s)``, the days pooled by their category ``info.day_classes``
      (weekday/weekend where the training split lacks a day of week, as Los-loop's unseen Tuesday and
      Wednesday; :func:`~stmgt.data.panel.day_classes`); where there is none, the mean at slot ``s`` over
      all days; where there is none either, the node's mean (0 for a node never observed);
    * the sample standard deviation the same way, each level needing ``min_count`` readings
      (node level: 1 for a node without two readings), floored at ``max(cfg.min_std, std_floor)``.

    The forecast at horizon step ``h`` is ``N(mean[d, s, n], std[d, s, n]^2)`` at that step's
    ``(d, s)``, read from ``batch.tod[:, T:]`` and ``batch.dow[:, T:]``.

    Args:
        cfg: :class:`HistoricalAverageConfig`: ``min_std`` (default 0.01), ``min_count`` (readings
            needed for a standard deviation at a level, default 2), ``std_floor`` (lower bound of every
            standard deviation in scaled units, default 0.05).
        info: :class:`~stmgt.models.base.DataInfo`; ``num_nodes``, ``steps_per_day`` and ``day_classes`` are read.

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
        self.steps_per_day, self.min_count, self.day_classes = info.steps_per_day, cfg.min_count, info.day_classes
        self.floor = max(cfg.min_std, cfg.std_floor)
        S, N = info.steps_per_day, info.num_nodes
        self.register_buffer("mean", torch.zeros(7, S, N))
        self.register_buffer("std", torch.ones(7, S, N))

    @torch.no_grad()
    def fit(self, data) -> None:
        """Slot statistics of the training split ``data.bounds["train"]`` (observed values only)."""
        mean, std = weekly_profile(data, self.steps_per_day, self.min_count, self.day_classes)  # each [7, S, N]
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(np.maximum(std, self.floor)))

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        T = batch.x.shape[1]
        slot = tod_slot(batch.tod[:, T:], self.steps_per_day)  # [B, H]
        day = batch.dow[:, T:].long()  # [B, H]
        mean = self.mean[day, slot].to(batch.x.dtype)  # [B, H, N]
        std = self.std[day, slot].to(batch.x.dtype)  # [B, H, N]
        return GaussianMixture.gaussian(mean, std)
