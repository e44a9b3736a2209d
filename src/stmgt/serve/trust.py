"""Per-road trust in the readings ``stmgt serve`` receives: plausible ranges, and how well each road is observed.

A reading outside its road's plausible range is acknowledged and stored **flagged**: it is kept
(and shown by ``GET /v1/observations``) but treated as missing by forecasts and scores, so one
broken sensor (``1e30``) blinds neither its neighbours nor the rest of the city.

A road's range is, by default, the training data's mean plus or minus ``plausible_std`` training
standard deviations (the run's scaler, the same for every road of a run), never wider than what
:func:`stmgt.predict.panel_from_frame` accepts; ``--value-range LO:HI`` sets one range for every road
and ``--value-range FILE.csv`` (columns ``node_id,low,high``) one per road (roads it does not list
keep the default). With several models, a reading must be plausible for each.

Covariates (global, e.g. weather) are flagged only beyond what ``panel_from_frame`` would refuse
(a flagged covariate is missing; the latest good value is held, as in ``stmgt predict``).
"""

from __future__ import annotations

import math
from pathlib import Path

from stmgt.errors import ConfigError
from stmgt.predict import MAX_Z

#: The default margin of the plausible range, in training standard deviations around the training mean.
PLAUSIBLE_STD = 6.0
#: A road is "sparse" below this fraction of its history window observed, "stale" without a reading in the
#: last ``STALE_STEPS`` steps of the window.
SPARSE_BELOW = 0.5
STALE_STEPS = 3


def _hard(scaler: dict | None, channel: int) -> tuple[float, float]:
    """The range :func:`stmgt.predict._check_range` accepts (a reading outside it makes a forecast fail)."""
    if not scaler:
        return -math.inf, math.inf
    mean, std = float(scaler["mean"][channel]), float(scaler["std"][channel])
    scale = max(std, abs(mean), 1.0)
    return mean - MAX_Z * scale, mean + MAX_Z * scale


def parse_value_range(text: str | None, node_ids: list[str]) -> dict[str, tuple[float, float]]:
    """``--value-range``: ``LO:HI`` for every road, or a CSV file ``node_id,low,high``; ``{}`` for none."""
    if not text:
        return {}
    if ":" in text and not Path(text).exists():
        lo_s, _, hi_s = text.partition(":")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise ConfigError(f"--value-range {text!r}: give LO:HI (e.g. 0:200) or a CSV file node_id,low,high"
                              ) from None
        if not lo < hi or math.isnan(lo) or math.isnan(hi):
            raise ConfigError(f"--value-range {text!r}: LO must be below HI")
        return {n: (lo, hi) for n in node_ids}
    import pandas as pd

    p = Path(text)
    if not p.is_file():
        raise ConfigError(f"--value-range {text!r}: neither LO:HI nor a file")
    try:
        df = pd.read_csv(p, dtype={"node_id": str})
    except Exception as e:
        raise ConfigError(f"--value-range {p}: cannot read it as CSV ({str(e).splitlines()[0]})") from None
    if not {"node_id", "low", "high"} <= set(df.columns):
        raise ConfigError(f"--value-range {p}: needs columns node_id,low,high; found {','.join(map(str, df.columns))}")
    known = set(node_ids)
    out = {}
    for i, (n, lo, hi) in enumerate(zip(df["node_id"], df["low"], df["high"])):
        if n not in known:
            raise ConfigError(f"--value-range {p}: row {i + 1}: {str(n)[:60]!r} is not a node of the served models")
        try:
            lo, hi = float(lo), float(hi)
        except ValueError:
            raise ConfigError(f"--value-range {p}: row {i + 1}: low and high must be numbers") from None
        if not lo < hi:
            raise ConfigError(f"--value-range {p}: row {i + 1}: low {lo:g} is not below high {hi:g}")
        out[str(n)] = (lo, hi)
    return out


class Trust:
    """The plausible range of every road and covariate for a set of served models (see the module docstring)."""

    def __init__(self, models, plausible_std: float = PLAUSIBLE_STD,
                 value_range: dict[str, tuple[float, float]] | None = None):
        if not plausible_std > 0:
            raise ConfigError(f"--plausible-std {plausible_std:g}: give a positive number of standard deviations")
        models = list(models)
        node_ids = models[0].node_ids
        lo, hi = -math.inf, math.inf
        hard_lo, hard_hi = -math.inf, math.inf
        for m in models:
            sc = m.meta.get("scaler")
            if sc:
                mean, std = float(sc["mean"][0]), max(float(sc["std"][0]), 1e-9)
                lo, hi = max(lo, mean - plausible_std * std), min(hi, mean + plausible_std * std)
            a, b = _hard(sc, 0)
            hard_lo, hard_hi = max(hard_lo, a), min(hard_hi, b)
        self.hard = (hard_lo, hard_hi)
        value_range = value_range or {}
        self.ranges: dict[str, tuple[float, float]] = {}
        for n in node_ids:
            a, b = value_range.get(n, (lo, hi))
            self.ranges[n] = (max(a, hard_lo), min(b, hard_hi))
        self.cov_ranges: dict[str, tuple[float, float]] = {}
        for m in models:
            for j, name in enumerate(m.covariates):
                a, b = _hard(m.meta.get("cov_scaler"), j)
                old = self.cov_ranges.get(name, (-math.inf, math.inf))
                self.cov_ranges[name] = (max(old[0], a), min(old[1], b))

    def value_ok(self, node: str, v: float) -> bool:
        """Whether a reading is plausible for its road."""
        lo, hi = self.ranges[node]
        return lo <= v <= hi

    def covariate_ok(self, name: str, v: float) -> bool:
        """Whether a covariate value is usable by every model."""
        lo, hi = self.cov_ranges.get(name, (-math.inf, math.inf))
        return lo <= v <= hi

    def describe(self) -> dict:
        """The ranges for ``GET /v1/models``: the common one, and the roads that have their own."""
        common = max(set(self.ranges.values()), key=list(self.ranges.values()).count)
        return {"value_range": list(common), "roads_with_own_range": sorted(n for n, r in self.ranges.items()
                                                                            if r != common)}


def road_status(observed_fraction: float, last_observed: int | None, window_end: int, interval_s: int) -> str:
    """``ok``, ``sparse`` (too little of the window observed), ``stale`` (nothing in the last steps) or ``no data``."""
    if observed_fraction <= 0 or last_observed is None:
        return "no data"
    if last_observed < window_end - (STALE_STEPS - 1) * interval_s:
        return "stale"
    if observed_fraction < SPARSE_BELOW:
        return "sparse"
    return "ok"
