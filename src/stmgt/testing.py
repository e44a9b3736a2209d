"""Small builders for tests and examples: random batches and toy graphs."""

from __future__ import annotations

import torch

from stmgt.data.windows import Batch


def make_batch(B=2, T=12, H=12, N=7, C=1, W=3, seed=0) -> Batch:
    """A random :class:`Batch` with ~10% unobserved inputs and targets."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        x=torch.randn(B, T, N, C, generator=g), x_mask=torch.rand(B, T, N, generator=g) > 0.1,
        y=torch.randn(B, H, N, generator=g), y_mask=torch.rand(B, H, N, generator=g) > 0.1,
        tod=torch.rand(B, T + H, generator=g), dow=torch.randint(0, 7, (B, T + H), generator=g),
        weather=torch.randn(B, T + H, W, generator=g) if W else None, start=torch.arange(B),
    )


def ring_graph(N: int) -> torch.Tensor:
    """A bidirectional ring over ``N`` nodes, ``[2, 2N]``."""
    src = torch.arange(N)
    return torch.cat([torch.stack([src, (src + 1) % N]), torch.stack([(src + 1) % N, src])], 1)
