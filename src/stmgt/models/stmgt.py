"""STMGT: Spatio-Temporal Multi-modal Graph Transformer with a Gaussian-mixture output.

The original STMGT design with the departures listed in ``docs/design.md``: input embedding;
``blocks`` x (GATv2 over nodes || Transformer over time, gated); a learned projection from
history to horizon steps; weather cross-attention over weather tokens; a K-component
Gaussian-mixture head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stmgt.config import ModelConfig
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel, edge_weights_switch
from stmgt.nn.embedding import InputEmbedding
from stmgt.nn.horizon import FlatHorizonProjection, HorizonProjection
from stmgt.nn.horizon_calendar import HorizonCalendar
from stmgt.nn.mixture_head import GaussianMixtureHead, last_observed
from stmgt.nn.st_block import STBlock
from stmgt.nn.weather import DocumentWeatherAttention, WeatherCrossAttention


class ForecastDecoder(nn.Module):
    """What STMGT and STMamba share after their blocks: horizon projection, weather, mixture head.

    ``weather="document"`` applies the original design's block on the history steps before the
    projection (as the original does); ``"cross"`` applies our cross-attention on the horizon
    steps, over the history's weather tokens (and the horizon's with ``weather_forecast``).
    With ``anchor_last`` the mixture means are offsets from each node's last observed reading
    (a reparametrisation of the head: the network predicts the change, which it learns faster).
    ``decoder="flat"`` reads each horizon step out of the whole flattened history
    (:class:`~stmgt.nn.horizon.FlatHorizonProjection`) instead of a shared mix of time steps.
    ``horizon_calendar`` adds each forecast step's time of day, day of week and the road's identity
    (:class:`~stmgt.nn.horizon_calendar.HorizonCalendar`) before the head.

    Shapes: ``h [B, T, N, D]``, ``batch.weather [B, T+H, W]`` -> :class:`GaussianMixture` ``[B, H, N]``.
    """

    def __init__(self, cfg: ModelConfig, info: DataInfo):
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

    def forward(self, h: Tensor, batch: Batch) -> GaussianMixture:
        T = self.history
        if self.weather_pre is not None:
            h = self.weather_pre(h, batch.weather[:, :T])
        h = self.projection(h)  # [B, H, N, D]
        if self.weather is not None:
            w = batch.weather if self.weather_forecast else batch.weather[:, :T]  # [B, L, W]
            h = self.weather(h, w)
        if self.calendar is not None:
            h = self.calendar(h, batch.tod[:, T:], batch.dow[:, T:])  # the forecast steps' own calendar
        anchor = last_observed(batch.x[..., 0], batch.x_mask) if self.anchor else None  # [B, N]
        return self.head(h, anchor)


class STMGT(ForecastModel):
    """STMGT (``docs/design.md``): see the module docstring.

    Args:
        cfg: :class:`~stmgt.config.ModelConfig` (hidden 96, blocks 3, heads 4, mixtures 5,
            dropout 0.2, drop_edge 0.05, weather "cross", calendar on by default).
        info: :class:`~stmgt.models.base.DataInfo` (nodes, channels, weather size, history, horizon).
        edge_weights: the spatial attention reads the edge weights as a 1-dim edge attribute
            (``edge_dim=1`` in every block's GATv2; the fused kernels are then not used). Default
            None: ``cfg.edge_weights`` (False when the config has no such field). On without
            weights in the data: unit weights.

    Shapes: ``batch.x [B, T, N, C]``, ``edge_index [2, E]``, ``edge_weight [E]`` or None ->
    :class:`GaussianMixture` with batch shape ``[B, H, N]`` in scaled units. With
    ``keep_details = True`` the gate values of each block (``[B, T, N, D]``) and the spatial
    attention (``(edge_index_with_loops, alpha [B*T, E', heads])``) of the last forward are kept in
    ``details``.
    """

    name = "stmgt"

    def __init__(self, cfg: ModelConfig, info: DataInfo, edge_weights: bool | None = None):
        super().__init__()
        self.cfg, self.info = cfg, info
        self.edge_weights = edge_weights_switch(cfg, edge_weights)
        self.embedding = InputEmbedding.from_config(cfg, info)
        self.blocks = nn.ModuleList(
            STBlock(cfg.hidden, cfg.heads, cfg.dropout, cfg.drop_edge, cfg.spatial, cfg.fused_attention,
                    edge_dim=1 if self.edge_weights else None)
            for _ in range(cfg.blocks)
        )
        self.decoder = ForecastDecoder(cfg, info)
        self.keep_details = False
        self.details: dict = {}

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        T = batch.x.shape[1]
        ew = edge_weight if self.edge_weights else None
        h = self.embedding(batch.x, batch.x_mask, batch.tod[:, :T], batch.dow[:, :T])  # [B, T, N, D]
        gates, atts = [], []
        for block in self.blocks:
            if self.cfg.checkpoint and self.training and torch.is_grad_enabled():
                # the same numbers (the RNG state is replayed), activations recomputed in backward;
                # samples are independent inside a block, so it can also run over chunks of the batch
                c = self.cfg.checkpoint_chunk or h.shape[0]
                parts = [checkpoint(block, h[i:i + c], edge_index, ew, self.keep_details, use_reentrant=False)
                         for i in range(0, h.shape[0], c)]
                h = torch.cat([p[0] for p in parts])
                alpha = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
                att = parts[0][2] if len(parts) == 1 else None
            else:
                h, alpha, att = block(h, edge_index, ew, return_attention=self.keep_details)
            if self.keep_details:
                gates.append(alpha)
                atts.append(att)
        if self.keep_details:
            self.details = {"gate": gates, "spatial_attention": atts}
        return self.decoder(h, batch)
