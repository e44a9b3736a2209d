"""DLinear baseline: a moving-average decomposition and two linear maps over time, per road.

Zeng, Chen, Zhang and Xu, "Are Transformers Effective for Time Series Forecasting?", AAAI 2023
(reference code: github.com/cure-lab/LTSF-Linear). The history of each road is split into a trend
(a centred moving average, the series' first and last values repeated at the ends) and the
remainder; one linear map over the time axis forecasts each part's ``H`` future values and their
sum is the forecast. Weights are shared by all roads (the paper's default, ``individual=False``).
No graph, no calendar. To be probabilistic like every stmgt model, a second pair of linear maps of
the same two parts gives each step's log standard deviation: the output is one Gaussian
(a mixture with ``K = 1``) per road and step.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from stmgt.config import ModelConfig
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel


class DLinearConfig(ModelConfig):
    """DLinear's settings (``model: {name: dlinear, ...}``)."""

    name: Literal["dlinear"] = "dlinear"
    kernel_size: int = Field(25, ge=1)
    """Width of the moving average that extracts the trend (the paper's 25; odd widths are centred)."""


def moving_average(x: Tensor, kernel_size: int) -> Tensor:
    """The reference's ``moving_avg``: mean over a window of ``kernel_size`` steps with stride 1, the
    first value repeated ``(kernel_size - 1) // 2`` times in front and the last as often at the end.

    Shapes: ``x [M, T] -> [M, T']`` with ``T' = T`` for odd ``kernel_size`` (``T - 1`` for even).
    """
    pad = (kernel_size - 1) // 2
    padded = torch.cat([x[:, :1].expand(-1, pad), x, x[:, -1:].expand(-1, pad)], dim=1)  # [M, T + 2 pad]
    return F.avg_pool1d(padded.unsqueeze(1), kernel_size, stride=1).squeeze(1)  # [M, T']


class DLinear(ForecastModel):
    """DLinear (Zeng et al., AAAI 2023) with a Gaussian output.

    Per road: ``trend = moving_average(x, kernel_size)``, ``seasonal = x - trend``, and
    ``mean = W_s seasonal + W_t trend`` (``W_s, W_t``: ``Linear(T, H)``), ``log std = V_s seasonal + V_t trend``
    (``V``: ``Linear(T, H)``), ``std = exp(log std) + min_std``. Unobserved readings enter as 0 (the
    training mean in scaled units), as the reference has no mask.

    Args:
        cfg: :class:`DLinearConfig`: ``kernel_size`` (default 25), ``min_std`` (default 0.01).
        info: :class:`~stmgt.models.base.DataInfo`: ``history`` and ``horizon`` are read.

    Shapes: ``batch.x [B, T, N, C]`` with ``T = info.history`` (channel 0 is read) -> :class:`GaussianMixture`
    with ``K = 1`` and batch shape ``[B, H, N]`` (scaled units). ``edge_index`` is ignored.
    """

    name = "dlinear"
    Config = DLinearConfig
    paper: str = "DLinear (Zeng et al., AAAI 2023): trend/remainder decomposition and linear maps, no graph"

    def __init__(self, cfg: DLinearConfig, info: DataInfo):
        super().__init__()
        if cfg.kernel_size % 2 == 0:
            raise ValueError(f"DLinear's kernel_size must be odd (got {cfg.kernel_size})")
        self.kernel_size, self.history, self.min_std = cfg.kernel_size, info.history, cfg.min_std
        T, H = info.history, info.horizon
        self.seasonal, self.trend = nn.Linear(T, H), nn.Linear(T, H)
        self.seasonal_scale, self.trend_scale = nn.Linear(T, H), nn.Linear(T, H)
        for layer in (self.seasonal, self.trend):  # the reference starts from the window's average
            nn.init.constant_(layer.weight, 1 / T)

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        x = batch.x[..., 0] * batch.x_mask  # [B, T, N], unobserved -> 0
        B, T, N = x.shape
        if T != self.history:
            raise ValueError(f"DLinear was built for a history of {self.history} steps, got {T}")
        series = x.transpose(1, 2).reshape(B * N, T)  # [B, T, N] -> [B*N, T]
        trend = moving_average(series, self.kernel_size)  # [B*N, T]
        seasonal = series - trend
        mean = self.seasonal(seasonal) + self.trend(trend)  # [B*N, H]
        log_std = self.seasonal_scale(seasonal) + self.trend_scale(trend)  # [B*N, H]
        mean = mean.view(B, N, -1).transpose(1, 2).unsqueeze(-1)  # [B*N, H] -> [B, H, N, 1]
        std = log_std.clamp(max=20).exp().view(B, N, -1).transpose(1, 2).unsqueeze(-1) + self.min_std
        return GaussianMixture(mean, std, torch.zeros_like(mean))
