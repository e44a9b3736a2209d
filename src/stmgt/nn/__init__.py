"""Building blocks of STMGT and STMamba, each ``[B, T, N, D]`` in and out unless stated.

The names below are imported on first use.
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports

_EXPORTS = {
    "InputEmbedding": "stmgt.nn.embedding",
    "GraphAttention": "stmgt.nn.gat",
    "SpatialBranch": "stmgt.nn.spatial",
    "PositionalEncoding": "stmgt.nn.positional",
    "TemporalBranch": "stmgt.nn.temporal",
    "GatedFusion": "stmgt.nn.fusion",
    "STBlock": "stmgt.nn.st_block",
    "Mamba": "stmgt.nn.mamba",
    "STMambaBlock": "stmgt.nn.stmamba_block",
    "HorizonProjection": "stmgt.nn.horizon",
    "FlatHorizonProjection": "stmgt.nn.horizon",
    "HorizonCalendar": "stmgt.nn.horizon_calendar",
    "WeatherCrossAttention": "stmgt.nn.weather",
    "DocumentWeatherAttention": "stmgt.nn.weather",
    "GaussianMixtureHead": "stmgt.nn.mixture_head",
    "FastDropout": "stmgt.nn.dropout",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
