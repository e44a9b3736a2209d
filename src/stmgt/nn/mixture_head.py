"""Gaussian-mixture output head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stmgt.distributions.mixture import GaussianMixture


class GaussianMixtureHead(nn.Module):
    """``Linear(D, 3K)`` to means, ``std = exp(log_std) + min_std`` and softmax weights.

    Args:
        hidden: input features ``D`` (default 96).
        mixtures: components ``K`` (default 5).
        min_std: floor added to every standard deviation (default 0.01, scaled units).

    Shapes: ``[B, H, N, D]`` -> :class:`GaussianMixture` with batch shape ``[B, H, N]``.
    """

    def __init__(self, hidden: int = 96, mixtures: int = 5, min_std: float = 0.01):
        super().__init__()
        self.mixtures, self.min_std = mixtures, min_std
        self.output_layer = nn.Linear(hidden, 3 * mixtures)
        with torch.no_grad():  # spread the initial means so the components start apart
            b = self.output_layer.bias.view(mixtures, 3)
            b[:, 0] = torch.linspace(-1, 1, mixtures)

    def forward(self, x: Tensor) -> GaussianMixture:
        out = self.output_layer(x).unflatten(-1, (self.mixtures, 3))  # [B, H, N, K, 3]
        means, log_stds, logits = out.unbind(-1)  # each [B, H, N, K]
        return GaussianMixture(means, torch.exp(log_stds) + self.min_std, logits)
