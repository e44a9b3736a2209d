"""The HTTP routes of ``stmgt serve`` (FastAPI): observations in, calibrated forecasts out.

======  =========================  ==============================================================
GET     ``/``                      the dashboard (a map of the roads, coloured by forecast)
GET     ``/healthz``               the process answers
GET     ``/readyz``                models loaded, store reachable, no failing forecast (503 otherwise)
GET     ``/metrics``               Prometheus text: requests, latency, forecast time, rows, store size, scores
GET     ``/openapi.json``          the API description (no /docs page: it would load scripts from a CDN)
GET     ``/v1/models``             served models (name, version, horizon, ...) and the store's newest time
GET     ``/v1/graph``              nodes (with coordinates where known) and edges of a model
POST    ``/v1/observations``       a batch of ``{timestamp, node_id, value, covariates?}`` (API key if set)
GET     ``/v1/observations``       stored observations, with their covariates (``nodes``, ``since``, ``until``)
GET     ``/v1/forecast``           forecast from the latest window in the store (JSON, or GeoJSON for a map)
POST    ``/v1/forecast``           forecast from an explicit window of observations
GET     ``/v1/scores``             live MAE per step and 80%/90% interval coverage of issued forecasts
GET     ``/v1/forecasts/history``  issued forecasts with the observations they were scored against
======  =========================  ==============================================================

Every route has a pydantic response model (``/openapi.json`` documents each answer and each refusal);
every time in an answer is ISO 8601 in UTC with whole seconds and a ``Z`` (:func:`~stmgt.serve.store.iso_utc`);
a query parameter a route does not declare is refused (422, listing the accepted ones); refusals name
API fields and server settings, never command-line flags.

Every refusal answers ``{"detail": "<one line>"}``: 401 without the API key (checked before the
body is read), 404 for an unknown model, 409 when the store does not hold the model's history
yet, 413 for a body over the limit (counted while it streams, chunked or not), 422 for a bad
request (naming the row index and field of a bad observation, or the query parameter), 503 when
the store cannot write (``/readyz``: when not ready). Every answer carries a ``Content-Security-Policy``
that allows scripts from this service's ``/static`` files only (no inline script).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import models_json_schema

from stmgt.errors import StmgtError
from stmgt.predict import QUANTILES, quantile_column
from stmgt.serve.forecasting import ForecastFailed, NotEnoughHistory, ServedModel, load_models
from stmgt.serve.metrics import Metrics
from stmgt.serve.scoring import Scorer
from stmgt.serve.store import STORED_QUANTILES, Store, StoreUnavailable, iso_utc, to_seconds
from stmgt.serve.trust import PLAUSIBLE_STD, Trust, parse_value_range

log = logging.getLogger("stmgt.serve")
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
_EPOCH, _SECOND = datetime(1970, 1, 1), timedelta(seconds=1)
#: The latest time a query may name: pandas' last timestamp (2262-04-11).
MAX_SECONDS = int(pd.Timestamp.max.value // 1_000_000_000)
#: The routes that write (they need the API key where one is set).
WRITE_ROUTES = {("POST", "/v1/observations")}
#: Headers of every answer: no inline script, no framing, no content sniffing (the dashboard loads
#: /static/app.js and /static/style.css only, and fetches this service only).
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
                                 b" connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none';"
                                 b" frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


def _short(x, n: int = 60) -> str:
    """``x`` as text, cut to ``n`` characters (a refusal never echoes a huge value whole)."""
    t = str(x)
    return t if len(t) <= n else t[:n] + f"... ({len(t)} characters)"


#: Phrases of messages shared with the command line (:mod:`stmgt.predict`) in the API's words: ``(pattern,
#: replacement)``, applied in order by :func:`api_words`.
_API_WORDS = [
    (re.compile(r"^window: "), "observations: "),
    (re.compile(r"^store: "), "the store: "),
    (re.compile(r"below --min-coverage ([0-9.eE+-]+)"), r"below the minimum coverage \1 a forecast needs"),
    (re.compile(r", or lower --min-coverage\b"), ""),
    (re.compile(r"; column\(s\) (.+?) missing; add them"), r"; no observation carries \1; add it to the rows'"
                                                           " covariates"),
    (re.compile(r"covariate column ('[^']*') has no value; fill it in"),
     r"covariate \1 has no value in the window; send it in the rows' covariates"),
    (re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?![0-9.:+Z-])"), r"\1T\2Z"),
]
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def api_words(text: str) -> str:
    """A message for an HTTP answer: the command-line wording of :mod:`stmgt.predict`'s shared messages in API
    terms (``window:`` is the ``observations`` field; ``--min-coverage 0.5`` is the minimum coverage a forecast
    needs, which no request sets; any other flag left is named as an option, ``--allow-gap`` -> ``option
    allow_gap``) and its times as the API writes them (UTC, ``Z``)."""
    for pattern, repl in _API_WORDS:
        text = pattern.sub(repl, text)
    return _FLAG.sub(lambda m: "option " + m.group(1).replace("-", "_"), text)


class ApiError(Exception):
    """A refusal: HTTP ``status`` with a one-line ``detail`` (in API words: :func:`api_words`)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, api_words(" ".join(str(detail).split()))


