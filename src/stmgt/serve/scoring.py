"""Live scoring of issued forecasts against the observations that arrive afterwards.

Every forecast issued from the store is kept (:meth:`Store.save_forecast`); an observation scores
the forecasts whose target time is its interval's bin. Over a rolling window of target times
(``window_hours`` before the newest observation
of the forecast window, see :meth:`~stmgt.serve.forecasting.ServedModel.window_latest`) and per horizon step:

* ``mae``: mean absolute error of the forecast's median (as in ``stmgt evaluate``);
* ``coverage80`` / ``coverage90``: the fraction of observations inside the central 80% / 90%
  intervals (``q10..q90`` / ``q05..q95``) — near 0.8 / 0.9 when the forecasts are calibrated;
* ``n``: the number of (forecast, observation) pairs scored.

Late rows are scored when they come. Scores are computed from the store and kept per model
version with the store revision they saw; the service's background issuer refreshes them after each
forecast it issues, and reads answer the kept ones (``as_of_revision`` in the kept dict), so a read
never runs the scoring query while the issuer runs. Without an issuer a read recomputes when the
store has changed since.
"""

from __future__ import annotations

import threading

from stmgt.serve.store import Store, iso_utc


class Scorer:
    """Rolling-window scores per model version, cached per store revision."""

    def __init__(self, store: Store, window_hours: float = 24.0):
        self.store = store
        self.window_s = int(window_hours * 3600)
        self._lock = threading.Lock()
        self._cache: dict[tuple, tuple] = {}  # (model, version) -> ((store seq, forecast seq), scores)

    def scores(self, model, refresh: bool = False, stale_ok: bool = False) -> dict:
        """Scores of one :class:`~stmgt.serve.forecasting.ServedModel` (see the module docstring).

        ``refresh``: recompute if the store changed since the kept scores; ``stale_ok``: answer the kept
        scores whatever changed since (a read while the issuer runs); neither: recompute if changed."""
        key = (model.name, model.version, self.store.seq, self.store.forecast_seq)
        with self._lock:
            kept = self._cache.get(key[:2])
        if kept is not None and (kept[0] == key[2:] or (stale_ok and not refresh)):
            return kept[1]
        # the model's window end, not the newest row: one row stamped ahead would move the window past the city
        latest = model.window_latest(self.store) if hasattr(model, "window_latest") else self.store.latest()
        steps = []
        if latest is not None:
            lo = latest - self.window_s
            rows = self.store.scores(model.name, model.version, model.interval_s, lo, latest)
            steps = [{"step": int(s), "n": int(n), "mae": float(mae), "coverage80": float(c80),
                      "coverage90": float(c90)} for s, n, mae, c80, c90 in rows]
        n = sum(s["n"] for s in steps)

        def pooled(k):
            return None if not n else sum(s[k] * s["n"] for s in steps) / n

        out = {"model": model.name, "version": model.version, "window_hours": self.window_s / 3600,
               "window_end": None if latest is None else iso_utc(latest),
               "forecasts_issued": self.store.forecasts_issued(model.name, model.version),
               "n": n, "mae": pooled("mae"), "coverage80": pooled("coverage80"), "coverage90": pooled("coverage90"),
               "steps": steps}
        with self._lock:
            self._cache[key[:2]] = (key[2:], out)
        return out
