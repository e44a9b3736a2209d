"""Gaussian-mixture output head."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stmgt.distributions.mixture import GaussianMixture


class GaussianMixtureHead(nn.Module):
    """``Linear(D, 3K)`` to means, ``std = exp(min(log_std, log max_std)) + min_std`` and softmax weights.

    The original STMGT design's head (see ``docs/design.md``) is ``std = exp(log_std) + min_std``;
    the upper bound is ours: the variance regulariser raises every log std, and a component whose
    weight has gone to ~0 feels no NLL gradient, so its std drifts without limit (to 5e5 km/h in
    a 20-epoch run), which makes the mixture's std and its samples meaningless. Below the bound
    the head is exactly the original.

    Args:
        hidden: input features ``D`` (default 96).
        mixtures: components ``K`` (default 5).
        min_std: floor added to every standard deviation (default 0.01, scaled units).
        max_std: bound on ``exp(log_std)`` (default 10 scaled units, i.e. ten training stds;
            None: unbounded, the original form).

    Shapes: ``[B, H, N, D]`` -> :class:`GaussianMixture` with batch shape ``[B, H, N]``.
    """

    def __init__(self, hidden: int = 96, mixtures: int = 5, min_std: float = 0.01, max_std: float | None = 10.0):
        super().__init__()
        self.mixtures, self.min_std = mixtures, min_std
        self.max_log_std = None if max_std is None else math.log(max_std)
        self.output_layer = nn.Linear(hidden, 3 * mixtures)
        with torch.no_grad():  # spread the initial means so the components start apart
            b = self.output_layer.bias.view(mixtures, 3)
            b[:, 0] = torch.linspace(-1, 1, mixtures)

    def forward(self, x: Tensor, anchor: Tensor | None = None) -> GaussianMixture:
        """``anchor`` (optional), ``[B, N]`` or per step ``[B, H, N]``, is added to every component mean."""
        out = self.output_layer(x).unflatten(-1, (self.mixtures, 3))  # [B, H, N, K, 3]
        means, log_stds, logits = out.unbind(-1)  # each [B, H, N, K]
        if anchor is not None:
            means = means + (anchor[:, None, :, None] if anchor.dim() == 2 else anchor[..., None])  # [B, H, N, K]
        if self.max_log_std is not None:
            log_stds = log_stds.clamp(max=self.max_log_std)
        return GaussianMixture(means, torch.exp(log_stds) + self.min_std, logits)

    @classmethod
    def from_config(cls, hidden: int, cfg) -> GaussianMixtureHead:
        """The head a :class:`~stmgt.config.ModelConfig` describes, over ``hidden`` input features."""
        return cls(hidden, cfg.mixtures, cfg.min_std, cfg.max_std)


def last_observed(x: Tensor, mask: Tensor) -> Tensor:
    """The last observed value of each node in the window, 0 (the scaled mean) if none.

    Shapes: ``x [B, T, N]``, ``mask [B, T, N]`` -> ``[B, N]``.
    """
    T = x.shape[1]
    steps = torch.arange(T, device=x.device).view(1, T, 1)
    last = torch.where(mask, steps, -1).amax(dim=1)  # [B, N], -1 where never observed
    val = x.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)  # [B, N]
    return torch.where(last >= 0, val, torch.zeros_like(val))
