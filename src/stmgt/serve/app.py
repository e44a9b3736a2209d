"""The HTTP routes of ``stmgt serve`` (FastAPI): observations in, calibrated forecasts out.

======  ======================  ==============================================================
GET     ``/``                   the dashboard (a map of the roads, coloured by forecast)
GET     ``/healthz``            the process answers
GET     ``/readyz``             models loaded, store reachable, no failing forecast (503 otherwise)
GET     ``/metrics``            Prometheus text: requests, latency, forecast time, rows, store size, scores
GET     ``/openapi.json``       the API description (no /docs page: it would load scripts from a CDN)
GET     ``/v1/models``          served models (name, version, horizon, ...) and the store's newest time
GET     ``/v1/graph``           nodes (with coordinates where known) and edges of a model
POST    ``/v1/observations``    a batch of ``{timestamp, node_id, value, covariates?}`` (API key if set)
GET     ``/v1/observations``    stored observations (``nodes``, ``since``, ``until``, ``limit``)
GET     ``/v1/forecast``        forecast from the latest window in the store (cached; stored for scoring)
POST    ``/v1/forecast``        forecast from an explicit window of observations
GET     ``/v1/scores``          live MAE per step and 80%/90% interval coverage of issued forecasts
======  ======================  ==============================================================

Every refusal answers ``{"detail": "<one line>"}``: 401 without the API key (checked before the
body is read), 404 for an unknown model, 409 when the store does not hold the model's history
yet, 413 for a body over the limit (counted while it streams, chunked or not), 422 for a bad
request (naming the row index and field of a bad observation, or the query parameter), 503 when
the store cannot write. Every answer carries a ``Content-Security-Policy`` that allows scripts
from this service's ``/static`` files only (no inline script).
"""

from __future__ import annotations

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
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stmgt.errors import StmgtError
from stmgt.predict import QUANTILES, quantile_column
from stmgt.serve.forecasting import ForecastFailed, NotEnoughHistory, ServedModel, load_models
from stmgt.serve.metrics import Metrics
from stmgt.serve.scoring import Scorer
from stmgt.serve.store import Store, StoreUnavailable, from_seconds, to_seconds
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


def iso_seconds(s: int) -> str:
    """Seconds since 1970 as ISO 8601 (any year 1..9999, unlike pandas)."""
    return (_EPOCH + timedelta(seconds=int(s))).isoformat()


class ApiError(Exception):
    """A refusal: HTTP ``status`` with a one-line ``detail``."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, " ".join(str(detail).split())


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
                raise ApiError(422, f"{field}[{i}].timestamp: {ts.isoformat()} is more than"
                                    f" {self.max_future.total_seconds() / 3600:g} h ahead of the server clock"
                                    f" ({now:%Y-%m-%dT%H:%M}, --max-future-hours); row {i} rejected")
            if ts < self.earliest:
                raise ApiError(422, f"{field}[{i}].timestamp: {ts.isoformat()} is before {self.earliest:%Y-%m-%d},"
                                    f" the earliest time accepted (--earliest); row {i} rejected")
            s = (ts - _EPOCH) // _SECOND
            v = float(o.value)
            prev = seen.get((o.node_id, s))
            if prev is not None:
                if prev[1] != v:
                    raise ApiError(422, f"{field}[{i}]: node {_short(o.node_id)!r} at {ts.isoformat()} is also row"
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
                        raise ApiError(422, f"{field}[{i}].covariates.{name}: {x:g} at {ts.isoformat()}, but row"
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
            self._pending.wait(timeout=5)
            if self._stop.is_set():
                return
            if not self._pending.is_set():
                continue
            self._stop.wait(self.settle)  # let a burst of batches settle into one forecast
            self._pending.clear()
            self.issue_all()

    def issue_all(self) -> int:
        """Compute (or take from the cache) every model's forecast from the store; the number issued."""
        n = 0
        for m in self.models.values():
            try:
                r = self.forecast(m)
                self.metrics.forecast(m.name, r["compute_ms"] / 1000, r["cached"])
                n += 1
            except NotEnoughHistory:
                pass
            except Exception:  # keep issuing for the other models; the error is logged
                log.exception("forecast of %s failed", m.name)
        return n

    def forecast(self, m: ServedModel, quantiles=QUANTILES) -> dict:
        """``m``'s forecast from the store, its outcome kept for ``/readyz`` and counted in ``/metrics``."""
        try:
            r = m.forecast_from_store(self.store, quantiles)
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
        self.forecast_state[m.name] = "ok"
        return r

    def _failed(self, m: ServedModel, why: str) -> None:
        self.forecast_state[m.name] = "failed: " + " ".join(why.split())
        self.metrics.count("stmgt_forecast_failures_total", {"model": m.name})


