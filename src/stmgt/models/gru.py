"""GRU baseline: a recurrent encoder per node, no graph.

A purely temporal reference: the same GRU (Cho et al., "Learning Phrase Representations using
RNN Encoder-Decoder for Statistical Machine Translation", EMNLP 2014) runs over the history of
every node independently, and its last hidden state is mapped to all horizon steps at once and
to the shared Gaussian-mixture head, so the comparison with the graph models isolates what the
spatial structure adds.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from stmgt.config import NeuralModelConfig
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel
from stmgt.nn.layers.mixture_head import GaussianMixtureHead


class GRUConfig(NeuralModelConfig):
    """The GRU baseline's settings (``model: {name: gru, ...}``)."""

    name: Literal["gru"] = "gru"
    layers: int = Field(2, ge=1)
    """Stacked GRU layers."""


class GRUForecaster(ForecastModel):
    """Per-node GRU encoder (Cho et al., EMNLP 2014) with a direct multi-step mixture output.

    Every node's history is one sequence with inputs ``[x (C channels), observed mask,
    sin(2 pi tod), cos(2 pi tod)]`` per step. A ``layers``-layer GRU of width ``cfg.hidden``
    reads it; the last layer's final state goes through ``Linear(D, H*D)`` + ReLU to one
    feature vector per horizon step and the shared :class:`GaussianMixtureHead`. Nodes share
    all weights and never exchange information.

    Args:
        cfg: :class:`GRUConfig`: ``hidden`` (``D``, default 96), ``dropout`` (between GRU layers and
            before the output map, default 0.2), ``mixtures`` (``K``, default 5), ``min_std`` (default
            0.01), ``max_std`` (default 10), ``layers`` (stacked GRU layers, default 2).
        info: :class:`~stmgt.models.base.DataInfo`: ``in_channels`` and ``horizon`` are read.

    Shapes: ``batch.x [B, T, N, C]``, ``batch.x_mask [B, T, N]``, ``batch.tod [B, T + H]``
    -> :class:`GaussianMixture` with batch shape ``[B, H, N]`` (scaled units); any ``T``.
    ``edge_index`` and ``edge_weight`` are ignored.
    """

    name = "gru"
    Config = GRUConfig
    paper: str = "per-node GRU encoder (Cho et al., EMNLP 2014), no graph"

    def __init__(self, cfg: GRUConfig, info: DataInfo):
        super().__init__()
        D, self.horizon, self.hidden = cfg.hidden, info.horizon, cfg.hidden
        self.gru = nn.GRU(info.in_channels + 3, D, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(D, info.horizon * D)
        self.head = GaussianMixtureHead.from_config(D, cfg)

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        x = batch.x
        B, T, N, _ = x.shape
        angle = 2 * math.pi * batch.tod[:, :T].to(x.dtype)  # [B, T]
        cal = torch.stack([angle.sin(), angle.cos()], -1).unsqueeze(2).expand(B, T, N, 2)  # [B, T, N, 2]
        feats = torch.cat([x, batch.x_mask.unsqueeze(-1).to(x.dtype), cal], -1)  # [B, T, N, C + 3]
        seq = feats.permute(0, 2, 1, 3).reshape(B * N, T, -1)  # [B*N, T, C + 3]
        _, h_n = self.gru(seq)  # h_n [layers, B*N, D]
        h = torch.relu(self.output(self.dropout(h_n[-1])))  # [B*N, H*D]
        h = h.view(B, N, self.horizon, self.hidden).transpose(1, 2)  # [B*N, H*D] -> [B, H, N, D]
        return self.head(h)
