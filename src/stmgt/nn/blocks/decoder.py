"""The decoder STMGT and STMamba share: horizon projection, weather, horizon calendar, mixture head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from stmgt.nn.blocks.horizon_calendar import HorizonCalendar
from stmgt.nn.blocks.horizon_projection import FlatHorizonProjection, HorizonProjection
from stmgt.nn.blocks.weather_attention import DocumentWeatherAttention, WeatherCrossAttention
from stmgt.nn.layers.mixture_head import GaussianMixtureHead, last_observed

if TYPE_CHECKING:  # annotations only
    from stmgt.config import ModelConfig
    from stmgt.data.windows import Batch
    from stmgt.distributions.mixture import GaussianMixture


class ForecastDecoder(nn.Module):
    """What STMGT and STMamba share after their blocks: horizon projection, weather, mixture head.

    ``weather="document"`` applies the original design's block on the history steps before the
    projection (as the original does); ``"cross"`` applies our cross-attention on the horizon
    steps, over the history's weather tokens (and the horizon's with ``weather_forecast``).
    With ``anchor_last`` the mixture means are offsets from each node's last observed reading
    (a reparametrisation of the head: the network predicts the change, which it learns faster).
    ``decoder="flat"`` reads each horizon step out of the whole flattened history
    (:class:`~stmgt.nn.blocks.horizon_projection.FlatHorizonProjection`) instead of a shared mix of time steps.
    ``horizon_calendar`` adds each forecast step's time of day, day of week and the road's identity
    (:class:`~stmgt.nn.blocks.horizon_calendar.HorizonCalendar`) before the head.

    Args:
        cfg: :class:`~stmgt.models.base.SpatioTemporalConfig`; read here: ``hidden``, ``heads``, ``dropout``,
            ``weather`` ("cross" by default, "document" or "none"), ``weather_forecast``,
            ``anchor_last``, ``decoder`` ("projection" by default, or "flat"),
            ``horizon_calendar``, and the head's ``mixtures``, ``min_std``, ``max_std``.
        info: :class:`~stmgt.models.base.DataInfo`: ``history`` ``T``, ``horizon`` ``H``,
            ``weather_dim`` ``W`` (0: no weather, whatever ``cfg.weather``), ``num_nodes``,
            ``steps_per_day``, ``day_classes``.

    Shapes: ``h [B, T, N, D]``, ``batch.weather [B, T+H, W]`` -> :class:`GaussianMixture` ``[B, H, N]``;
    with ``return_attention=True`` also the weather attention: ``[B, H*N, L]`` with ``weather="cross"``
    (``L`` weather steps), ``[B*T, N, N]`` with ``"document"``, None without weather.
    """

    def __init__(self, cfg: ModelConfig, info):
        super().__init__()
        self.history, self.weather_forecast, self.anchor = info.history, cfg.weather_forecast, cfg.anchor_last
        mode = cfg.weather if info.weather_dim > 0 else "none"
        self.weather_mode = mode
        self.weather_pre = (DocumentWeatherAttention(cfg.hidden, info.weather_dim, cfg.heads, cfg.dropout)
                            if mode == "document" else None)
        self.weather = (WeatherCrossAttention(cfg.hidden, info.weather_dim, cfg.heads, cfg.dropout)
                        if mode == "cross" else None)
        self.projection = (FlatHorizonProjection(info.history, info.horizon, cfg.hidden) if cfg.decoder == "flat"
                           else HorizonProjection(info.history, info.horizon))
        self.calendar = (HorizonCalendar(cfg.hidden, info.num_nodes, info.steps_per_day, info.day_classes,
                                         cfg.dropout) if cfg.horizon_calendar else None)
        self.head = GaussianMixtureHead.from_config(cfg.hidden, cfg)

    def forward(self, h: Tensor, batch: Batch,
                return_attention: bool = False) -> GaussianMixture | tuple[GaussianMixture, Tensor | None]:
        T = self.history
        att = None
        if self.weather_pre is not None:
            h = self.weather_pre(h, batch.weather[:, :T], return_attention=return_attention)
            if return_attention:
                h, att = h
        h = self.projection(h)  # [B, H, N, D]
        if self.weather is not None:
            w = batch.weather if self.weather_forecast else batch.weather[:, :T]  # [B, L, W]
            h = self.weather(h, w, return_attention=return_attention)
            if return_attention:
                h, att = h
        if self.calendar is not None:
            h = self.calendar(h, batch.tod[:, T:], batch.dow[:, T:])  # the forecast steps' own calendar
        anchor = last_observed(batch.x[..., 0], batch.x_mask) if self.anchor else None  # [B, N]
        dist = self.head(h, anchor)
        return (dist, att) if return_attention else dist