class Observation(BaseModel):
    """One reading: a node's value at a time, with optional global covariates (e.g. weather) at that time."""

    model_config = ConfigDict(extra="forbid")
    timestamp: datetime = Field(description="ISO 8601 (the data's clock; an offset is converted to UTC)")
    node_id: str
    value: FiniteFloat
    covariates: dict[str, FiniteFloat] | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _number(cls, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a JSON number, got {v!r}")
        return v

    @field_validator("node_id", mode="before")
    @classmethod
    def _node(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return v

    @field_validator("covariates", mode="before")
    @classmethod
    def _covariate_numbers(cls, v):
        if isinstance(v, dict):
            for name, x in v.items():
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    raise ValueError(f"{_short(name)}: must be a JSON number, got {_short(x)!r}")
        return v


class ObservationBatch(BaseModel):
    """``POST /v1/observations`` body."""

    model_config = ConfigDict(extra="forbid")
    observations: list[Observation]


class WindowRequest(BaseModel):
    """``POST /v1/forecast`` body: an explicit window of observations (the last ``history`` steps are used)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    observations: list[Observation]
    nodes: list[str] | None = None
    steps: list[int] | None = None
    quantiles: list[float] | None = None


# ---------------------------------------------------------------------------- answers (response models)
#: A time as every answer writes it (:func:`~stmgt.serve.store.iso_utc`).
Time = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
                            json_schema_extra={"format": "date-time"}, examples=["2024-01-03T08:00:00Z"],
                            description="ISO 8601 in UTC, whole seconds, with a Z")]
Quantiles = Annotated[dict[str, float], Field(description='per requested probability (as written in "quantiles",'
                                                          ' e.g. "0.05"), the quantile in the data\'s units')]


class _Answer(BaseModel):
    """The base of the response models (routes answer with ``response_model_exclude_unset``: an optional field an
    answer does not carry is left out, not written as ``null``)."""


class ErrorResponse(_Answer):
    """Every refusal: one line saying what is wrong (the field, row or parameter) and, where there is one, the fix."""

    detail: str = Field(examples=["model 'x' is not served; served: demo, gru"])


class HealthResponse(_Answer):
    """``GET /healthz``."""

    status: Literal["ok"]


class ReadyResponse(_Answer):
    """``GET /readyz`` (503 with the same body when ``ready`` is false)."""

    ready: bool
    store: bool = Field(description="the store answers a query")
    models: bool = Field(description="every model is loaded")
    forecasts: dict[str, str] = Field(description='per model: "none yet", "ok", "waiting: ..." (not enough history'
                                                  ' yet: ready) or "failed: ..." (not ready)')


class TrainingValues(_Answer):
    """The training data's mean and standard deviation of the value (the run's scaler; the map's colour scale)."""

    mean: float
    std: float


class ModelInfo(BaseModel):
    """One served model (``GET /v1/models``)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="the run folder's name; ?model= takes it")
    version: str = Field(description="a short hash of the weights")
    model: str = Field(description="the architecture")
    run_dir: str
    nodes: int
    history: int = Field(description="steps of history the model reads")
    horizon: int = Field(description="steps it forecasts")
    interval_minutes: float
    covariates: list[str]
    units: str
    calibrated: bool
    training_values: TrainingValues


class StoreInfo(_Answer):
    """The store's state (``GET /v1/models``)."""

    latest_observation: Time | None
    observations: int
    flagged: int
    retention_days: float
    earliest_accepted: Time
    value_range: list[float] = Field(description="the plausible range of most roads: [low, high]")
    roads_with_own_range: list[str]


class ModelsResponse(_Answer):
    """``GET /v1/models``."""

    models: list[ModelInfo]
    default: str
    store: StoreInfo


class GraphNode(_Answer):
    """A node of the road graph; ``lat``/``lon`` where the run has coordinates."""

    id: str
    lat: float | None = None
    lon: float | None = None


class GraphEdge(_Answer):
    """A directed edge of the road graph."""

    source: str
    target: str
    weight: float | None = None


class GraphResponse(_Answer):
    """``GET /v1/graph``."""

    model: str
    has_coords: bool
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class IngestResponse(_Answer):
    """``POST /v1/observations``: what was acknowledged (on disk before this answer)."""

    accepted: int
    covariates: int
    flagged: int = Field(description="rows stored flagged (outside their road's plausible range; treated as missing)")
    latest: Time | None = Field(description="the store's newest unflagged observation time")
    flagged_note: str | None = None
    flagged_covariates: int | None = None


class StoredObservation(_Answer):
    """A stored reading, with the covariates stored at its time (left out when there are none)."""

    timestamp: Time
    node_id: str
    value: float
    flagged: bool
    covariates: dict[str, float] | None = None
    flagged_covariates: list[str] | None = Field(None, description="covariates of this time stored flagged")


class ObservationsResponse(_Answer):
    """``GET /v1/observations``."""

    observations: list[StoredObservation]
    count: int
    truncated: bool = Field(description="more rows match than limit: narrow since/until or raise limit")


class ForecastRow(_Answer):
    """The forecast of one node at one horizon step."""

    step: int
    timestamp: Time = Field(description="the time forecast")
    node_id: str
    mean: float
    std: float
    quantiles: Quantiles


class Road(_Answer):
    """How well one road is observed in the forecast's window."""

    node_id: str
    observed_fraction: float
    last_observed_at: Time | None
    flagged_readings: int
    status: Literal["ok", "sparse", "stale", "no data"]


class ForecastResponse(_Answer):
    """``GET /v1/forecast`` and ``POST /v1/forecast``."""

    model: str
    version: str
    window_end: Time = Field(description="the last step of the history window")
    issued_at: Time = Field(description="the server's clock when the forecast was computed")
    compute_ms: float
    cached: bool
    pending: bool = Field(False, description="true while a newer window (a new step, or a late row inside this one)"
                          " awaits the background issuer: this is the newest forecast it has finished")
    units: str
    interval_minutes: float
    calibrated: bool
    quantiles: list[float]
    roads: list[Road]
    forecasts: list[ForecastRow]


class StepForecast(_Answer):
    """One horizon step of a node's forecast (GeoJSON properties)."""

    step: int
    timestamp: Time
    mean: float
    std: float
    quantiles: Quantiles


class Point(_Answer):
    """A GeoJSON Point: ``[longitude, latitude]``."""

    type: Literal["Point"]
    coordinates: list[float] = Field(min_length=2, max_length=2)


class LineString(_Answer):
    """A GeoJSON LineString: ``[[lon, lat] of the source, [lon, lat] of the target]``."""

    type: Literal["LineString"]
    coordinates: list[list[float]] = Field(min_length=2)


class FeatureProperties(_Answer):
    """A feature's node (for a line: the edge's target), its road status and its forecast per step."""

    node_id: str
    source: str | None = Field(None, description="lines only: the edge's source node")
    target: str | None = Field(None, description="lines only: the edge's target node (= node_id)")
    observed_fraction: float
    last_observed_at: Time | None
    flagged_readings: int
    status: Literal["ok", "sparse", "stale", "no data"]
    forecasts: list[StepForecast]


class Feature(_Answer):
    """A GeoJSON Feature."""

    type: Literal["Feature"]
    geometry: Point | LineString = Field(discriminator="type")
    properties: FeatureProperties


class ForecastGeoJSON(_Answer):
    """``GET /v1/forecast?format=geojson``: a GeoJSON FeatureCollection (RFC 7946; coordinates are [lon, lat])
    with the forecast's metadata as foreign members."""

    type: Literal["FeatureCollection"]
    geometry: Literal["points", "lines"]
    model: str
    version: str
    window_end: Time
    issued_at: Time
    compute_ms: float
    cached: bool
    units: str
    interval_minutes: float
    calibrated: bool
    quantiles: list[float]
    features: list[Feature]


class StepScore(_Answer):
    """Live scores of one horizon step."""

    step: int
    n: int
    mae: float
    coverage80: float
    coverage90: float


class ModelScores(_Answer):
    """Live scores of one model version over the score window."""

    model: str
    version: str
    window_hours: float
    window_end: Time | None
    forecasts_issued: int
    n: int
    mae: float | None
    coverage80: float | None
    coverage90: float | None
    steps: list[StepScore]


class ScoresResponse(_Answer):
    """``GET /v1/scores``."""

    scores: list[ModelScores]


class HistoryRow(_Answer):
    """One issued forecast of one node at one step, with the observation it is scored against."""

    window_end: Time = Field(description="the issue: the last step of the window the forecast was made from")
    issued_at: Time = Field(description="the server's clock when it was stored")
    step: int
    timestamp: Time = Field(description="the time forecast")
    node_id: str
    mean: float | None
    quantiles: dict[str, float | None] = Field(description="the stored quantiles (0.05, 0.1, 0.5, 0.9, 0.95)")
    observed: float | None = Field(description="the mean unflagged reading in [timestamp, timestamp + interval);"
                                               " null while none has arrived")


class HistoryResponse(_Answer):
    """``GET /v1/forecasts/history``."""

    model: str
    version: str
    interval_minutes: float
    forecasts: list[HistoryRow]
    count: int
    truncated: bool = Field(description="more rows match than limit: narrow since/until or raise limit")


#: Models that ``responses=`` name by reference only (added to ``/openapi.json``'s components by hand).
EXTRA_SCHEMAS = (ErrorResponse, ForecastGeoJSON)
_ERROR_TEXT = {401: "Writing without the service's API key (the X-API-Key header)",
               404: "The model is not served",
               409: "The store does not hold the model's history window (or a forecast from it) yet",
               413: "The body is over the size limit",
               422: "A bad request: the field, row or query parameter is named (an undeclared query parameter too)",
               503: "The store cannot write"}


def _errors(*codes: int) -> dict:
    """The ``responses=`` of a route's refusals: each a JSON ``{"detail": str}`` (:class:`ErrorResponse`), whatever
    the media type of the route's answer."""
    return {c: {"description": _ERROR_TEXT[c],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            for c in codes}


class Service:
    """Everything one ``stmgt serve`` process holds: models, store, metrics, scorer and forecast issuer."""

    def __init__(self, run_dirs, db: str = "stmgt-serve.db", api_key: str | None = None,
                 retention_days: float = 7.0, max_batch: int = 5000, max_future_hours: float = 24.0,
                 score_window_hours: float = 24.0, auto_forecast: bool = True, settle_seconds: float = 0.5,
                 earliest: str = "1970-01-01", plausible_std: float = PLAUSIBLE_STD, value_range: str | None = None,
                 exclusive: bool = True, clock: Callable[[], float] = time.time):
        if not retention_days >= 0:
            raise StmgtError(f"--retention-days {retention_days:g}: give 0 (keep everything) or more days")
        if not (max_future_hours >= 0 and math.isfinite(max_future_hours)):
            raise StmgtError(f"--max-future-hours {max_future_hours:g}: give a number of hours, 0 or more")
        if max_batch < 1:
            raise StmgtError(f"--max-batch {max_batch}: give at least 1")
        try:
            t = pd.Timestamp(earliest)
            if t.tzinfo is not None:
                t = t.tz_convert("UTC").tz_localize(None)
            self.earliest = t.to_pydatetime()
            if pd.isna(t) or self.earliest < _EPOCH:
                raise ValueError
        except (ValueError, TypeError, OverflowError):
            raise StmgtError(f"--earliest {earliest!r}: give a date on or after 1970-01-01 (e.g. 2000-01-01);"
                             " older timestamps are refused") from None
        self.clock = clock
        self.models: dict[str, ServedModel] = load_models(list(run_dirs))
        self.default = next(iter(self.models))
        first = self.models[self.default]
        self.trust = Trust(self.models.values(), plausible_std, parse_value_range(value_range, first.node_ids))
        self.store = Store(db, retention_days=retention_days, exclusive=exclusive, clock=clock)
        self.metrics = Metrics()
        self.scorer = Scorer(self.store, score_window_hours)
        self.api_key = api_key or None
        self.max_batch = max_batch
        self.max_future = timedelta(hours=max_future_hours)
        self.auto_forecast = auto_forecast
        self.settle = settle_seconds
        self.forecast_state: dict[str, str] = dict.fromkeys(self.models, "none yet")
        self.node_ids = first.node_ids
        self.nodes = set(first.node_ids)
        self.covariates = sorted({c for m in self.models.values() for c in m.covariates})
        self.bodies = _EncodedBodies()
        self._scored_at: dict[str, float] = {}  # model -> monotonic time of the issuer's last scores refresh
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ helpers
    def model(self, name: str | None) -> ServedModel:
        """The model called ``name`` (default: the first served)."""
        if not name:
            return self.models[self.default]
        m = self.models.get(name)
        if m is None:
            raise ApiError(404, f"model {name!r} is not served; served: {', '.join(self.models)}")
        return m

    def check_rows(self, obs: list[Observation], field: str = "observations") -> tuple[list, list]:
        """Validate a batch (size, nodes, time window, covariate names, duplicates) and flag implausible
        readings -> ``(rows, covariates)`` for the store: ``(node, ts, value, flag)`` and ``(ts, name, value, flag)``.
        """
        if len(obs) > self.max_batch:
            raise ApiError(422, f"{field}: {len(obs)} rows in one batch; at most {self.max_batch} (split the batch)")
        if not obs:
            raise ApiError(422, f"{field}: the batch is empty; send at least one observation")
        now = datetime.fromtimestamp(self.clock(), timezone.utc).replace(tzinfo=None)
        horizon = now + self.max_future
        rows, covs = [], []
        seen: dict[tuple, tuple[int, float]] = {}
        seen_cov: dict[tuple, tuple[int, float]] = {}
        for i, o in enumerate(obs):
            if o.node_id not in self.nodes:
                raise ApiError(422, f"{field}[{i}].node_id: {_short(o.node_id)!r} is not a node of the served models"
                                    f" ({len(self.nodes)} nodes, e.g. {self.node_ids[0]!r}); row {i} rejected")
            ts = o.timestamp
            try:
                if ts.tzinfo is not None:
                    ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
            except (OverflowError, ValueError):
                ts = datetime.min if ts.year < 1000 else datetime.max
            if ts > horizon:
                raise ApiError(422, f"{field}[{i}].timestamp: {iso_utc(ts)} is more than"
                                    f" {self.max_future.total_seconds() / 3600:g} h ahead of the server clock"
                                    f" ({iso_utc(now)}; server setting max_future_hours); row {i} rejected")
            if ts < self.earliest:
                raise ApiError(422, f"{field}[{i}].timestamp: {iso_utc(ts)} is before {iso_utc(self.earliest)},"
                                    f" the earliest time accepted (server setting earliest); row {i} rejected")
            s = (ts - _EPOCH) // _SECOND
            v = float(o.value)
            prev = seen.get((o.node_id, s))
            if prev is not None:
                if prev[1] != v:
                    raise ApiError(422, f"{field}[{i}]: node {_short(o.node_id)!r} at {iso_utc(ts)} is also row"
                                        f" {prev[0]}, with another value ({prev[1]:g}, here {v:g}); send one reading"
                                        f" per node and time; row {i} rejected")
            else:
                seen[(o.node_id, s)] = (i, v)
                rows.append((o.node_id, s, v, 0 if self.trust.value_ok(o.node_id, v) else 1))
            for name, x in (o.covariates or {}).items():
                if name not in self.covariates:
                    raise ApiError(422, f"{field}[{i}].covariates.{_short(name)}: not a covariate of the served"
                                        f" models ({', '.join(self.covariates) or 'none'}); row {i} rejected")
                x = float(x)
                prev = seen_cov.get((s, name))
                if prev is not None:
                    if prev[1] != x:
                        raise ApiError(422, f"{field}[{i}].covariates.{name}: {x:g} at {iso_utc(ts)}, but row"
                                            f" {prev[0]} gives {prev[1]:g} for the same time; covariates are one"
                                            f" value per time; row {i} rejected")
                    continue
                seen_cov[(s, name)] = (i, x)
                covs.append((s, name, x, 0 if self.trust.covariate_ok(name, x) else 1))
        return rows, covs

    def refused(self, rows: int, status: int) -> None:
        """Count a refused batch of ``rows`` observations (``/metrics``)."""
        self.metrics.count("stmgt_observation_batches_refused_total", {"status": str(status)})
        self.metrics.count("stmgt_observations_refused_total", {}, rows)

    def frame(self, obs: list[Observation]) -> pd.DataFrame:
        """An explicit window as the long table :func:`stmgt.predict.panel_from_frame` reads."""
        rows, covs = self.check_rows(obs)
        df = pd.DataFrame([r[:3] for r in rows if not r[3]], columns=["node_id", "ts", "value"])
        for name in self.covariates:
            d = {s: v for s, n, v, f in covs if n == name and not f}
            df[name] = df["ts"].map(d)
        df.insert(0, "timestamp", pd.to_datetime(df.pop("ts"), unit="s"))
        return df

    # ------------------------------------------------------------------ forecast issuer
    def start(self) -> None:
        """Start the background issuer (a forecast per model whenever new observations settle)."""
        if self.auto_forecast and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._issue_loop, name="stmgt-issuer", daemon=True)
            self._thread.start()
            self._pending.set()

    def stop(self) -> None:
        """Stop the background issuer."""
        self._stop.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def notify(self) -> None:
        """New observations arrived."""
        self._pending.set()

    def _issue_loop(self) -> None:
        while not self._stop.is_set():
            self._pending.wait(timeout=SCORES_EVERY)
            if self._stop.is_set():
                return
            if not self._pending.is_set():
                self.refresh_scores()  # quiet: scores that the last burst left stale are brought up to date
                continue
            self._stop.wait(self.settle)  # let a burst of batches settle into one forecast
            self._pending.clear()
            self.issue_all()

    def refresh_scores(self) -> None:
        """Recompute each model's kept live scores where the store changed since, at most every
        :data:`SCORES_EVERY` seconds per model (the scoring query grows with the store; forecasts do not)."""
        for m in self.models.values():
            if time.monotonic() - self._scored_at.get(m.name, -math.inf) < SCORES_EVERY:
                continue
            try:
                self.scorer.scores(m, refresh=True)
                self._scored_at[m.name] = time.monotonic()
            except Exception:  # the next refresh tries again; the error is logged
                log.exception("scores of %s failed", m.name)

    def issue_all(self) -> int:
        """Compute (or take from memory) every model's forecast of the store's current window, then refresh
        its live scores; the number of models with a forecast. The issuer's work: reads never compute while
        it runs."""
        n = 0
        for m in self.models.values():
            try:
                r = self.forecast(m, compute=True)
                if not r["cached"]:
                    self.metrics.forecast(m.name, r["compute_ms"] / 1000, False)
                    # the answer every reader of the whole forecast gets, encoded once here, off their path: as
                    # the current forecast, and as the newest one while a newer window awaits (under load)
                    for pending in (False, True):
                        self.forecast_bytes(m, {**r, "cached": True, "pending": pending}, QUANTILES)
                n += 1
            except NotEnoughHistory:
                pass
            except Exception:  # keep issuing for the other models; the error is logged
                log.exception("forecast of %s failed", m.name)
        self.refresh_scores()
        return n

    def forecast_bytes(self, m: ServedModel, res: dict, quantiles, nodes=None, steps=None, fmt: str = "json",
                       geometry: str = "points") -> bytes:
        """The encoded answer of ``GET /v1/forecast`` for the forecast ``res`` and a selection, kept by forecast
        revision and selection (:class:`_EncodedBodies`): encoding ~2,500 rows costs far more than reading a kept
        forecast, so each answer is encoded once (the issuer encodes the whole forecast as it issues it)."""
        key = (m.name, res["window_end"], res["revision"], res["cached"], res["pending"], tuple(quantiles),
               tuple(nodes or ()), tuple(steps or ()), fmt, geometry)

        def encode() -> bytes:
            if res["pending"] and fmt == "json":  # the same answer but for its flag, when kept: one replace
                current = self.bodies.peek((*key[:4], False, *key[5:]))
                if current is not None:
                    return current.replace(b'"pending":false', b'"pending":true', 1)  # the top-level field
            body = forecast_body(m, res, quantiles, nodes, steps)
            if fmt == "geojson":
                body = geojson_body(m, body, lon_lat(m), geometry)
            return json.dumps(body, separators=(",", ":")).encode()

        return self.bodies.get(key, encode)

    def scores(self, m: ServedModel) -> dict:
        """``m``'s live scores: the kept ones while the issuer runs (it refreshes them), else recomputed when
        the store has changed."""
        return self.scorer.scores(m, stale_ok=self.issuing)

    @property
    def issuing(self) -> bool:
        """Whether the background issuer runs (then reads answer from memory and never compute)."""
        return self._thread is not None and self._thread.is_alive()

    def forecast(self, m: ServedModel, quantiles=QUANTILES, compute: bool | None = None) -> dict:
        """``m``'s forecast of the store's current window, its outcome kept for ``/readyz`` and counted in
        ``/metrics``. ``compute`` (default: only without the issuer) lets this call run the model; a read
        answered with a forecast that is not the current window's wakes the issuer."""
        compute = not self.issuing if compute is None else compute
        try:
            r = m.forecast_from_store(self.store, quantiles, compute=compute)
        except ForecastFailed as e:
            self._failed(m, str(e))
            raise
        except NotEnoughHistory as e:
            self.forecast_state[m.name] = f"waiting: {e}"
            raise
        except StoreUnavailable as e:
            self._failed(m, str(e))
            raise
        except Exception as e:
            self._failed(m, f"{type(e).__name__}: {e}")
            raise
        if r["pending"]:
            self.notify()
        else:
            self.forecast_state[m.name] = "ok"
        return r

    def _failed(self, m: ServedModel, why: str) -> None:
        self.forecast_state[m.name] = "failed: " + " ".join(why.split())
        self.metrics.count("stmgt_forecast_failures_total", {"model": m.name})


# ---------------------------------------------------------------------------- formatting
def _parse_list(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_nodes(text: str | None, known) -> list[str] | None:
    """``?nodes=``: ids separated by commas; a JSON array of strings (``["A,1","B"]``) for ids that hold
    commas; an id that holds commas is also taken whole when it is given alone and is a known node."""
    if text is None or not text.strip():
        return None
    t = text.strip()
    if t.startswith("["):
        try:
            ids = json.loads(t)
        except ValueError:
            ids = None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(422, 'nodes: not a JSON array of node ids (e.g. ["A,1","B"]) nor ids separated by commas')
        return ids or None
    if "," in text and text in known:
        return [text]
    return _parse_list(text)


def _parse_time(text: str | None, what: str) -> int | None:
    """A query's time (ISO 8601, or seconds since 1970) as seconds; 422 naming the parameter otherwise."""
    if text is None or text == "":
        return None
    t = text.strip()
    try:
        if re.fullmatch(r"[0-9]+(\.[0-9]*)?", t):
            v = int(float(t)) if len(t) < 20 else MAX_SECONDS + 1
        else:
            v = to_seconds(pd.Timestamp(t))
    except (ValueError, TypeError, OverflowError):
        v = None
    if v is None:
        raise ApiError(422, f"{what}: {_short(text)!r} is not a timestamp (ISO 8601, e.g. 2024-01-03T08:00:00Z;"
                            " naive times are UTC; or seconds since 1970)")
    if not 0 <= v <= MAX_SECONDS:
        raise ApiError(422, f"{what}: {_short(text)!r} is outside 1970-01-01 .. {pd.Timestamp.max:%Y-%m-%d}"
                            " (ISO 8601, or seconds since 1970)")
    return v


def _quantiles(qs) -> tuple[float, ...]:
    if qs is None:
        return QUANTILES
    out = []
    for q in qs:
        try:
            v = float(q)
        except (TypeError, ValueError):
            raise ApiError(422, f"quantiles: {q!r} is not a number; give probabilities like 0.1,0.5,0.9") from None
        if not (0 < v < 1) or math.isnan(v):
            raise ApiError(422, f"quantiles: {q!r} is not strictly between 0 and 1")
        out.append(v)
    if len(out) > 20:
        raise ApiError(422, f"quantiles: {len(out)} requested; at most 20")
    return tuple(dict.fromkeys(out))


def _select(model: ServedModel, nodes, steps) -> tuple[list[str] | None, list[int] | None]:
    if nodes:
        bad = [n for n in nodes if n not in model.node_ids]
        if bad:
            raise ApiError(422, f"nodes: {_short(bad[0])!r} is not a node of model {model.name}")
    if steps:
        try:
            steps = [int(s) for s in steps]
        except (TypeError, ValueError):
            raise ApiError(422, f"steps: {steps!r} are not whole numbers; give horizon steps like 1,6,12") from None
        bad = [s for s in steps if not 1 <= s <= model.horizon]
        if bad:
            raise ApiError(422, f"steps: {bad[0]} is outside 1..{model.horizon} (the horizon of {model.name})")
    return nodes or None, steps or None


def forecast_body(model: ServedModel, res: dict, quantiles, nodes=None, steps=None) -> dict:
    """The JSON answer of a forecast (:class:`ForecastResponse`): per (step, node) the mean, std and requested
    quantiles, and per road how well its window is observed.

    Args:
        model: the served model.
        res: its forecast (``table`` of :func:`~stmgt.predict.forecast_table` rows, ``window_end`` seconds,
            ``issued_at``, ``compute_ms``, ``cached``, ``roads``).
        quantiles: the probabilities to answer (columns of ``table``).
        nodes, steps: the selection (``None``: all).
    """
    t = res["table"]
    if nodes:
        t = t[t["node_id"].isin(nodes)]
    if steps:
        t = t[t["step"].isin(steps)]
    cols = [quantile_column(q) for q in quantiles]
    ts = [iso_utc(x) for x in t["timestamp"]]
    qv = t[cols].to_numpy(np.float64).round(4).tolist()
    rows = [{"step": int(s), "timestamp": tt, "node_id": str(n), "mean": round(float(mu), 4),
             "std": round(float(sd), 4), "quantiles": {f"{q:g}": v for q, v in zip(quantiles, qq)}}
            for s, tt, n, mu, sd, qq in zip(t["step"].tolist(), ts, t["node_id"].tolist(), t["mean"].tolist(),
                                            t["std"].tolist(), qv)]
    roads = [{**r, "last_observed_at": None if r["last_observed"] is None else iso_utc(r["last_observed"])}
             for r in res.get("roads", []) if not nodes or r["node_id"] in nodes]
    for r in roads:
        del r["last_observed"]
    return {"model": model.name, "version": model.version, "window_end": iso_utc(res["window_end"]),
            "issued_at": iso_utc(res["issued_at"]), "compute_ms": round(res["compute_ms"], 3),
            "cached": res["cached"], "pending": bool(res.get("pending", False)), "units": model.meta.get("units", ""),
            "interval_minutes": model.meta["interval_minutes"], "calibrated": model.calibrated,
            "quantiles": [float(q) for q in quantiles], "roads": roads, "forecasts": rows}


def lon_lat(model: ServedModel) -> list[list[float]]:
    """The nodes' GeoJSON positions ``[lon, lat]`` (``data.json`` keeps ``coords`` as ``[lat, lon]``); a run without
    usable coordinates is refused (422) in one line."""
    coords = model.meta.get("coords")
    why = None
    if not coords:
        why = "its data.json has no coords"
    elif len(coords) != len(model.node_ids):
        why = f"its data.json has {len(coords)} coords for {len(model.node_ids)} nodes"
    else:
        try:
            out = [[float(c[1]), float(c[0])] for c in coords]
        except (TypeError, ValueError, IndexError):
            out = None
        if out is None or not all(math.isfinite(v) for p in out for v in p):
            why = "its data.json coords are not [lat, lon] number pairs"
        else:
            return out
    raise ApiError(422, f"format: geojson needs node coordinates and model {model.name} has none ({why}); ask"
                        " format=json")


def geojson_body(model: ServedModel, body: dict, positions: list[list[float]], geometry: str) -> dict:
    """A forecast answer (:func:`forecast_body`) as a GeoJSON FeatureCollection (:class:`ForecastGeoJSON`).

    ``geometry="points"``: one Point feature per node of the answer; ``"lines"``: one LineString feature per edge
    of the run's graph (source -> target positions; self-loops left out) whose target is in the answer, carrying
    the target's forecast. ``positions``: ``[lon, lat]`` per node, in the run's node order (:func:`lon_lat`).
    """
    per_node: dict[str, list[dict]] = {}
    for r in body["forecasts"]:
        per_node.setdefault(r["node_id"], []).append({k: v for k, v in r.items() if k != "node_id"})
    roads = {r["node_id"]: r for r in body["roads"]}
    index = {n: i for i, n in enumerate(model.node_ids)}

    def props(node: str) -> dict:
        road = roads.get(node) or {"observed_fraction": 0.0, "last_observed_at": None, "flagged_readings": 0,
                                   "status": "no data"}
        return {"node_id": node, **{k: v for k, v in road.items() if k != "node_id"},
                "forecasts": per_node.get(node, [])}

    features = []
    if geometry == "lines":
        ei, _ = model.run.graph()
        for a, b in zip(np.asarray(ei[0]).tolist(), np.asarray(ei[1]).tolist()):
            source, target = model.node_ids[a], model.node_ids[b]
            if a == b or target not in roads:
                continue
            features.append({"type": "Feature", "geometry": {"type": "LineString",
                                                             "coordinates": [positions[a], positions[b]]},
                             "properties": {**props(target), "source": source, "target": target}})
    else:
        for node in roads:
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": positions[index[node]]},
                             "properties": props(node)})
    meta = {k: v for k, v in body.items() if k not in ("roads", "forecasts")}
    return {"type": "FeatureCollection", "geometry": geometry, **meta, "features": features}


# ---------------------------------------------------------------------------- the app
def create_app(service: Service) -> FastAPI:
    """The FastAPI application of a :class:`Service` (routes in the module docstring)."""
    app = FastAPI(title="stmgt serve", version=__import__("stmgt").__version__, docs_url=None, redoc_url=None,
                  lifespan=_lifespan(service), description="Live observations in, calibrated traffic forecasts out.")
    app.state.service = service
    app.mount("/static", StaticFiles(directory=str(_static())), name="static")
    _add_error_handlers(app, service)
    app.add_middleware(_Gate, service=service)
    # this order keeps the routes' order, and so the order of the paths in /openapi.json
    for router in (_dashboard_router(), _health_router(service), _model_router(service),
                   _observation_router(service), _forecast_router(service)):
        app.include_router(router)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's OpenAPI description of ``app`` (made once), with the schemas that ``responses=`` name by reference
    (:data:`EXTRA_SCHEMAS`: refusals, the GeoJSON forecast) added to its components, and the API key optional where
    it is declared (a service without a key takes writes without one)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, top = models_json_schema([(m, "serialization") for m in EXTRA_SCHEMAS],
                                    ref_template="#/components/schemas/{model}")
        have = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in top.get("$defs", {}).items():
            have.setdefault(name, schema)
        for ops in spec["paths"].values():
            for op in ops.values():
                if op.get("security") and {} not in op["security"]:
                    op["security"].append({})
        app.openapi_schema = spec
    return app.openapi_schema


def _static():
    """The dashboard's folder inside the package (a :mod:`importlib.resources` traversable)."""
    return resources.files("stmgt.serve") / "static"


def _lifespan(service: Service):
    """The app's lifespan: the background forecast issuer runs while the app serves."""

    @asynccontextmanager
    async def lifespan(app):
        # everything loaded so far (models, libraries) lives as long as the service: out of the collector's
        # sight, so that its full collections stay short and no request waits ~100s of ms behind one
        gc.collect()
        gc.freeze()
        service.start()
        try:
            yield
        finally:
            service.stop()

    return lifespan


def _add_error_handlers(app: FastAPI, service: Service) -> None:
    """Every refusal as ``{"detail": "<one line>"}``: an :class:`ApiError` with its status, a bad request 422,
    a store that cannot write 503."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        if request.method == "POST" and request.url.path == "/v1/observations" and e.status in (401, 422):
            service.refused(_rows_in(getattr(request.state, "batch", None)), e.status)
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        if request.method == "POST" and request.url.path == "/v1/observations":
            service.refused(_rows_in(getattr(e, "body", None)), 422)
        return JSONResponse({"detail": _validation_message(e.errors())}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, e: StoreUnavailable):
        log.error("%s", e)
        return JSONResponse({"detail": " ".join(str(e).split())}, status_code=503)


def _rows_in(body) -> int:
    """The number of observations in a (parsed) batch, where it is one."""
    if isinstance(body, dict) and isinstance(body.get("observations"), list):
        return len(body["observations"])
    if isinstance(body, ObservationBatch):
        return len(body.observations)
    return 0


def _json_refusal(status: int, detail: str) -> tuple[dict, dict]:
    body = json.dumps({"detail": detail}).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]},
            {"type": "http.response.body", "body": body})


#: The issuer refreshes a model's live scores at most this often (seconds); reads answer the kept ones.
SCORES_EVERY = 5.0

#: Ingest batches processed at once (see :class:`_Gate`).
WRITES_AT_ONCE = 2


class _Gate:
    """The outermost layer of the app (plain ASGI), before anything reads a body:

    * a write route without the right ``X-API-Key`` is refused (401) before a byte of its body is read;
    * a body is counted while it streams (``Content-Length`` or chunked): over ``max_body`` bytes it is
      refused (413) and the rest is never read; under it, the route reads it from memory;
    * every answer gets :data:`SECURITY_HEADERS`; every request is counted and timed by route template;
    * ingest batches are admitted :data:`WRITES_AT_ONCE` at a time (the others wait, without a thread and
      without parsing their body): the store takes one write at a time anyway, and a crowd of writers
      parsing and validating batches in threads would take the interpreter from every read; so reads
      stay fast however many clients write.
    """

    def __init__(self, app, service: Service):
        self.app, self.service = app, service
        self.max_body = service.max_batch * 1024 + 65536
        self.writes = asyncio.Semaphore(WRITES_AT_ONCE)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        method, path = scope["method"], scope["path"]
        status = [500]

        async def send_secured(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                msg = {**msg, "headers": [*msg.get("headers", []), *SECURITY_HEADERS]}
            await send(msg)

        refusal = self._key_refusal(scope) if (method, path) in WRITE_ROUTES else None
        body = b""
        if refusal is None:
            body, refusal = await self._read(scope, receive)
        if refusal is not None:
            code, detail = refusal
            if path == "/v1/observations" and method == "POST":
                self.service.refused(0, code)
            for msg in _json_refusal(code, detail):
                await send_secured(msg)
            self.service.metrics.request(path if path.startswith("/v1/") else "other", method, code,
                                         time.perf_counter() - t0)
            return
        if body is None:  # the client went away
            return
        sent = [False]

        async def replay():
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            if method == "POST" and path == "/v1/observations":
                async with self.writes:
                    await self.app(scope, replay, send_secured)
            else:
                await self.app(scope, replay, send_secured)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.service.metrics.request(route, method, status[0], time.perf_counter() - t0)

    def _key_refusal(self, scope) -> tuple[int, str] | None:
        key = self.service.api_key
        if key is None:
            return None
        sent = [v for k, v in scope.get("headers", []) if k == b"x-api-key"]
        if not sent:
            return 401, "writing needs the service's API key in the X-API-Key header"
        if not hmac.compare_digest(sent[0], key.encode()):
            return 401, "the X-API-Key header does not match the service's API key"
        return None

    async def _read(self, scope, receive) -> tuple[bytes | None, tuple[int, str] | None]:
        limit = self.max_body
        too_big = (413, f"body: more than {limit} bytes; at most {limit} (at most {self.service.max_batch}"
                        " observations per batch: split it)")
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                return None, too_big
        chunks, n = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None, None
            part = msg.get("body", b"")
            n += len(part)
            if n > limit:
                return None, too_big
            if part:
                chunks.append(part)
            if not msg.get("more_body", False):
                return b"".join(chunks), None


def _need_key(service: Service, key: str | None) -> None:
    """Refuse a write (401) without the service's API key, where one is set."""
    if service.api_key is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), service.api_key.encode()):
        raise ApiError(401, "writing needs the service's API key in the X-API-Key header"
                       if key is None else "the X-API-Key header does not match the service's API key")


