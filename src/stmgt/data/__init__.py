"""Datasets: the :class:`Panel` contract, windows and batches, the synthetic city, loaders.

What a user needs::

    from stmgt.data import Panel, synthetic_city, load, load_city

* :class:`Panel`: the data contract every loader returns and every model trains on.
* :func:`synthetic_city` / :func:`synthetic_graph`: the offline default dataset and its road graph.
* :func:`load` (any folder or file a loader reads; :func:`detect_format` says which),
  :func:`load_city` (your own city: ``observations.csv``, ``edges.csv``): from
  :mod:`stmgt.data.loaders`, imported on first use.
* :class:`PanelData`, :class:`Batch`, :class:`Scaler`, :func:`chronological_splits`,
  :func:`window_starts`: windows and batches for training.

Reading user tables (CSV/parquet, number and timestamp columns) is :mod:`stmgt.data.tables`.
"""

from stmgt._lazy import lazy_exports
from stmgt.data.panel import Panel
from stmgt.data.source import load_source
from stmgt.data.synthetic import synthetic_city, synthetic_graph
from stmgt.data.windows import Batch, PanelData, Scaler, chronological_splits, window_starts

_LAZY = {"load": "stmgt.data.loaders", "load_city": "stmgt.data.loaders", "detect_format": "stmgt.data.loaders"}

__all__ = ["Panel", "PanelData", "Batch", "Scaler", "chronological_splits", "window_starts",
           "synthetic_city", "synthetic_graph", "load_source", *_LAZY]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
