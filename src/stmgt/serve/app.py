"""The HTTP routes of ``stmgt serve`` (FastAPI): observations in, calibrated forecasts out.

======  ======================  ==============================================================
GET     ``/``                   the dashboard (a map of the roads, coloured by forecast)
GET     ``/healthz``            the process answers
GET     ``/readyz``             models loaded and the store reachable (503 otherwise)
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

Every refusal answers ``{"detail": "<one line>"}``: 401 without the API key, 404 for an unknown
model, 409 when the store does not hold the model's history yet, 422 for a bad request (naming
the row index and field of a bad observation).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
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
from stmgt.serve.forecasting import NotEnoughHistory, ServedModel, load_models
from stmgt.serve.metrics import Metrics
from stmgt.serve.scoring import Scorer
from stmgt.serve.store import Store, from_seconds, to_seconds

log = logging.getLogger("stmgt.serve")
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
_EPOCH, _SECOND = datetime(1970, 1, 1), timedelta(seconds=1)


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
                 score_window_hours: float = 24.0, auto_forecast: bool = True, settle_seconds: float = 0.5):
        self.models: dict[str, ServedModel] = load_models(list(run_dirs))
        self.default = next(iter(self.models))
        self.store = Store(db, retention_days=retention_days)
        self.metrics = Metrics()
        self.scorer = Scorer(self.store, score_window_hours)
        self.api_key = api_key or None
        self.max_batch = max_batch
        self.max_future = timedelta(hours=max_future_hours)
        self.auto_forecast = auto_forecast
        self.settle = settle_seconds
        first = self.models[self.default]
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
        """Validate a batch (size, nodes, future, covariate names) -> ``(rows, covariates)`` for the store."""
        if len(obs) > self.max_batch:
            raise ApiError(422, f"{field}: {len(obs)} rows in one batch; at most {self.max_batch} (split the batch)")
        if not obs:
            raise ApiError(422, f"{field}: the batch is empty; send at least one observation")
        horizon = datetime.now(timezone.utc).replace(tzinfo=None) + self.max_future
        rows, covs = [], []
        for i, o in enumerate(obs):
            if o.node_id not in self.nodes:
                raise ApiError(422, f"{field}[{i}].node_id: {o.node_id!r} is not a node of the served models"
                                    f" ({len(self.nodes)} nodes, e.g. {self.node_ids[0]!r}); row {i} rejected")
            ts = o.timestamp
            if ts.tzinfo is not None:
                ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
            if ts > horizon:
                raise ApiError(422, f"{field}[{i}].timestamp: {ts.isoformat()} is more than"
                                    f" {self.max_future.total_seconds() / 3600:g} h ahead of the server clock"
                                    f" ({datetime.now(timezone.utc).replace(tzinfo=None):%Y-%m-%dT%H:%M}); row {i}"
                                    " rejected")
            s = (ts - _EPOCH) // _SECOND
            rows.append((o.node_id, s, float(o.value)))
            for name, v in (o.covariates or {}).items():
                if name not in self.covariates:
                    raise ApiError(422, f"{field}[{i}].covariates.{name}: not a covariate of the served models"
                                        f" ({', '.join(self.covariates) or 'none'}); row {i} rejected")
                covs.append((s, name, float(v)))
        return rows, covs

    def frame(self, obs: list[Observation]) -> pd.DataFrame:
        """An explicit window as the long table :func:`stmgt.predict.panel_from_frame` reads."""
        rows, covs = self.check_rows(obs)
        df = pd.DataFrame(rows, columns=["node_id", "ts", "value"])
        for name in self.covariates:
            d = {s: v for s, n, v in covs if n == name}
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
                r = m.forecast_from_store(self.store)
                self.metrics.forecast(m.name, r["compute_ms"] / 1000, r["cached"])
                n += 1
            except NotEnoughHistory:
                pass
            except Exception:  # keep issuing for the other models; the error is logged
                log.exception("forecast of %s failed", m.name)
        return n


# ---------------------------------------------------------------------------- formatting
def _iso(ts) -> str:
    return pd.Timestamp(ts).isoformat()


def _parse_list(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_time(text: str | None, what: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(float(text)) if text.replace(".", "", 1).isdigit() else to_seconds(pd.Timestamp(text))
    except (ValueError, TypeError):
        raise ApiError(422, f"{what}: {text!r} is not a timestamp (ISO 8601, e.g. 2024-01-03T08:00,"
                            " or seconds since 1970)") from None


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
            raise ApiError(422, f"nodes: {bad[0]!r} is not a node of model {model.name}")
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
    return {"model": model.name, "version": model.version, "window_end": _iso(from_seconds(res["window_end"])),
            "issued_at": _iso(res["issued_at"]), "compute_ms": round(res["compute_ms"], 3),
            "cached": res["cached"], "units": model.meta.get("units", ""),
            "interval_minutes": model.meta["interval_minutes"], "calibrated": model.calibrated,
            "quantiles": [float(q) for q in quantiles], "forecasts": rows}


# ---------------------------------------------------------------------------- the app
def create_app(service: Service) -> FastAPI:
    """The FastAPI application of a :class:`Service` (routes in the module docstring)."""
    app = FastAPI(title="stmgt serve", version=__import__("stmgt").__version__, docs_url=None, redoc_url=None,
                  lifespan=_lifespan(service), description="Live observations in, calibrated traffic forecasts out.")
    app.state.service = service
    app.mount("/static", StaticFiles(directory=str(_static())), name="static")
    _add_error_handlers(app)
    _add_request_metrics(app, service)
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


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as ``{"detail": "<one line>"}``: an :class:`ApiError` with its status, a bad request 422."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return JSONResponse({"detail": _validation_message(e.errors())}, status_code=422)


def _add_request_metrics(app: FastAPI, service: Service) -> None:
    """Count and time every request by route; refuse a POST body over the batch limit before reading it."""
    max_body = service.max_batch * 1024 + 65536

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        t0 = time.perf_counter()
        if request.method == "POST":
            n = request.headers.get("content-length")
            if n is not None and n.isdigit() and int(n) > max_body:
                resp = JSONResponse({"detail": f"body: {int(n)} bytes; at most {max_body} (at most"
                                               f" {service.max_batch} observations per batch)"}, status_code=422)
                service.metrics.request(request.url.path if request.url.path.startswith("/v1/") else "other",
                                        request.method, 422, time.perf_counter() - t0)
                return resp
        resp = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        service.metrics.request(path, request.method, resp.status_code, time.perf_counter() - t0)
        return resp


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
        body = {"ready": ok_store and ok_models, "store": ok_store, "models": ok_models}
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
              ("stmgt_store_observations", "gauge", "Observation rows kept in the store.", {}, st.count()),
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
    return gauges


def _model_router(service: Service) -> APIRouter:
    """``GET /v1/models`` and ``/v1/graph``: what is served, and a model's road graph."""
    router = APIRouter()

    @router.get("/v1/models", summary="Served models and the store's newest observation")
    def models():
        latest = service.store.latest()
        return {"models": [m.describe() for m in service.models.values()], "default": service.default,
                "store": {"latest_observation": None if latest is None else _iso(from_seconds(latest)),
                          "observations": service.store.count(), "retention_days": service.store.retention_s / 86400}}

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
    def post_observations(batch: ObservationBatch, x_api_key: Annotated[str | None, Header()] = None):
        _need_key(service, x_api_key)
        rows, covs = service.check_rows(batch.observations)
        n = service.store.ingest(rows, covs)
        service.notify()
        return {"accepted": n, "covariates": len(covs), "latest": _iso(from_seconds(service.store.latest()))}

    @router.get("/v1/observations", summary="Stored observations by node and time")
    def get_observations(nodes: str | None = None, since: str | None = None, until: str | None = None,
                         limit: int = 10000):
        ids = _parse_list(nodes)
        if ids:
            bad = [n for n in ids if n not in service.nodes]
            if bad:
                raise ApiError(422, f"nodes: {bad[0]!r} is not a node of the served models")
        if not 1 <= limit <= 100_000:
            raise ApiError(422, f"limit: {limit} is outside 1..100000")
        rows = service.store.observations(ids, _parse_time(since, "since"), _parse_time(until, "until"), limit + 1)
        out = [{"timestamp": _iso(from_seconds(t)), "node_id": n, "value": v} for n, t, v in rows[:limit]]
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
        sel_nodes, sel_steps = _select(m, _parse_list(nodes), _parse_list(steps))
        try:
            res = m.forecast_from_store(service.store, qs)
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
