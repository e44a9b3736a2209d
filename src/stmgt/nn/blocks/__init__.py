"""The parts of STMGT and STMamba, built from :mod:`stmgt.nn.layers`.

A block belongs here when it is a piece of this package's models: the input embedding, the
spatial and temporal branches and their gated fusion, the STMGT and STMamba blocks, the weather
attention, the projections from history to horizon steps, the horizon calendar, and the
:class:`~stmgt.nn.blocks.decoder.ForecastDecoder` that both models end in. Each takes and returns
``[B, T, N, D]`` unless its docstring says otherwise. One block a module (the two forms of the
horizon projection and of the weather attention share theirs); the names below are imported on
first use.
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports

_EXPORTS = {
    "InputEmbedding": "stmgt.nn.blocks.input_embedding",
    "SpatialBranch": "stmgt.nn.blocks.spatial_branch",
    "TemporalBranch": "stmgt.nn.blocks.temporal_branch",
    "GatedFusion": "stmgt.nn.blocks.gated_fusion",
    "STBlock": "stmgt.nn.blocks.st_block",
    "STMambaBlock": "stmgt.nn.blocks.stmamba_block",
    "WeatherCrossAttention": "stmgt.nn.blocks.weather_attention",
    "DocumentWeatherAttention": "stmgt.nn.blocks.weather_attention",
    "HorizonProjection": "stmgt.nn.blocks.horizon_projection",
    "FlatHorizonProjection": "stmgt.nn.blocks.horizon_projection",
    "HorizonCalendar": "stmgt.nn.blocks.horizon_calendar",
    "ForecastDecoder": "stmgt.nn.blocks.decoder",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