#: The API key of writes, declared in ``/openapi.json`` as a security scheme (checked by :class:`_Gate` and
#: :func:`_need_key`, not here: a service without a key takes writes without one).
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                       description="the service's API key (stmgt serve --api-key-env NAME); writes only")


def _query_names(dependant) -> list[str]:
    """The query parameters a route declares (its own and its dependencies'), in declaration order."""
    names = [q.alias for q in dependant.query_params]
    for sub in dependant.dependencies:
        names += [n for n in _query_names(sub) if n not in names]
    return names


def _declared_query_only(request: Request) -> None:
    """Refuse (422) a query parameter the route does not declare (``?node=`` for ``?nodes=`` would otherwise be
    ignored silently and answer for every road), naming it and listing the accepted ones."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    accepted = _query_names(route.dependant)
    for name in request.query_params:
        if name not in accepted:
            shown = name if re.fullmatch(r"[A-Za-z0-9_.\-\[\]]{1,60}", name) else repr(_short(name))
            raise ApiError(422, f"{shown}: not a parameter of {request.method} {route.path}"
                                f" (accepted: {', '.join(accepted) or 'none'})")


def _router() -> APIRouter:
    """A router whose routes refuse undeclared query parameters."""
    return APIRouter(dependencies=[Depends(_declared_query_only)])


def _dashboard_router() -> APIRouter:
    """``GET /``: the dashboard page (its scripts and styles are mounted at ``/static``)."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(_static() / "index.html"), media_type="text/html")

    return router


