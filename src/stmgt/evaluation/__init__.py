"""Evaluation: forecasts over a split, masked and probabilistic metrics, the report and figures.

The names below are imported on first use (:mod:`stmgt.evaluation.plots` needs matplotlib).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate_run": "stmgt.evaluation.runner",
    "forecast_split": "stmgt.evaluation.evaluate",
    "baseline_metrics": "stmgt.evaluation.evaluate",
    "Forecasts": "stmgt.evaluation.evaluate",
    "MetricAccumulator": "stmgt.evaluation.metrics",
    "masked_mae": "stmgt.evaluation.metrics",
    "write_report": "stmgt.evaluation.report",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
