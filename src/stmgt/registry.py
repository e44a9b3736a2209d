"""The one list of the models stmgt knows: ``name -> "module:Class"``.

Everything that names models (the ``model.name`` setting, the command line's ``--model`` choices and
``stmgt models``, the benchmark's model list, :func:`stmgt.models.build_model`) reads it from here.
Importing this module is cheap (no torch): a model's module is imported when the model (or its
settings) is first asked for.

Adding a model is one file in ``stmgt/models/`` holding the ``nn.Module`` (a
:class:`~stmgt.models.base.ForecastModel`) and its settings (a :class:`~stmgt.config.ModelConfig`
subclass named by the class attribute ``Config``), one line below, and its tests.
"""

from __future__ import annotations

import importlib

MODELS: dict[str, str] = {
    "stmgt": "stmgt.models.stmgt:STMGT",
    "stmamba": "stmgt.models.stmamba:STMamba",
    "last_value": "stmgt.models.last_value:LastValue",
    "historical_average": "stmgt.models.historical_average:HistoricalAverage",
    "gru": "stmgt.models.gru:GRUForecaster",
    "gwnet": "stmgt.models.gwnet:GraphWaveNet",
    "stid": "stmgt.models.stid:STID",
    "dlinear": "stmgt.models.dlinear:DLinear",
}
"""Model name -> ``"module:Class"`` of its :class:`~stmgt.models.base.ForecastModel`."""

DEFAULT_MODEL = "stmgt"


def model_names() -> tuple[str, ...]:
    """The registered model names, in registry order."""
    return tuple(MODELS)


def model_class(name: str) -> type:
    """The model class registered as ``name`` (imports its module); KeyError for an unknown name."""
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def config_class(name: str) -> type:
    """The settings class (a :class:`~stmgt.config.ModelConfig` subclass) of the model ``name``."""
    return model_class(name).Config
