"""Prometheus text exposition (format 0.0.4), written by hand: counters, gauges and histograms.

Requests are labelled by route template (``/v1/forecast``, not the full URL), so label values
stay few.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict

#: Latency buckets in seconds (requests and forecast computation).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(d: dict) -> str:
    if not d:
        return ""
    esc = (str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in d.values())
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(d.keys(), esc)) + "}"


def _num(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if x == math.inf:
        return "+Inf"
    return repr(float(x)) if isinstance(x, float) else str(x)


class Histogram:
    """Cumulative-bucket histogram per label set."""

    def __init__(self, buckets=BUCKETS):
        self.buckets = tuple(buckets)
        self.series: dict[tuple, list] = {}

    def observe(self, labels: tuple, value: float) -> None:
        """Add one observation to the series of ``labels`` (a tuple of (name, value) pairs)."""
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [[0] * len(self.buckets), 0, 0.0]
        for i, b in enumerate(self.buckets):
            if value <= b:
                s[0][i] += 1
        s[1] += 1
        s[2] += value

    def lines(self, name: str) -> list[str]:
        """Exposition lines (``_bucket``, ``_sum``, ``_count``) of every series."""
        out = []
        for labels, (counts, n, total) in sorted(self.series.items()):
            d = dict(labels)
            for b, c in zip(self.buckets, counts):
                out.append(f"{name}_bucket{_labels({**d, 'le': _num(b)})} {c}")
            out.append(f"{name}_bucket{_labels({**d, 'le': '+Inf'})} {n}")
            out.append(f"{name}_sum{_labels(d)} {_num(total)}")
            out.append(f"{name}_count{_labels(d)} {n}")
        return out


class Metrics:
    """The service's metrics; :meth:`render` gives the ``/metrics`` text."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = defaultdict(int)
        self.latency = Histogram()
        self.forecast_seconds = Histogram()
        self.forecasts: dict[tuple, int] = defaultdict(int)
        self.counters: dict[str, dict[tuple, float]] = {}

    #: ``HELP`` texts of the counters of :meth:`count` (a counter without one is not rendered).
    HELP = {
        "stmgt_observation_batches_refused_total": "POST /v1/observations refused, by status (401, 413, 422).",
        "stmgt_observations_refused_total": "Observation rows in refused batches (where the body was read).",
        "stmgt_forecast_failures_total": "Forecasts from the store that failed (not counting waits for history).",
    }

    def count(self, name: str, labels: dict, n: float = 1) -> None:
        """Add ``n`` to the counter ``name`` (one of :data:`HELP`) with ``labels``."""
        with self._lock:
            series = self.counters.setdefault(name, defaultdict(float))
            series[tuple(labels.items())] += n

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request and its latency."""
        with self._lock:
            self.requests[(route, method, str(status))] += 1
            self.latency.observe((("route", route), ("method", method)), seconds)

    def forecast(self, model: str, seconds: float, cached: bool) -> None:
        """Count one forecast answer; time the computation when it was not cached."""
        with self._lock:
            self.forecasts[(model, "true" if cached else "false")] += 1
            if not cached:
                self.forecast_seconds.observe((("model", model),), seconds)

    def render(self, gauges: list[tuple[str, str, str, dict, float]]) -> str:
        """The exposition text; ``gauges`` are ``(name, type, help, labels, value)`` sampled at scrape time."""
        with self._lock:
            out = ["# HELP stmgt_http_requests_total HTTP requests by route template, method and status.",
                   "# TYPE stmgt_http_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                out.append(f"stmgt_http_requests_total{_labels({'route': route, 'method': method, 'status': status})}"
                           f" {n}")
            out += ["# HELP stmgt_http_request_duration_seconds Request latency by route template and method.",
                    "# TYPE stmgt_http_request_duration_seconds histogram"]
            out += self.latency.lines("stmgt_http_request_duration_seconds")
            out += ["# HELP stmgt_forecasts_total Forecasts answered, by model and whether from the cache.",
                    "# TYPE stmgt_forecasts_total counter"]
            for (model, cached), n in sorted(self.forecasts.items()):
                out.append(f"stmgt_forecasts_total{_labels({'model': model, 'cached': cached})} {n}")
            out += ["# HELP stmgt_forecast_compute_seconds Time to compute one forecast (cache misses).",
                    "# TYPE stmgt_forecast_compute_seconds histogram"]
            out += self.forecast_seconds.lines("stmgt_forecast_compute_seconds")
            for name, help_ in self.HELP.items():
                out += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
                series = self.counters.get(name) or ({(): 0} if name == "stmgt_observations_refused_total" else {})
                for labels, n in sorted(series.items()):
                    out.append(f"{name}{_labels(dict(labels))} {_num(int(n))}")
        seen = set()
        for name, kind, help_, labels, value in gauges:
            if name not in seen:
                out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
                seen.add(name)
            out.append(f"{name}{_labels(labels)} {_num(value)}")
        return "\n".join(out) + "\n"
