"""Datasets: the :class:`Panel` contract, windows and batches, the synthetic city, loaders."""

from stmgt.data.panel import Panel
from stmgt.data.source import load_source
from stmgt.data.synthetic import synthetic_city, synthetic_graph
from stmgt.data.windows import Batch, PanelData, Scaler, chronological_splits, window_starts

__all__ = ["Panel", "PanelData", "Batch", "Scaler", "chronological_splits", "window_starts",
           "synthetic_city", "synthetic_graph", "load_source"]
