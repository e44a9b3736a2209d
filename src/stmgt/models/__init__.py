"""Assembled models, one per file, built by name with :func:`build_model`."""

from __future__ import annotations

import importlib

from stmgt._lazy import lazy_exports
from stmgt.config import ModelConfig
from stmgt.models.base import DataInfo, ForecastModel

_REGISTRY = {
    "stmgt": ("stmgt.models.stmgt", "STMGT"),
    "stmamba": ("stmgt.models.stmamba", "STMamba"),
    "last_value": ("stmgt.models.last_value", "LastValue"),
    "historical_average": ("stmgt.models.historical_average", "HistoricalAverage"),
    "gru": ("stmgt.models.gru", "GRUForecaster"),
    "gwnet": ("stmgt.models.gwnet", "GraphWaveNet"),
    "stid": ("stmgt.models.stid", "STID"),
}


def model_class(name: str) -> type[ForecastModel]:
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)


def build_model(cfg: ModelConfig, info: DataInfo) -> ForecastModel:
    """The model named ``cfg.name`` for data described by ``info``."""
    return model_class(cfg.name)(cfg, info)


#: The model classes, imported on first use: ``from stmgt.models import STMGT``.
_CLASSES = {cls: module for module, cls in _REGISTRY.values()}
_CLASSES["StreamingForecaster"] = "stmgt.models.stmamba"

__getattr__, __dir__ = lazy_exports(__name__, _CLASSES, globals())


__all__ = ["build_model", "model_class", "DataInfo", "ForecastModel", *_CLASSES]
