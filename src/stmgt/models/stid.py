"""STID baseline: spatial and temporal identity embeddings with an MLP.

Shao et al., "Spatial-Temporal Identity: A Simple yet Effective Baseline for Multivariate Time
Series Forecasting", CIKM 2022 (reference code: github.com/zezhishao/STID). The history of each
node is flattened into one vector and embedded, then concatenated with a learned node
embedding and time-of-day and day-of-week embeddings of the last history step, and encoded by
residual MLP layers; no graph and no recurrence. The reference regresses the ``H`` values
directly; here the regression layer outputs ``H`` feature vectors for the shared
Gaussian-mixture head so the model is probabilistic like every model in stmgt.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from stmgt.config import NeuralModelConfig
from stmgt.data.seasonal import tod_slot
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel
from stmgt.nn.layers.mixture_head import GaussianMixtureHead


class ResidualMLP(nn.Module):
    """STID's ``MultiLayerPerceptron``: ``x + fc2(dropout(relu(fc1(x))))``.

    Args:
        dim: features (input and output).
        dropout: dropout after the activation (default 0.15, the reference's value).

    Shapes: ``[..., dim] -> [..., dim]``.
    """

    def __init__(self, dim: int, dropout: float = 0.15):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.drop(torch.relu(self.fc1(x))))


class STIDConfig(NeuralModelConfig):
    """STID's settings (``model: {name: stid, ...}``); the paper uses dropout 0.15 and lr 0.002."""

    name: Literal["stid"] = "stid"
    embed_dim: int = Field(32, ge=1)
    """Size of the history (series) embedding."""
    node_dim: int = Field(32, ge=1)
    """Size of the node identity embedding."""
    tod_dim: int = Field(32, ge=1)
    """Size of the time-of-day embedding."""
    dow_dim: int = Field(32, ge=1)
    """Size of the day-of-week embedding."""
    num_layer: int = Field(3, ge=1)
    """Residual MLP layers."""


class STID(ForecastModel):
    """Spatial-Temporal Identity (Shao et al., CIKM 2022) with a Gaussian-mixture output.

    Per node: ``e = Linear(T*(C+1) -> embed_dim)([x, mask] flattened over the history)``,
    concatenated with the node embedding ``E_node[n]`` and the time-of-day and day-of-week
    embeddings of the last history step, then ``num_layer`` :class:`ResidualMLP` layers, and a
    regression ``Linear`` to ``H * hidden_out`` features, one vector per horizon step, fed to
    the shared :class:`GaussianMixtureHead`. The reference's 1x1 convolutions are written as
    linear layers over the feature axis (the same operation).

    Args:
        cfg: :class:`STIDConfig`: ``hidden`` (features per horizon step given to the head, default 96),
            ``dropout`` (default 0.2; the paper uses 0.15), ``mixtures`` (default 5), ``min_std``
            (default 0.01), ``embed_dim`` (history embedding, default 32 as the paper), ``node_dim``,
            ``tod_dim``, ``dow_dim`` (default 32 each; the day-of-week embedding has one row per category
            of ``info.day_classes``: weekday/weekend where training misses a weekday), ``num_layer``
            (residual MLP layers, default 3).
        info: :class:`~stmgt.models.base.DataInfo`: ``num_nodes``, ``in_channels``, ``history``,
            ``horizon`` and ``steps_per_day`` are read.

    Shapes: ``batch.x [B, T, N, C]`` with ``T = info.history``, ``batch.x_mask [B, T, N]``,
    ``batch.tod/dow [B, T + H]`` -> :class:`GaussianMixture` with batch shape ``[B, H, N]``.
    ``edge_index`` and ``edge_weight`` are ignored.
    """

    name = "stid"
    Config = STIDConfig
    paper: str = "STID (Shao et al., CIKM 2022): identity embeddings and an MLP, no graph"

    def __init__(self, cfg: STIDConfig, info: DataInfo):
        super().__init__()
        self.history, self.horizon, self.steps_per_day = info.history, info.horizon, info.steps_per_day
        self.hidden_out = cfg.hidden
        embed_dim, node_dim, tod_dim, dow_dim = cfg.embed_dim, cfg.node_dim, cfg.tod_dim, cfg.dow_dim
        self.series_emb = nn.Linear(info.history * (info.in_channels + 1), embed_dim)
        self.node_emb = nn.Parameter(torch.empty(info.num_nodes, node_dim))
        self.tod_emb = nn.Parameter(torch.empty(info.steps_per_day, tod_dim))
        self.register_buffer("day_map", torch.tensor(info.day_classes, dtype=torch.long), persistent=False)
        self.dow_emb = nn.Parameter(torch.empty(max(info.day_classes) + 1, dow_dim))
        for p in (self.node_emb, self.tod_emb, self.dow_emb):
            nn.init.xavier_uniform_(p)
        width = embed_dim + node_dim + tod_dim + dow_dim
        self.encoder = nn.Sequential(*[ResidualMLP(width, cfg.dropout) for _ in range(cfg.num_layer)])
        self.regression = nn.Linear(width, info.horizon * self.hidden_out)
        self.head = GaussianMixtureHead.from_config(self.hidden_out, cfg)

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        x = batch.x
        B, T, N, _ = x.shape
        if T != self.history:
            raise ValueError(f"STID was built for a history of {self.history} steps, got {T}")
        feats = torch.cat([x, batch.x_mask.unsqueeze(-1).to(x.dtype)], -1)  # [B, T, N, C + 1]
        flat = feats.permute(0, 2, 1, 3).reshape(B, N, -1)  # [B, T, N, C+1] -> [B, N, T*(C+1)]
        slot = tod_slot(batch.tod[:, T - 1], self.steps_per_day)  # [B]
        day = self.day_map[batch.dow[:, T - 1].long()]  # [B] day-of-week category
        h = torch.cat([
            self.series_emb(flat),  # [B, N, embed_dim]
            self.node_emb.unsqueeze(0).expand(B, -1, -1),  # [B, N, node_dim]
            self.tod_emb[slot].unsqueeze(1).expand(-1, N, -1),  # [B, N, tod_dim]
            self.dow_emb[day].unsqueeze(1).expand(-1, N, -1),  # [B, N, dow_dim]
        ], dim=-1)
        h = torch.relu(self.regression(self.encoder(h)))  # [B, N, H*hidden_out]
        h = h.view(B, N, self.horizon, self.hidden_out).transpose(1, 2)  # -> [B, H, N, hidden_out]
        return self.head(h)