def _health_router(service: Service) -> APIRouter:
    """``GET /healthz``, ``/readyz`` and ``/metrics``: for probes and Prometheus."""
    router = _router()

    @router.get("/healthz", summary="The process answers", operation_id="healthz", tags=["health"],
                response_model=HealthResponse, responses=_errors(422))
    def healthz():
        return {"status": "ok"}

    @router.get("/readyz", summary="Models loaded and store reachable", operation_id="readyz", tags=["health"],
                response_model=ReadyResponse,
                responses={503: {"model": ReadyResponse, "description": "Not ready (the body says why)"},
                           **_errors(422)})
    def readyz():
        ok_store = service.store.ping()
        ok_models = all(m.run.model() is not None for m in service.models.values())
        states = {k: api_words(v) for k, v in service.forecast_state.items()}
        ok_forecasts = not any(v.startswith("failed") for v in states.values())
        body = {"ready": ok_store and ok_models and ok_forecasts, "store": ok_store, "models": ok_models,
                "forecasts": states}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics", operation_id="metrics",
                tags=["health"], responses=_errors(422))
    def metrics():
        return PlainTextResponse(service.metrics.render(_gauges(service)), media_type="text/plain; version=0.0.4")

    return router


def _gauges(service: Service) -> list[tuple]:
    """The store's and the live scores' metrics as ``(name, type, help, labels, value)`` rows."""
    st = service.store
    gauges = [("stmgt_observations_ingested_total", "counter", "Observation rows acknowledged since start.",
               {}, st.rows_ingested),
              ("stmgt_observations_flagged_total", "counter", "Acknowledged rows flagged as implausible since start"
               " (stored, treated as missing).", {}, st.rows_flagged),
              ("stmgt_observations_pruned_total", "counter", "Rows deleted by retention since start.", {},
               st.rows_pruned),
              ("stmgt_store_observations", "gauge", "Observation rows kept in the store.", {}, st.count()),
              ("stmgt_store_flagged_observations", "gauge", "Flagged observation rows kept in the store.", {},
               st.count_flagged()),
              ("stmgt_store_bytes", "gauge", "Bytes of the store on disk (SQLite file and WAL).", {},
               st.size_bytes()),
              ("stmgt_store_latest_timestamp_seconds", "gauge", "Newest observation time (data clock).", {},
               st.latest() if st.latest() is not None else math.nan)]
    scores = [service.scores(m) for m in service.models.values()]
    for name, key, help_ in (("stmgt_score_mae", "mae", "Live MAE of the median per horizon step."),
                             ("stmgt_score_coverage80", "coverage80", "Live coverage of the 80% interval."),
                             ("stmgt_score_coverage90", "coverage90", "Live coverage of the 90% interval."),
                             ("stmgt_score_pairs", "n", "Forecast/observation pairs scored.")):
        for s in scores:
            for row in s["steps"]:
                gauges.append((name, "gauge", help_, {"model": s["model"], "version": s["version"],
                                                      "step": row["step"]}, row[key]))
    for s in scores:
        gauges.append(("stmgt_forecasts_issued", "gauge", "Issued forecasts kept for scoring.",
                       {"model": s["model"], "version": s["version"]}, s["forecasts_issued"]))
    for name, state in service.forecast_state.items():
        gauges.append(("stmgt_forecast_ok", "gauge", "1 when the model's last forecast from the store succeeded"
                       " or waits for history, 0 when it failed.", {"model": name},
                       0 if state.startswith("failed") else 1))
    return gauges


