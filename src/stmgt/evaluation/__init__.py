"""Evaluation: forecasts over a split, masked and probabilistic metrics, the report and figures.

The names below are imported on first use (:mod:`stmgt.evaluation.plots` needs matplotlib).
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports

_EXPORTS = {
    "evaluate_run": "stmgt.evaluation.run_evaluation",
    "forecast_split": "stmgt.evaluation.forecast",
    "baseline_metrics": "stmgt.evaluation.forecast",
    "Forecasts": "stmgt.evaluation.forecast",
    "MetricAccumulator": "stmgt.evaluation.metrics",
    "masked_mae": "stmgt.evaluation.metrics",
    "write_report": "stmgt.evaluation.report",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
