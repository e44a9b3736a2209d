"""Last-value (persistence, "naive") baseline with a Gaussian predictive distribution.

The forecast for every horizon step is the last observed reading of each node in the history
window, the persistence forecast used as the floor of every traffic benchmark (e.g. Li et al.,
"Diffusion Convolutional Recurrent Neural Network: Data-Driven Traffic Forecasting", ICLR 2018,
and Hyndman and Athanasopoulos, "Forecasting: Principles and Practice", 3rd ed., 2021, section
5.2 "naive method"). Its spread is the root mean square of the ``h``-step change of the training
series, one standard deviation per horizon step, so it is a calibrated-by-construction
probabilistic reference rather than a point forecast.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from stmgt.config import ModelConfig
from stmgt.data.seasonal import training_series
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel


def node_means(z: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Mean of the observed values of each node ``[N]`` (0, the scaled global mean, if never observed)."""
    cnt = m.sum(0)
    return np.where(cnt > 0, (z * m).sum(0) / np.maximum(cnt, 1), 0.0)


class LastValueConfig(ModelConfig):
    """The persistence baseline's settings (``model: {name: last_value}``): only ``min_std``."""

    name: Literal["last_value"] = "last_value"


class LastValue(ForecastModel):
    """Persistence forecast ``y_{t+h} ~ N(x_last, sigma_h^2)`` (Hyndman and Athanasopoulos 2021, sec. 5.2).

    ``x_last`` is the last *observed* value of the node in the history (carried forward over
    masked steps); a node with no observed value in the window gets its training mean.
    ``sigma_h`` is estimated by :meth:`fit` on the training split as
    ``sqrt(mean (x_{t+h} - x_t)^2)`` over all nodes and all pairs of steps ``h`` apart that are
    both observed (floored at ``cfg.min_std``); it ignores that the carried value may be older
    than the last history step.

    Args:
        cfg: :class:`LastValueConfig`: ``min_std`` (default 0.01).
        info: :class:`~stmgt.models.base.DataInfo`; ``num_nodes`` and ``horizon`` are read.

    Buffers (scaled units): ``node_mean [N]``, ``step_std [H]`` (1 until :meth:`fit`).

    Shapes: ``batch.x [B, T, N, C]``, ``batch.x_mask [B, T, N]`` -> :class:`GaussianMixture`
    with ``K = 1`` and batch shape ``[B, H, N]`` (scaled units). ``edge_index`` and ``edge_weight`` are ignored.
    """

    trainable = False
    name = "last_value"
    Config = LastValueConfig
    paper: str = "persistence (Hyndman and Athanasopoulos 2021, sec. 5.2), Gaussian spread from training"

    def __init__(self, cfg: LastValueConfig, info: DataInfo):
        super().__init__()
        self.min_std = cfg.min_std
        self.register_buffer("node_mean", torch.zeros(info.num_nodes))
        self.register_buffer("step_std", torch.ones(info.horizon))

    @torch.no_grad()
    def fit(self, data) -> None:
        """Training mean per node and RMS ``h``-step change per horizon step (``data.bounds["train"]``)."""
        z, m = training_series(data)  # [T_train, N]
        H = self.step_std.numel()
        std = np.full(H, np.nan)
        for h in range(1, min(H, z.shape[0] - 1) + 1):
            both = m[h:] & m[:-h]  # [T_train - h, N]: pairs h apart, both observed
            if both.any():
                d = (z[h:] - z[:-h])[both]
                std[h - 1] = np.sqrt(np.mean(d * d))
        for h in range(H):  # a step without any pair reuses the previous step's value (1 for the first)
            if not np.isfinite(std[h]):
                std[h] = std[h - 1] if h > 0 else 1.0
        self.step_std.copy_(torch.from_numpy(np.maximum(std, self.min_std)))
        self.node_mean.copy_(torch.from_numpy(node_means(z, m)))

    def last_observed(self, batch: Batch) -> Tensor:
        """The last observed scaled value of each node, ``[B, N]`` (training mean where none)."""
        x, mask = batch.x[..., 0], batch.x_mask  # [B, T, N]
        T = x.shape[1]
        steps = torch.arange(T, device=x.device).view(1, T, 1)
        pos = torch.where(mask, steps, torch.full_like(steps, -1)).amax(dim=1)  # [B, N]
        val = x.gather(1, pos.clamp_min(0).unsqueeze(1)).squeeze(1)  # [B, N]
        return torch.where(pos >= 0, val, self.node_mean.to(x.dtype).expand_as(val))

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        last = self.last_observed(batch)  # [B, N]
        H = self.step_std.numel()
        mean = last.unsqueeze(1).expand(-1, H, -1)  # [B, H, N]
        std = self.step_std.to(last.dtype).view(1, H, 1).expand_as(mean)  # [B, H, N]
        return GaussianMixture.gaussian(mean, std)