def _model_router(service: Service) -> APIRouter:
    """``GET /v1/models`` and ``/v1/graph``: what is served, and a model's road graph."""
    router = _router()

    @router.get("/v1/models", summary="Served models and the store's newest observation", operation_id="get_models",
                tags=["models"], response_model=ModelsResponse, responses=_errors(422))
    def models():
        latest = service.store.latest()
        return {"models": [m.describe() for m in service.models.values()], "default": service.default,
                "store": {"latest_observation": None if latest is None else iso_utc(latest),
                          "observations": service.store.count(), "flagged": service.store.count_flagged(),
                          "retention_days": service.store.retention_s / 86400,
                          "earliest_accepted": iso_utc(service.earliest), **service.trust.describe()}}

    @router.get("/v1/graph", summary="Nodes (with coordinates where known) and edges", operation_id="get_graph",
                tags=["models"], response_model=GraphResponse, response_model_exclude_unset=True,
                responses=_errors(404, 422))
    def graph(model: Annotated[str | None, Query(description=MODEL_HELP)] = None):
        m = service.model(model)
        ei, ew = m.run.graph()
        coords = m.meta.get("coords")
        nodes = [{"id": n, **({"lat": coords[i][0], "lon": coords[i][1]} if coords else {})}
                 for i, n in enumerate(m.node_ids)]
        edges = [{"source": m.node_ids[a], "target": m.node_ids[b],
                  **({"weight": float(ew[k])} if ew is not None else {})}
                 for k, (a, b) in enumerate(zip(ei[0].tolist(), ei[1].tolist()))]
        return {"model": m.name, "has_coords": bool(coords), "nodes": nodes, "edges": edges}

    return router


