"""Learned projection over time from ``T`` history steps to ``H`` horizon steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HorizonProjection(nn.Module):
    """``out[:, h] = sum_t W[h, t] x[:, t] + b[h]`` for every node and feature.

    The original STMGT design (see ``docs/design.md``) maps input step ``t`` to output step
    ``t``, which only works when the history and horizon lengths are equal. This projection
    works for any pair; it starts as a copy of the last history step's features (which the
    temporal attention has already mixed with the earlier steps) into every horizon step.

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


class FlatHorizonProjection(nn.Module):
    """Each node's whole history ``[T, D]`` flattened and regressed to ``H`` horizon feature vectors.

    The output layer of STAEformer (Liu et al., "STAEformer: Spatio-Temporal Adaptive Embedding
    Makes Vanilla Transformer SOTA for Traffic Forecasting", CIKM 2023) and, in spirit, STID's
    regression layer: every horizon step gets its own linear read-out of every history step and
    feature, where :class:`HorizonProjection` gives all features one shared scalar weight per
    (horizon, history) pair. To keep the cost small the features are first reduced to ``reduced``
    per step: ``out = W_2 flatten_t(W_1 x_t)`` with ``W_1: D -> r`` and ``W_2: T*r -> H*D``.

    Args:
        history: input steps ``T``.
        horizon: output steps ``H``.
        hidden: features ``D`` in and out.
        reduced: features per history step before flattening ``r`` (default ``D // 4``).

    Shapes: ``[B, T, N, D] -> [B, H, N, D]``.
    """

    def __init__(self, history: int, horizon: int, hidden: int, reduced: int | None = None):
        super().__init__()
        self.horizon, self.hidden = horizon, hidden
        r = reduced or max(1, hidden // 4)
        self.reduce = nn.Linear(hidden, r)
        self.out = nn.Linear(history * r, horizon * hidden)

    def forward(self, x: Tensor) -> Tensor:
        B, T, N, D = x.shape
        z = self.reduce(x).permute(0, 2, 1, 3).reshape(B, N, -1)  # [B, T, N, r] -> [B, N, T*r]
        out = self.out(z).view(B, N, self.horizon, D)  # [B, N, H, D]
        return out.transpose(1, 2)  # [B, H, N, D]
