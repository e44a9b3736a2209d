"""Assembled models, one per file, each registered by name in :mod:`stmgt.registry`.

Build one with :func:`build_model` from its settings (:func:`model_config` gives a model's defaults):
``build_model(model_config("gwnet", dropout=0.3), info)``.
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports
from stmgt.config import ModelConfig, model_config
from stmgt.models.base import DataInfo, ForecastModel
from stmgt.registry import MODELS, model_class


def build_model(cfg: ModelConfig, info: DataInfo) -> ForecastModel:
    """The model named ``cfg.name`` for data described by ``info`` (``cfg``: that model's settings, as
    :func:`model_config` or a config's ``model`` section gives them)."""
    return model_class(cfg.name)(cfg, info)


#: The model classes, imported on first use: ``from stmgt.models import STMGT``.
_CLASSES = {path.split(":")[1]: path.split(":")[0] for path in MODELS.values()}
_CLASSES["StreamingForecaster"] = "stmgt.models.stmamba"

__getattr__, __dir__ = lazy_exports(__name__, _CLASSES, globals())


__all__ = ["build_model", "model_class", "model_config", "DataInfo", "ForecastModel", *_CLASSES]