MODEL_HELP = "a served model's name (GET /v1/models); default: the first served"
NODES_HELP = 'node ids separated by commas, or a JSON array (["A,1","B"]) for ids that hold commas; default: all'
SINCE_HELP = "ISO 8601 (naive times are UTC; an offset is converted) or seconds since 1970; inclusive"
LIMIT_HELP = "at most this many rows (truncated: true when more match)"


def _observation_router(service: Service) -> APIRouter:
    """``POST /v1/observations`` (ingest; the API key where set) and ``GET /v1/observations``."""
    router = _router()

    @router.post("/v1/observations", summary="Ingest a batch (idempotent upsert per node and timestamp)",
                 operation_id="post_observations", tags=["observations"], response_model=IngestResponse,
                 response_model_exclude_unset=True, responses=_errors(401, 413, 422, 503))
    def post_observations(request: Request, batch: ObservationBatch,
                          x_api_key: Annotated[str | None, Security(API_KEY)] = None):
        _need_key(service, x_api_key)
        request.state.batch = batch
        rows, covs = service.check_rows(batch.observations)
        n = service.store.ingest(rows, covs)
        service.notify()
        flagged = [i for i, r in enumerate(rows) if r[3]]
        latest = service.store.latest()
        out = {"accepted": n, "covariates": len(covs), "flagged": len(flagged),
               "latest": None if latest is None else iso_utc(latest)}
        if flagged:
            lo, hi = service.trust.ranges[rows[flagged[0]][0]]
            out["flagged_note"] = (f"{len(flagged)} reading(s) outside their road's plausible range (e.g."
                                   f" {rows[flagged[0]][0]!r}: {rows[flagged[0]][2]:g}, range {lo:.4g} .. {hi:.4g})"
                                   " were stored flagged and are treated as missing")
        if any(c[3] for c in covs):
            out["flagged_covariates"] = sum(1 for c in covs if c[3])
        return out

    @router.get("/v1/observations", summary="Stored observations (with their covariates) by node and time",
                operation_id="get_observations", tags=["observations"], response_model=ObservationsResponse,
                response_model_exclude_unset=True, responses=_errors(422))
    def get_observations(nodes: Annotated[str | None, Query(description=NODES_HELP)] = None,
                         since: Annotated[str | None, Query(description=SINCE_HELP)] = None,
                         until: Annotated[str | None, Query(description=SINCE_HELP)] = None,
                         limit: Annotated[int, Query(ge=1, le=100_000, description=LIMIT_HELP)] = 10000):
        ids = _parse_nodes(nodes, service.nodes)
        if ids:
            bad = [n for n in ids if n not in service.nodes]
            if bad:
                raise ApiError(422, f"nodes: {_short(bad[0])!r} is not a node of the served models")
        found = service.store.observations(ids, _parse_time(since, "since"), _parse_time(until, "until"), limit + 1)
        rows = found[:limit]
        covs = service.store.covariates_between(rows[0][1], rows[-1][1]) if rows else {}
        out = []
        for n, t, v, f in rows:
            o = {"timestamp": iso_utc(t), "node_id": n, "value": v, "flagged": bool(f)}
            at = covs.get(int(t))
            if at:
                o["covariates"] = {name: x for name, (x, _) in at.items()}
                bad_cov = [name for name, (_, flag) in at.items() if flag]
                if bad_cov:
                    o["flagged_covariates"] = bad_cov
            out.append(o)
        return {"observations": out, "count": len(out), "truncated": len(found) > limit}

    return router
