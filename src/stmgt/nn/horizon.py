"""Learned projection over time from ``T`` history steps to ``H`` horizon steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HorizonProjection(nn.Module):
    """``out[:, h] = sum_t W[h, t] x[:, t] + b[h]`` for every node and feature.

    The design document maps input step ``t`` to output step ``t``, which only works when the
    history and horizon lengths are equal. This projection works for any pair; it starts as a
    copy of the last history step's features (which the temporal attention has already mixed
    with the earlier steps) into every horizon step.

    Args:
        history: input steps ``T``.
        horizon: output steps ``H``.

    Shapes: ``[B, T, N, D] -> [B, H, N, D]``.
    """

    def __init__(self, history: int, horizon: int):
        super().__init__()
        w = torch.zeros(horizon, history)
        w[:, -1] = 1.0
        self.weight = nn.Parameter(w)  # [H, T]
        self.bias = nn.Parameter(torch.zeros(horizon))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("ht,btnd->bhnd", self.weight, x) + self.bias[:, None, None]  # [B, H, N, D]
