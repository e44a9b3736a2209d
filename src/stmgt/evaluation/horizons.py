"""Which forecast steps tables and metric files report (one place for every table of stmgt)."""

from __future__ import annotations

STANDARD_HORIZONS = (3, 6, 12)
"""The steps traffic-forecasting tables report (15, 30 and 60 minutes of 5-minute data)."""


def reported_horizons(horizon: int | None = None) -> tuple[int, ...]:
    """The 1-based steps reported for a forecast of ``horizon`` steps: the standard 3, 6 and 12 that fit,
    then the last step when it is not one of them (``12 -> (3, 6, 12)``, ``3 -> (3,)``, ``8 -> (3, 6, 8)``,
    ``24 -> (3, 6, 12, 24)``, ``1 -> (1,)``; None: the standard steps). Every table and metric file of
    stmgt takes its steps from here."""
    if horizon is None:
        return STANDARD_HORIZONS
    steps = [h for h in STANDARD_HORIZONS if h <= horizon]
    return tuple(steps if horizon in steps else [*steps, horizon])
