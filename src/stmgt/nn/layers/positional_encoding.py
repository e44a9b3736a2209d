"""Sinusoidal positional encoding (Vaswani et al., "Attention Is All You Need", NeurIPS 2017)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """``[length, dim]`` table: ``sin`` on even and ``cos`` on odd features."""
    pe = torch.zeros(length, dim)
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


class PositionalEncoding(nn.Module):
    """Adds a fixed sinusoidal encoding of the position along dimension 1.

    Args:
        dim: feature size ``D``.
        max_len: longest sequence supported (default 4096).

    Shapes: ``[B', T, D] -> [B', T, D]``.
    """

    def __init__(self, dim: int, max_len: int = 4096):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pe[: x.size(1)]
