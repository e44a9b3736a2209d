"""Building blocks of STMGT and STMamba, each ``[B, T, N, D]`` in and out unless stated.

The names below are imported on first use.
"""

from __future__ import annotations

import importlib

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
    "WeatherCrossAttention": "stmgt.nn.weather",
    "DocumentWeatherAttention": "stmgt.nn.weather",
    "GaussianMixtureHead": "stmgt.nn.mixture_head",
    "FastDropout": "stmgt.nn.dropout",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
