"""Weather cross-attention: where and when weather matters.

:class:`WeatherCrossAttention` lets every (node, step) query attend over a *sequence* of
weather tokens (the history steps, plus the horizon steps when a weather forecast is given),
so keys and values differ and the softmax can select. :class:`DocumentWeatherAttention`
keeps the original STMGT design's form for the ablation: its keys are the one weather vector
of step ``t`` copied to all nodes, so the attention is uniform and the block reduces to adding a
projection of that step's weather (``docs/design.md``, departure 1).
"""

from __future__ import annotations

from torch import Tensor, nn

from stmgt.nn.layers.positional_encoding import PositionalEncoding


class WeatherCrossAttention(nn.Module):
    """``LN(h + MHA(query=h, key=value=weather tokens))``.

    Args:
        hidden: feature size ``D`` (default 96).
        weather_dim: covariates per step ``W`` (default 3: temperature, wind, precipitation).
        heads: attention heads (default 4).
        dropout: attention dropout (default 0.2).

    Shapes: ``h [B, S, N, D]`` (``S`` query steps), ``weather [B, L, W]`` (``L`` weather steps)
    -> ``[B, S, N, D]``; with ``return_attention=True`` also the attention weights ``[B, S*N, L]``
    (averaged over heads).
    """

    def __init__(self, hidden: int = 96, weather_dim: int = 3, heads: int = 4, dropout: float = 0.2):
        super().__init__()
        self.weather_proj = nn.Sequential(nn.Linear(weather_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.pos = PositionalEncoding(hidden)
        self.cross_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: Tensor, weather: Tensor, return_attention: bool = False):
        B, S, N, D = h.shape
        kv = self.pos(self.weather_proj(weather))  # [B, L, D]: one token per weather step
        q = h.reshape(B, S * N, D)  # [B, S*N, D]
        out, att = self.cross_attn(q, kv, kv, need_weights=return_attention)  # att [B, S*N, L] or None
        out = self.norm(h + out.view(B, S, N, D))
        return (out, att) if return_attention else out


class DocumentWeatherAttention(nn.Module):
    """The original STMGT design's weather block (kept as an ablation, see module docstring).

    Args:
        hidden: feature size ``D`` (default 96).
        weather_dim: covariates per step ``W`` (default 3).
        heads: attention heads (default 4).
        dropout: attention dropout (default 0.2).

    Shapes: ``h [B, T, N, D]``, ``weather [B, T, W]`` -> ``[B, T, N, D]``; with
    ``return_attention=True`` also the attention weights ``[B*T, N, N]`` (averaged over heads;
    uniform over the keys, which are all alike).
    """

    def __init__(self, hidden: int = 96, weather_dim: int = 3, heads: int = 4, dropout: float = 0.2):
        super().__init__()
        self.weather_proj = nn.Linear(weather_dim, hidden)
        self.cross_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: Tensor, weather: Tensor, return_attention: bool = False):
        B, T, N, D = h.shape
        w = self.weather_proj(weather).unsqueeze(2).expand(B, T, N, D).reshape(B * T, N, D)  # [B*T, N, D]
        out, att = self.cross_attn(h.reshape(B * T, N, D), w, w, need_weights=return_attention)
        out = self.norm(h + out.view(B, T, N, D))
        return (out, att) if return_attention else out