# ---------------------------------------------------------------------------- formatting
def _iso(ts) -> str:
    return pd.Timestamp(ts).isoformat()


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
        raise ApiError(422, f"{what}: {_short(text)!r} is not a timestamp (ISO 8601, e.g. 2024-01-03T08:00,"
                            " or seconds since 1970)")
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
    """The JSON answer of a forecast: per (step, node) the mean, std and requested quantiles."""
    t = res["table"]
    if nodes:
        t = t[t["node_id"].isin(nodes)]
    if steps:
        t = t[t["step"].isin(steps)]
    cols = [quantile_column(q) for q in quantiles]
    ts = [_iso(x) for x in t["timestamp"]]
    qv = t[cols].to_numpy(np.float64).round(4).tolist()
    rows = [{"step": int(s), "timestamp": tt, "node_id": str(n), "mean": round(float(mu), 4),
             "std": round(float(sd), 4), "quantiles": {f"{q:g}": v for q, v in zip(quantiles, qq)}}
            for s, tt, n, mu, sd, qq in zip(t["step"].tolist(), ts, t["node_id"].tolist(), t["mean"].tolist(),
                                            t["std"].tolist(), qv)]
    roads = [{**r, "last_observed_at": None if r["last_observed"] is None else iso_seconds(r["last_observed"])}
             for r in res.get("roads", []) if not nodes or r["node_id"] in nodes]
    for r in roads:
        del r["last_observed"]
    return {"model": model.name, "version": model.version, "window_end": _iso(from_seconds(res["window_end"])),
            "issued_at": _iso(res["issued_at"]), "compute_ms": round(res["compute_ms"], 3),
            "cached": res["cached"], "units": model.meta.get("units", ""),
            "interval_minutes": model.meta["interval_minutes"], "calibrated": model.calibrated,
            "quantiles": [float(q) for q in quantiles], "roads": roads, "forecasts": rows}


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
    return app


def _static():
    """The dashboard's folder inside the package (a :mod:`importlib.resources` traversable)."""
    return resources.files("stmgt.serve") / "static"


def _lifespan(service: Service):
    """The app's lifespan: the background forecast issuer runs while the app serves."""

    @asynccontextmanager
    async def lifespan(app):
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


class _Gate:
    """The outermost layer of the app (plain ASGI), before anything reads a body:

    * a write route without the right ``X-API-Key`` is refused (401) before a byte of its body is read;
    * a body is counted while it streams (``Content-Length`` or chunked): over ``max_body`` bytes it is
      refused (413) and the rest is never read; under it, the route reads it from memory;
    * every answer gets :data:`SECURITY_HEADERS`; every request is counted and timed by route template.
    """

    def __init__(self, app, service: Service):
        self.app, self.service = app, service
        self.max_body = service.max_batch * 1024 + 65536

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