class _EncodedBodies:
    """The JSON text of recent ``GET /v1/forecast`` answers by request (at most ``size``; the oldest goes first):
    encoding ~2,500 rows costs far more than a cache hit of the forecast itself."""

    def __init__(self, size: int = 64):
        self.size = size
        self._bodies: dict = {}  # insertion order: oldest first
        self._flights: dict = {}  # key -> the lock of the one encoding in progress
        self._lock = threading.Lock()

    def peek(self, key) -> bytes | None:
        """The body kept for ``key``, or None."""
        with self._lock:
            return self._bodies.get(key)

    def get(self, key, encode: Callable[[], bytes]) -> bytes:
        """The body kept for ``key``, else ``encode()`` (kept); concurrent requests for one key encode it once
        (the others wait for that body rather than each encoding it)."""
        with self._lock:
            body = self._bodies.get(key)
            if body is not None:
                return body
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            with self._lock:
                body = self._bodies.get(key)
            if body is None:
                try:
                    body = encode()
                    with self._lock:
                        self._bodies[key] = body
                        while len(self._bodies) > self.size:
                            self._bodies.pop(next(iter(self._bodies)))
                finally:
                    with self._lock:
                        self._flights.pop(key, None)  # also when encoding failed: the next request tries again
        return body


def _forecast_router(service: Service) -> APIRouter:
    """``GET /v1/forecast`` (from the store), ``POST /v1/forecast`` (an explicit window), ``GET /v1/scores`` and
    ``GET /v1/forecasts/history``."""
    router = _router()
    geo = {"model": ForecastResponse, "description": "The forecast: JSON, or GeoJSON with format=geojson",
           "content": {"application/geo+json": {"schema": {"$ref": "#/components/schemas/ForecastGeoJSON"}}}}

    @router.get("/v1/forecast", summary="Forecast from the latest window in the store", operation_id="get_forecast",
                tags=["forecasts"], response_class=Response, responses={200: geo, **_errors(404, 409, 422, 503)})
    def get_forecast(request: Request, model: Annotated[str | None, Query(description=MODEL_HELP)] = None,
                     nodes: Annotated[str | None, Query(description=NODES_HELP)] = None,
                     steps: Annotated[str | None, Query(description="horizon steps separated by commas (e.g."
                                                                    " 1,6,12); default: all")] = None,
                     quantiles: Annotated[str | None, Query(description="probabilities separated by commas (e.g."
                                                                        " 0.05,0.5,0.95); default: 0.05,0.1,0.5,"
                                                                        "0.9,0.95")] = None,
                     fmt: Annotated[Literal["json", "geojson"], Query(alias="format", description=(
                         "json, or geojson: a FeatureCollection (application/geo+json) for a map"))] = "json",
                     geometry: Annotated[Literal["points", "lines"], Query(description=(
                         "with format=geojson: points (a Point per node) or lines (a LineString per edge, carrying"
                         " its target node's forecast)"))] = "points"):
        m = service.model(model)
        qs = _quantiles(_parse_list(quantiles))
        sel_nodes, sel_steps = _select(m, _parse_nodes(nodes, m.node_ids), _parse_list(steps))
        if fmt != "geojson" and "geometry" in request.query_params:
            raise ApiError(422, f"geometry: {geometry} is for format=geojson only; add format=geojson or leave it out")
        if fmt == "geojson":
            lon_lat(m)  # a run without coordinates is refused before any work
        try:
            res = service.forecast(m, qs)
        except NotEnoughHistory as e:
            raise ApiError(409, str(e)) from None
        service.metrics.forecast(m.name, res["compute_ms"] / 1000, res["cached"])
        media = "application/geo+json" if fmt == "geojson" else "application/json"
        return Response(service.forecast_bytes(m, res, qs, sel_nodes, sel_steps, fmt, geometry), media_type=media)

    @router.post("/v1/forecast", summary="Forecast from an explicit window of observations",
                 operation_id="post_forecast", tags=["forecasts"], response_class=Response,
                 responses={200: {"model": ForecastResponse, "description": "The forecast"},
                            **_errors(404, 413, 422)})
    def post_forecast(req: WindowRequest):
        m = service.model(req.model)
        qs = _quantiles(req.quantiles)
        sel_nodes, sel_steps = _select(m, req.nodes, req.steps)
        try:
            res = m.forecast_window(service.frame(req.observations), qs)
        except StmgtError as e:
            raise ApiError(422, str(e)) from None
        service.metrics.forecast(m.name, res["compute_ms"] / 1000, False)
        body = json.dumps(forecast_body(m, res, qs, sel_nodes, sel_steps), separators=(",", ":"))
        return Response(body, media_type="application/json")

    @router.get("/v1/scores", summary="Live MAE per step and interval coverage of issued forecasts",
                operation_id="get_scores", tags=["forecasts"], response_model=ScoresResponse,
                responses=_errors(404, 422))
    def scores(model: Annotated[str | None, Query(description="a served model's name; default: every model")]
               = None):
        ms = [service.model(model)] if model else list(service.models.values())
        return {"scores": [service.scores(m) for m in ms]}

    @router.get("/v1/forecasts/history", summary="Issued forecasts with the observations they were scored against",
                operation_id="get_forecast_history", tags=["forecasts"], response_model=HistoryResponse,
                responses=_errors(404, 422))
    def forecast_history(model: Annotated[str | None, Query(description=MODEL_HELP)] = None,
                         nodes: Annotated[str | None, Query(description=NODES_HELP)] = None,
                         since: Annotated[str | None, Query(description="issues whose window ends at or after"
                                                                        " this; " + SINCE_HELP)] = None,
                         until: Annotated[str | None, Query(description="issues whose window ends at or before"
                                                                        " this; " + SINCE_HELP)] = None,
                         version: Annotated[str | None, Query(description="a model version (GET /v1/models);"
                                                                          " default: the served one")] = None,
                         limit: Annotated[int, Query(ge=1, le=100_000, description=LIMIT_HELP)] = 10000):
        m = service.model(model)
        ids, _ = _select(m, _parse_nodes(nodes, m.node_ids), None)
        v = version or m.version
        found = service.store.forecast_history(m.name, v, m.interval_s, ids, _parse_time(since, "since"),
                                               _parse_time(until, "until"), limit + 1)
        names = [f"{q:g}" for q in STORED_QUANTILES]

        def num(x):
            return None if x is None or not math.isfinite(x) else round(float(x), 4)

        rows = [{"window_end": iso_utc(end), "issued_at": iso_utc(created), "step": int(step),
                 "timestamp": iso_utc(target), "node_id": str(node), "mean": num(mean),
                 "quantiles": {k: num(x) for k, x in zip(names, qv)},
                 "observed": None if obs is None else float(obs)}
                for end, created, step, node, target, mean, *qv, obs in found[:limit]]
        return {"model": m.name, "version": v, "interval_minutes": m.meta["interval_minutes"], "forecasts": rows,
                "count": len(rows), "truncated": len(found) > limit}

    return router


def _validation_message(errors) -> str:
    """Pydantic's errors as one line naming the first bad row index and field."""
    e = errors[0]
    loc = [x for x in e.get("loc", ()) if x not in ("body", "query")]
    where = ""
    for x in loc:
        where += f"[{x}]" if isinstance(x, int) else (f".{x}" if where else str(x))
    msg = e.get("msg", "invalid").removeprefix("Value error, ")
    row = next((x for x in loc if isinstance(x, int)), None)
    tail = f"; row {row} rejected" if row is not None else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where or 'body'}: {msg}{tail}{more}"


def static_files() -> list[Path]:
    """The dashboard's files (HTML, JS, CSS) inside the package."""
    return sorted(Path(str(p)) for p in _static().iterdir() if p.is_file())
