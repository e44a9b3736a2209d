"""``stmgt serve``: live observations in, calibrated forecasts out, and a map (needs the ``serve`` extra).

Modules: :mod:`~stmgt.serve.store` (the observation store), :mod:`~stmgt.serve.forecasting`
(served models, the same code path as ``stmgt predict``), :mod:`~stmgt.serve.app` (HTTP routes),
:mod:`~stmgt.serve.metrics` (Prometheus text), :mod:`~stmgt.serve.scoring` (live scores),
:mod:`~stmgt.serve.replay` (``stmgt replay``), and ``static/`` (the dashboard). See docs/serving.md.
"""
