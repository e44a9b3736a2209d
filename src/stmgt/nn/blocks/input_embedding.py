"""Input embedding of STMGT: readings (and their observed mask) to the hidden size."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class InputEmbedding(nn.Module):
    """``LayerNorm(Linear([x, mask]))`` plus optional calendar, node and window embeddings.

    The original STMGT design (see ``docs/design.md``) embeds the reading alone: a linear layer
    ``1 -> 96`` and LayerNorm. Real sensors have gaps, so the observed-mask is a second input
    feature (a missing reading is 0 in scaled units *and* flagged). ``calendar`` adds learned
    time-of-day and day-of-week embeddings and ``num_nodes`` a learned per-node embedding (Shao
    et al., "Spatial-Temporal Identity", CIKM 2022); the original design has neither.

    Args:
        in_channels: reading channels ``C`` (default 1).
        hidden: output size ``D`` (default 96).
        calendar: add time-of-day (``steps_per_day`` slots) and day-of-week embeddings.
        steps_per_day: slots of the time-of-day embedding (default 288, 5-minute steps).
        num_nodes: add a per-node embedding for this many nodes (0: none).
        day_classes: the category of each weekday (Monday first; default seven): the day-of-week
            embedding has one row per category (see :func:`~stmgt.data.panel.day_classes`).
        window: with the history length ``T`` (0: off), add to every step a linear embedding of the
            road's whole window ``[x, mask]`` flattened over time: STID's series embedding (Shao et
            al., CIKM 2022), which hands each token the window's exact levels and trend that one
            scalar reading per token leaves for attention to reconstruct.
        norm: LayerNorm over the sum (default True, the original design). A LayerNorm of
            ``w * x + b`` saturates in ``x``; without it the token stays linear in the reading.
        adaptive: ``(T, N)``, the history length and the roads (None: off), to add a learned ``[T, N, D]``
            tensor, one vector per (history step, road): the spatio-temporal adaptive embedding of
            STAEformer (Liu et al., "STAEformer: Spatio-Temporal Adaptive Embedding Makes Vanilla
            Transformer SOTA for Traffic Forecasting", CIKM 2023), which lets each road learn how its
            own recent steps matter.

    Shapes: ``x [B, T, N, C]``, ``mask [B, T, N]``, ``tod/dow [B, T]`` -> ``[B, T, N, D]``.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 96, calendar: bool = False, steps_per_day: int = 288,
                 num_nodes: int = 0, day_classes=tuple(range(7)), window: int = 0, norm: bool = True,
                 adaptive: tuple[int, int] | None = None):
        super().__init__()
        self.linear = nn.Linear(in_channels + 1, hidden)
        self.norm = nn.LayerNorm(hidden) if norm else nn.Identity()
        self.steps_per_day = steps_per_day
        self.tod = nn.Embedding(steps_per_day, hidden) if calendar else None
        self.register_buffer("day_map", torch.tensor(day_classes, dtype=torch.long), persistent=False)
        self.dow = nn.Embedding(max(day_classes) + 1, hidden) if calendar else None
        self.node = nn.Parameter(torch.randn(num_nodes, hidden) / math.sqrt(hidden)) if num_nodes else None
        self.window = nn.Linear(window * (in_channels + 1), hidden) if window else None
        self.adaptive = (nn.Parameter(nn.init.xavier_uniform_(torch.empty(*adaptive, hidden)))  # [T, N, D]
                         if adaptive else None)
        for e in (self.tod, self.dow):
            if e is not None:
                nn.init.normal_(e.weight, std=1 / math.sqrt(hidden))

    @classmethod
    def from_config(cls, cfg, info) -> InputEmbedding:
        """Built from a :class:`~stmgt.config.ModelConfig` and a :class:`~stmgt.models.base.DataInfo`."""
        return cls(info.in_channels, cfg.hidden, cfg.calendar, info.steps_per_day,
                   info.num_nodes if cfg.node_embedding else 0, info.day_classes,
                   info.history if getattr(cfg, "window_embedding", False) else 0, cfg.input_norm,
                   (info.history, info.num_nodes) if getattr(cfg, "adaptive_embedding", False) else None)

    def forward(self, x: Tensor, mask: Tensor, tod: Tensor | None = None, dow: Tensor | None = None) -> Tensor:
        feats = torch.cat([x, mask.unsqueeze(-1).to(x.dtype)], dim=-1)  # [B, T, N, C+1]
        h = self.linear(feats)  # [B, T, N, D]
        if self.window is not None:
            B, T, N, _ = feats.shape
            flat = feats.permute(0, 2, 1, 3).reshape(B, N, -1)  # [B, T, N, C+1] -> [B, N, T*(C+1)]
            h = h + self.window(flat).unsqueeze(1)  # [B, 1, N, D] onto every step
        if self.tod is not None and tod is not None:
            slot = (tod * self.steps_per_day).long().clamp_(0, self.steps_per_day - 1)
            h = h + (self.tod(slot) + self.dow(self.day_map[dow.long()])).unsqueeze(2)  # [B, T, 1, D]
        if self.node is not None:
            h = h + self.node
        if self.adaptive is not None:
            h = h + self.adaptive[-h.shape[1]:]  # [T, N, D] onto every window (its last T steps)
        return self.norm(h)