def _dashboard_router() -> APIRouter:
    """``GET /``: the dashboard page (its scripts and styles are mounted at ``/static``)."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(_static() / "index.html"), media_type="text/html")

    return router


def _health_router(service: Service) -> APIRouter:
    """``GET /healthz``, ``/readyz`` and ``/metrics``: for probes and Prometheus."""
    router = APIRouter()

    @router.get("/healthz", summary="The process answers")
    def healthz():
        return {"status": "ok"}

    @router.get("/readyz", summary="Models loaded and store reachable")
    def readyz():
        ok_store = service.store.ping()
        ok_models = all(m.run.model() is not None for m in service.models.values())
        states = dict(service.forecast_state)
        ok_forecasts = not any(v.startswith("failed") for v in states.values())
        body = {"ready": ok_store and ok_models and ok_forecasts, "store": ok_store, "models": ok_models,
                "forecasts": states}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
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
    scores = [service.scorer.scores(m) for m in service.models.values()]
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
    router = APIRouter()

    @router.get("/v1/models", summary="Served models and the store's newest observation")
    def models():
        latest = service.store.latest()
        return {"models": [m.describe() for m in service.models.values()], "default": service.default,
                "store": {"latest_observation": None if latest is None else iso_seconds(latest),
                          "observations": service.store.count(), "flagged": service.store.count_flagged(),
                          "retention_days": service.store.retention_s / 86400,
                          "earliest_accepted": service.earliest.isoformat(), **service.trust.describe()}}

    @router.get("/v1/graph", summary="Nodes (with coordinates where known) and edges")
    def graph(model: str | None = None):
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


def _observation_router(service: Service) -> APIRouter:
    """``POST /v1/observations`` (ingest; the API key where set) and ``GET /v1/observations``."""
    router = APIRouter()

    @router.post("/v1/observations", summary="Ingest a batch (idempotent upsert per node and timestamp)")
    def post_observations(request: Request, batch: ObservationBatch,
                          x_api_key: Annotated[str | None, Header()] = None):
        _need_key(service, x_api_key)
        request.state.batch = batch
        rows, covs = service.check_rows(batch.observations)
        n = service.store.ingest(rows, covs)
        service.notify()
        flagged = [i for i, r in enumerate(rows) if r[3]]
        latest = service.store.latest()
        out = {"accepted": n, "covariates": len(covs), "flagged": len(flagged),
               "latest": None if latest is None else iso_seconds(latest)}
        if flagged:
            lo, hi = service.trust.ranges[rows[flagged[0]][0]]
            out["flagged_note"] = (f"{len(flagged)} reading(s) outside their road's plausible range (e.g."
                                   f" {rows[flagged[0]][0]!r}: {rows[flagged[0]][2]:g}, range {lo:.4g} .. {hi:.4g})"
                                   " were stored flagged and are treated as missing")
        if any(c[3] for c in covs):
            out["flagged_covariates"] = sum(1 for c in covs if c[3])
        return out

    @router.get("/v1/observations", summary="Stored observations by node and time")
    def get_observations(nodes: str | None = None, since: str | None = None, until: str | None = None,
                         limit: int = 10000):
        ids = _parse_nodes(nodes, service.nodes)
        if ids:
            bad = [n for n in ids if n not in service.nodes]
            if bad:
                raise ApiError(422, f"nodes: {_short(bad[0])!r} is not a node of the served models")
        if not 1 <= limit <= 100_000:
            raise ApiError(422, f"limit: {limit} is outside 1..100000")
        rows = service.store.observations(ids, _parse_time(since, "since"), _parse_time(until, "until"), limit + 1)
        out = [{"timestamp": iso_seconds(t), "node_id": n, "value": v, "flagged": bool(f)}
               for n, t, v, f in rows[:limit]]
        return {"observations": out, "count": len(out), "truncated": len(rows) > limit}

    return router


class _EncodedBodies:
    """The JSON text of recent ``GET /v1/forecast`` answers by request (at most ``size``; the oldest goes first):
    encoding ~2,500 rows costs far more than a cache hit of the forecast itself."""

    def __init__(self, size: int = 64):
        self.size = size
        self._bodies: dict = {}  # insertion order: oldest first
        self._lock = threading.Lock()

    def get(self, key, encode: Callable[[], bytes]) -> bytes:
        """The body kept for ``key``, else ``encode()`` (kept)."""
        with self._lock:
            body = self._bodies.get(key)
        if body is None:
            body = encode()
            with self._lock:
                self._bodies[key] = body
                while len(self._bodies) > self.size:
                    self._bodies.pop(next(iter(self._bodies)))
        return body


def _forecast_router(service: Service) -> APIRouter:
    """``GET /v1/forecast`` (from the store), ``POST /v1/forecast`` (an explicit window) and ``GET /v1/scores``."""
    router = APIRouter()
    bodies = _EncodedBodies()

    @router.get("/v1/forecast", summary="Forecast from the latest window in the store")
    def get_forecast(model: str | None = None, nodes: str | None = None, steps: str | None = None,
                     quantiles: str | None = None):
        m = service.model(model)
        qs = _quantiles(_parse_list(quantiles))
        sel_nodes, sel_steps = _select(m, _parse_nodes(nodes, m.node_ids), _parse_list(steps))
        try:
            res = service.forecast(m, qs)
        except NotEnoughHistory as e:
            raise ApiError(409, str(e)) from None
        service.metrics.forecast(m.name, res["compute_ms"] / 1000, res["cached"])
        key = (m.name, res["window_end"], res["issued_at"], res["cached"], tuple(qs), tuple(sel_nodes or ()),
               tuple(sel_steps or ()))
        body = bodies.get(key, lambda: json.dumps(forecast_body(m, res, qs, sel_nodes, sel_steps),
                                                  separators=(",", ":")).encode())
        return Response(body, media_type="application/json")

    @router.post("/v1/forecast", summary="Forecast from an explicit window of observations")
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

    @router.get("/v1/scores", summary="Live MAE per step and interval coverage of issued forecasts")
    def scores(model: str | None = None):
        ms = [service.model(model)] if model else list(service.models.values())
        return {"scores": [service.scorer.scores(m) for m in ms]}

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
