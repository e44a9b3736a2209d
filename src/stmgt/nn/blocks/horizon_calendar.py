"""Known-future covariates for the forecast steps: their calendar and the road's identity."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class HorizonCalendar(nn.Module):
    """``h + FFN(LayerNorm(h + E_tod[slot_h] + E_dow[day_h] + E_node[n]))`` on horizon features.

    The time of day and day of week of every forecast step are known when the forecast is made.
    The history's embeddings only tell the network *when the window ends*; this block tells each
    horizon step *when it is*, per road, and lets a small feed-forward layer combine the two, as
    STID's MLP combines identity embeddings (Shao et al., CIKM 2022) and as a seasonal profile
    does: the part of the forecast that the clock and the road decide, whatever the last reading.

    Args:
        hidden: features ``D``.
        num_nodes: roads ``N`` (a learned identity per road).
        steps_per_day: time-of-day slots (288 for 5-minute data).
        day_classes: the day-of-week category of each weekday, Monday first (see
            :func:`~stmgt.data.panel.day_classes`).
        dropout: dropout inside the feed-forward layer (default 0.0).

    Shapes: ``h [B, H, N, D]``, ``tod [B, H]`` in ``[0, 1)``, ``dow [B, H]`` -> ``[B, H, N, D]``.
    """

    def __init__(self, hidden: int, num_nodes: int, steps_per_day: int = 288, day_classes=tuple(range(7)),
                 dropout: float = 0.0):
        super().__init__()
        self.steps_per_day = steps_per_day
        self.register_buffer("day_map", torch.tensor(day_classes, dtype=torch.long), persistent=False)
        self.tod = nn.Embedding(steps_per_day, hidden)
        self.dow = nn.Embedding(max(day_classes) + 1, hidden)
        self.node = nn.Parameter(torch.randn(num_nodes, hidden) / math.sqrt(hidden))
        for e in (self.tod, self.dow):
            nn.init.normal_(e.weight, std=1 / math.sqrt(hidden))
        self.norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * hidden, hidden))

    def forward(self, h: Tensor, tod: Tensor, dow: Tensor) -> Tensor:
        slot = (tod * self.steps_per_day).long().clamp_(0, self.steps_per_day - 1)  # [B, H]
        when = self.tod(slot) + self.dow(self.day_map[dow.long()])  # [B, H, D]
        z = self.norm(h + when.unsqueeze(2) + self.node)  # [B, H, N, D]
        return h + self.ffn(z)
