"""The decoder STMGT and STMamba share: horizon projection, weather, horizon calendar, mixture head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from stmgt.data.seasonal import profile_of, tod_slot, training_series, weekly_stats
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
    With ``anchor_seasonal`` the anchor of step ``h`` and road ``n`` is
    ``g[h, n] * last[n] + (1 - g[h, n]) * profile[d_h, s_h, n]``, ``g = sigmoid(w)`` learned,
    ``profile`` the road's training mean at the step's day of week ``d_h`` (its
    category, ``info.day_classes``) and time-of-day slot ``s_h`` (:func:`~stmgt.data.seasonal.weekly_profile`,
    set by :meth:`prepare`; without ``anchor_last`` ``last`` is 0, the scaled mean). While training, a
    forecast step inside the training split reads the profile *without its own reading* (leave one out):
    otherwise the profile holds the answer (all of it where a day of week occurs once, as in a one-week
    dataset) and the gate learns to trust a profile that validation and test never get. :meth:`prepare` starts
    ``g[h, n]`` at the blend that fits the training windows best in least squares (clipped to [0.02, 0.98]):
    a per-road gate learns slowly (AdamW moves ``w`` by about the learning rate per step, so a few hundred steps
    cannot carry a fixed start across the range), and the start is then already what the clock and the last
    reading are each worth at that road and horizon (without :meth:`prepare`: 0.88, mostly the last reading).

    Args:
        cfg: :class:`~stmgt.models.base.SpatioTemporalConfig`; read here: ``hidden``, ``heads``, ``dropout``,
            ``weather`` ("cross" by default, "document" or "none"), ``weather_forecast``,
            ``anchor_last``, ``anchor_seasonal``, ``decoder`` ("projection" by default, or "flat"),
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
        self.seasonal = getattr(cfg, "anchor_seasonal", False)
        if self.seasonal:
            self.steps_per_day = info.steps_per_day
            self.day_classes = tuple(info.day_classes)
            self.register_buffer("profile", torch.zeros(7, info.steps_per_day, info.num_nodes))  # [7, S, N]
            self.blend = nn.Parameter(torch.full((info.horizon, info.num_nodes), 2.0))  # [H, N], sigmoid(2) = 0.88
            self.loo = False  # prepare() adds the training split's sums for the leave-one-out profile

    @torch.no_grad()
    def prepare(self, data) -> None:
        """The weekly profile of the training split (scaled units), with ``anchor_seasonal``, and the sums its
        leave-one-out form needs while training (not saved with the weights)."""
        if not self.seasonal:
            return
        stats = weekly_stats(data, self.steps_per_day, self.day_classes)
        mean, _ = profile_of(stats)
        self.profile.copy_(torch.from_numpy(mean))
        (s, _, n), (s0, _, n0) = stats  # days pooled by category; each reading once
        z, m = training_series(data)  # [T_train, N]
        n_road = n0.sum((0, 1))
        road = np.where(n_road > 0, s0.sum((0, 1)) / np.maximum(n_road, 1), 0.0)  # [N], the last fallback
        self.loo_start = data.bounds["train"][0]
        for name, a in (("sum", s), ("count", n), ("slot_sum", s0.sum(0)), ("slot_count", n0.sum(0)),
                        ("road", road), ("z", z), ("m", m.astype(np.float64))):
            self.register_buffer(f"loo_{name}", torch.from_numpy(a).to(self.profile.dtype), persistent=False)
        self.loo = True
        self.blend.copy_(torch.logit(self._fitted_gate(data).clamp(0.02, 0.98)).to(self.blend.dtype))

    def _fitted_gate(self, data) -> Tensor:
        """``[H, N]``: per horizon step and road, the ``g`` minimising ``sum (y - g*last - (1-g)*profile)^2`` over
        the observed targets of the training windows (the profile left one out, as while training), i.e.
        ``sum (y - p)(l - p) / sum (l - p)^2``; 0.5 where the last reading and the profile never differ."""
        num = torch.zeros(self.blend.shape, dtype=torch.float64)
        den = torch.zeros_like(num)
        loc, scale = data.scaler.target_loc, data.scaler.target_scale
        for batch in data.loader("train", shuffle=False, batch_size=256):
            last, season = (a.double() for a in self._anchor_parts(batch, loo=True))  # [B, N], [B, H, N]
            y = (batch.y.double() - loc) / scale  # [B, H, N] scaled, as the anchor
            m = batch.y_mask.double()
            d = last[:, None] - season
            num += (m * d * (y - season)).sum(0)
            den += (m * d * d).sum(0)
        return torch.where(den > 1e-12, num / den.clamp_min(1e-12), torch.full_like(num, 0.5))

    def _season(self, batch: Batch, dow: Tensor, slot: Tensor, loo: bool | None = None) -> Tensor:
        """The profile at each forecast step ``[B, H, N]``; while training (or with ``loo``), without the step's
        own reading where it lies in the training split."""
        season = self.profile[dow, slot]  # [B, H, N]
        if not ((self.training if loo is None else loo) and self.loo):
            return season
        H, Tt = dow.shape[1], self.loo_z.shape[0]
        i = batch.start.long()[:, None] + self.history + torch.arange(H, device=dow.device) - self.loo_start  # [B, H]
        inside = (i >= 0) & (i < Tt)  # the forecast step lies in the training split
        i = i.clamp(0, Tt - 1)
        om = self.loo_m[i] * inside[..., None]  # [B, H, N]: 1 where the step's own reading is in the sums
        own = self.loo_z[i] * om
        c1 = self.loo_count[dow, slot] - om
        c2 = self.loo_slot_count[slot] - om
        by_day = (self.loo_sum[dow, slot] - own) / c1.clamp_min(1)
        by_slot = (self.loo_slot_sum[slot] - own) / c2.clamp_min(1)
        return torch.where(c1 >= 1, by_day, torch.where(c2 >= 1, by_slot, self.loo_road))

    def _anchor_parts(self, batch: Batch, loo: bool | None = None) -> tuple[Tensor, Tensor]:
        """The seasonal blend's two ends: the last reading ``[B, N]`` (0 without ``anchor_last``) and the profile
        at each forecast step ``[B, H, N]`` (left one out as :meth:`_season` says)."""
        T = self.history
        slot = tod_slot(batch.tod[:, T:], self.steps_per_day)  # [B, H]
        season = self._season(batch, batch.dow[:, T:].long(), slot, loo)  # [B, H, N]
        last = (last_observed(batch.x[..., 0], batch.x_mask) if self.anchor
                else torch.zeros_like(season[:, 0]))  # [B, N]
        return last, season

    def anchor_of(self, batch: Batch) -> Tensor | None:
        """Each mixture mean's offset origin: ``[B, N]`` (the last reading), ``[B, H, N]`` (the seasonal
        blend) or None."""
        if not self.seasonal:
            return last_observed(batch.x[..., 0], batch.x_mask) if self.anchor else None  # [B, N]
        last, season = self._anchor_parts(batch)
        g = torch.sigmoid(self.blend)  # [H, N]
        return g * last[:, None] + (1 - g) * season  # [B, H, N]

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
        dist = self.head(h, self.anchor_of(batch))
        return (dist, att) if return_attention else dist
