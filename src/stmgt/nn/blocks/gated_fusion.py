"""Gated fusion of the spatial and temporal branches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedFusion(nn.Module):
    """``alpha * spatial + (1 - alpha) * temporal`` with ``alpha = sigmoid(W [spatial || temporal])``.

    The gated fusion of GMAN (Zheng et al., "GMAN: A Graph Multi-Attention Network for Traffic
    Prediction", AAAI 2020), its two linear maps written as one on the concatenation; one gate per
    node, step and feature.

    Args:
        hidden: feature size ``D`` (default 96).

    Shapes: ``spatial, temporal [B, T, N, D]`` -> ``fused [B, T, N, D]``; with
    ``return_attention=True`` also the gate ``alpha [B, T, N, D]`` (the weight of the spatial branch).
    """

    def __init__(self, hidden: int = 96):
        super().__init__()
        self.gate = nn.Linear(2 * hidden, hidden)

    def forward(self, spatial: Tensor, temporal: Tensor, return_attention: bool = False):
        # W [s || t] + b as W_s s + W_t t + b: the same map without the [B, T, N, 2D] concatenation
        D = spatial.shape[-1]
        w = self.gate.weight  # [D, 2D]
        alpha = torch.sigmoid(F.linear(spatial, w[:, :D], self.gate.bias) + F.linear(temporal, w[:, D:]))
        fused = temporal + alpha * (spatial - temporal)
        return (fused, alpha) if return_attention else fused
