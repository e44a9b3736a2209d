"""Served models and their forecasts: the same code path as ``stmgt predict``.

Both build the input panel with :func:`stmgt.predict.panel_from_frame` and forecast with
:func:`stmgt.predict.forecast_table` (calibration applied, exact mixture quantiles), so the
service and the command line give the same numbers for the same window.

A :class:`ServedModel` is a run folder loaded once (weights, scalers, graph, calibration). Its
forecast from the store is computed **once per window** (the ``history`` steps ending at the newest
step a quarter of the roads have reached) and kept in memory with its mixture, so that any set of
quantiles is answered without running the model again. With the service's background issuer
running, reads never compute: they answer the newest forecast the issuer has finished (``pending``
says when a newer window, or a late row inside the current one, awaits it), and a late row
triggers one recomputation, not one per request. Without an issuer (``auto_forecast`` off), the
first read of a window computes it, once, while concurrent readers of that window wait for it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import torch

from stmgt.errors import DataError, RunError, StmgtError
from stmgt.forecaster import TrainedRun
from stmgt.paths import sha256_file
from stmgt.predict import (
    MIN_COVERAGE,
    QUANTILES,
    ROW_COLUMNS,
    distribution_table,
    forecast_distribution,
    panel_from_frame,
    quantile_column,
)
from stmgt.serve.store import STORED_QUANTILES, Store, from_seconds, to_seconds
from stmgt.serve.trust import road_status


def _now() -> pd.Timestamp:
    """The server's UTC wall clock in whole seconds (naive), as answers report ``issued_at``."""
    return pd.Timestamp.now("UTC").floor("s").tz_localize(None)


class NotEnoughHistory(StmgtError):
    """The store does not (yet) hold the model's history window (HTTP 409)."""


class ForecastFailed(NotEnoughHistory):
    """The store holds a window, but no forecast can be made from it (HTTP 409; ``/readyz`` not ready)."""


class CachedRun(TrainedRun):
    """A :class:`~stmgt.forecaster.TrainedRun` whose model, metadata, scalers, graph and calibration are read once
    (a served run is fixed: retrain or recalibrate, then restart the service)."""

    def __init__(self, directory):
        super().__init__(directory)
        self._memo: dict = {}

    def _once(self, key, read):
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key]

    def meta(self) -> dict:
        """``data.json`` (read once)."""
        return self._once("meta", super().meta)

    def graph(self):
        """``graph.npz`` (read once)."""
        return self._once("graph", super().graph)

    def scalers(self):
        """The scalers (read once)."""
        return self._once("scalers", super().scalers)

    def model(self):
        """The trained model in eval mode (loaded once)."""
        return self._once("model", super().model)

    def calibrator(self):
        """``calibration.json`` (read once)."""
        return self._once("calibrator", super().calibrator)


def model_version(run_dir: Path) -> str:
    """A short hash of ``model.safetensors`` (12 hex digits); for runs without weights, of ``training.json``."""
    for name in ("model.safetensors", "training.json", "config.yaml"):
        p = Path(run_dir) / name
        if p.is_file():
            return sha256_file(p)[:12]
    raise RunError(f"{run_dir}: no model.safetensors; is this a finished `stmgt train` run folder?")


class ServedModel:
    """One run folder served under ``name`` (the folder's name) and ``version`` (a hash of its weights)."""

    def __init__(self, run_dir: str | Path, name: str | None = None):
        self.dir = Path(run_dir)
        self.run = CachedRun(self.dir)
        self.meta = self.run.meta()
        self.name = name or self.dir.resolve().name
        self.version = model_version(self.dir)
        self.model_name = self.run.config().model.name
        self.node_ids = [str(n) for n in self.meta["node_ids"]]
        self.history, self.horizon = int(self.meta["history"]), int(self.meta["horizon"])
        self.interval_s = int(round(self.meta["interval_minutes"] * 60))
        self.covariates = list(self.meta["covariate_names"])
        self.calibrated = self.run.calibrator() is not None
        self._lock = threading.RLock()  # one model computation at a time per model
        self._compute_lock = threading.Lock()  # one computation of the store's window at a time
        self._cache_lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()  # window end -> kept forecast (the last few windows)
        self._newest: dict | None = None  # the kept forecast of the newest window
        #: the quantiles every kept forecast holds: the API's default and those stored for live scoring
        self.kept_quantiles = tuple(sorted(set(QUANTILES) | set(STORED_QUANTILES)))
        self._latest_memo = None  # (store revision, store, window_latest)
        self.warm_up()  # load now (weights, lazily compiled kernels): /readyz means ready to forecast

    def warm_up(self) -> None:
        """One forecast of a flat dummy window, so that the first real request does not pay for loading."""
        scaler, cov_scaler = self.run.scalers()
        df = pd.DataFrame({"timestamp": pd.Timestamp("2024-01-01"), "node_id": self.node_ids,
                           "value": float(scaler.mean[0])})
        for i, name in enumerate(self.covariates):
            df[name] = float(cov_scaler.mean[i]) if cov_scaler is not None else 0.0
        self.forecast_frame(df, "warm-up", QUANTILES, min_coverage=0.0)

    def describe(self) -> dict:
        """What ``GET /v1/models`` says about this model."""
        return {"name": self.name, "version": self.version, "model": self.model_name, "run_dir": str(self.dir),
                "nodes": len(self.node_ids), "history": self.history, "horizon": self.horizon,
                "interval_minutes": self.meta["interval_minutes"], "covariates": self.covariates,
                "units": self.meta.get("units", ""), "calibrated": self.calibrated,
                # the training data's mean and std of the value (the run's scaler): the map's default colour scale
                "training_values": {"mean": float(self.meta["scaler"]["mean"][0]),
                                    "std": float(self.meta["scaler"]["std"][0])}}

    # ------------------------------------------------------------------ forecasting
    def forecast_frame(self, df: pd.DataFrame, source: str, quantiles,
                       min_coverage: float = MIN_COVERAGE) -> tuple[pd.DataFrame, float]:
        """``forecast_table`` of the panel built from long-format rows; (table, compute milliseconds)."""
        dist, panel, ms = self._distribution(df, source, min_coverage)
        return distribution_table(dist, panel, self.meta["interval_minutes"], quantiles), ms

    def _distribution(self, df: pd.DataFrame, source: str, min_coverage: float = MIN_COVERAGE):
        """The calibrated forecast mixture ``[1, H, N]`` of the window in long-format rows; (mixture, panel,
        compute milliseconds).

        A live service forecasts long after its training data end and keeps forecasting roads whose sensor
        is silent (``allow_gap``, ``allow_missing_nodes`` of :func:`~stmgt.predict.panel_from_frame`); a
        window with less than ``min_coverage`` of its cells observed is still refused (HTTP 409).
        """
        t0 = time.perf_counter()
        with self._lock:  # one forecast at a time per model keeps the service CPU-light
            panel = panel_from_frame(self.run, df, source, min_coverage=min_coverage, allow_missing_nodes=True,
                                     allow_gap=True, warn=lambda message: None)
            dist = forecast_distribution(self.run, panel)
        return dist, panel, (time.perf_counter() - t0) * 1000

    def window_bounds(self, latest: int) -> tuple[int, int]:
        """``(first bin start, last bin start)`` of the history window ending at ``latest``'s bin."""
        end = latest - latest % self.interval_s
        return end - (self.history - 1) * self.interval_s, end

    def forecast_from_store(self, store: Store, quantiles=QUANTILES, compute: bool = True) -> dict:
        """The forecast of the store's current window, computed once per window and stored for live scoring.

        ``compute=False`` (reads while the background issuer runs) never runs the model when a forecast is
        in memory: it answers the newest one, with ``pending`` True when the current window (a new step, or
        a late row inside it) awaits the issuer. Returns a dict with ``table`` (the
        :func:`~stmgt.predict.forecast_table` rows with ``quantiles``), ``window_end``, ``issued_at`` (UTC wall
        clock, when computed, whole seconds), ``compute_ms``, ``cached``, ``pending``, ``roads`` and ``revision``
        (the store revision the forecast was computed from: two forecasts of one window differ in it).
        """
        qs = tuple(float(q) for q in quantiles)
        latest = self.window_latest(store)
        if latest is None:
            raise NotEnoughHistory(f"the store holds no observations of model {self.name}'s nodes yet;"
                                   " POST /v1/observations first")
        lo, end = self.window_bounds(latest)
        entry = self._current(store, lo, end)
        if entry is not None:
            return self._answer(entry, qs, cached=True, pending=False)
        if not compute:
            with self._cache_lock:
                newest = self._newest
            if newest is not None:
                return self._answer(newest, qs, cached=True, pending=True)
        with self._compute_lock:  # one computation per window: concurrent readers wait for it, then read it
            entry = self._current(store, lo, end)
            if entry is not None:
                return self._answer(entry, qs, cached=True, pending=False)
            return self._answer(self._compute(store, lo, end), qs, cached=False, pending=False)

    def _current(self, store: Store, lo: int, end: int) -> dict | None:
        """The kept forecast of the window ``[lo, end]`` if no row has been written into it since, else None."""
        with self._cache_lock:
            entry = self._entries.get(end)
        if entry is None or store.written_since(entry["seq"], lo):
            return None
        return entry

    def _answer(self, entry: dict, qs: tuple, cached: bool, pending: bool) -> dict:
        """What a reader gets from a kept forecast: its table with the quantiles ``qs`` (a set not kept yet is
        computed from the kept mixture, not from the model)."""
        with self._cache_lock:
            table = entry["tables"].get(qs)
        if table is None:
            base = entry["tables"][self.kept_quantiles]
            extra = [q for q in qs if q not in self.kept_quantiles]
            table = base.drop(columns=[quantile_column(q) for q in self.kept_quantiles if q not in qs])
            if extra:
                with torch.no_grad():
                    more = entry["dist"].icdf(torch.tensor(extra))[0].numpy()  # [H, N, Q]: rows step-major
                for i, q in enumerate(extra):
                    table[quantile_column(q)] = more[..., i].reshape(-1)
            table = table[[*ROW_COLUMNS, *[quantile_column(q) for q in qs]]]
            with self._cache_lock:
                if len(entry["tables"]) < 16:
                    entry["tables"][qs] = table
        return {"table": table, "window_end": entry["window_end"], "issued_at": entry["issued_at"],
                "compute_ms": entry["compute_ms"], "roads": entry["roads"], "cached": cached, "pending": pending,
                "revision": entry["seq"]}

    def window_latest(self, store: Store) -> int | None:
        """Where the window ends: the newest time that at least a quarter of the roads have reached (so that one
        road stamped ahead of the others, a wrong clock, does not move the whole city's window into an empty
        future). Recomputed once per store revision, from the store's in-memory per-road latest times."""
        seq = store.seq
        memo = self._latest_memo
        if memo is not None and memo[0] == seq and memo[1] is store:
            return memo[2]
        per_node = sorted(store.latest_per_node(self.node_ids).values(), reverse=True)
        k = max(1, -(-len(self.node_ids) // 4))
        latest = per_node[min(k, len(per_node)) - 1] if per_node else None
        self._latest_memo = (seq, store, latest)
        return latest

    def _compute(self, store: Store, lo: int, end: int) -> dict:
        seq = store.seq
        earliest = store.earliest()
        if earliest is None or earliest > lo:
            steps = 0 if earliest is None else (end - (earliest - earliest % self.interval_s)) // self.interval_s + 1
            raise NotEnoughHistory(
                f"model {self.name} needs {self.history} steps of history ({self.meta['interval_minutes']:g} min"
                f" each) ending {from_seconds(end)}; the store holds {steps} step(s) from {from_seconds(earliest)};"
                f" send observations from {from_seconds(lo)} on")
        df = store.window_frame(self.node_ids, lo, end + self.interval_s, self.covariates)
        try:
            dist, panel, ms = self._distribution(df, "store")
        except DataError as e:
            raise ForecastFailed(str(e).replace("store: ", "the store: ", 1)) from None
        table = distribution_table(dist, panel, self.meta["interval_minutes"], self.kept_quantiles)
        last = store.last_observed(self.node_ids, min(lo, end - 86400), end + self.interval_s)
        flagged = store.flagged_in(self.node_ids, lo, end + self.interval_s)
        entry = {"tables": {self.kept_quantiles: table}, "dist": dist, "panel": panel, "window_end": end,
                 "issued_at": _now(), "compute_ms": ms, "seq": seq,
                 "roads": self.roads(df, lo, end, last, flagged)}
        store.save_forecast(self.name, self.version, end, table, ms)
        with self._cache_lock:
            self._entries[end] = entry
            self._entries.move_to_end(end)
            while len(self._entries) > 4:
                self._entries.popitem(last=False)
            if self._newest is None or end >= self._newest["window_end"]:
                self._newest = entry
        return entry

    def forecast_window(self, rows: pd.DataFrame, quantiles=QUANTILES) -> dict:
        """The forecast from an explicit window of long-format rows (not stored, not cached)."""
        qs = tuple(float(q) for q in quantiles)
        table, ms = self.forecast_frame(rows, "window", qs)
        end = to_seconds(table["issued_at"].iloc[0])
        lo = end - (self.history - 1) * self.interval_s
        secs = (rows["timestamp"].to_numpy().astype("datetime64[s]").astype("int64") if len(rows) else [])
        df = pd.DataFrame({"ts": secs, "node_id": rows["node_id"].astype(str).to_numpy()})
        last = df[df["ts"] < end + self.interval_s].groupby("node_id")["ts"].max().to_dict()
        df = df.assign(timestamp=pd.to_datetime(df["ts"], unit="s"))
        return {"table": table, "window_end": end, "issued_at": _now(), "compute_ms": ms, "cached": False,
                "pending": False, "roads": self.roads(df, lo, end, last, {})}

    def roads(self, df: pd.DataFrame, lo: int, end: int, last: dict, flagged: dict) -> list[dict]:
        """Per road of the window ``[lo, end]``: the fraction of its steps observed, its newest reading (seconds),
        its flagged readings and its status (:func:`~stmgt.serve.trust.road_status`)."""
        frac = dict.fromkeys(self.node_ids, 0.0)
        if len(df):
            ts = df["timestamp"].to_numpy().astype("datetime64[s]").astype("int64")
            k = (ts - lo) // self.interval_s
            ok = (k >= 0) & (k < self.history)
            seen = pd.DataFrame({"n": df["node_id"].astype(str).to_numpy()[ok], "k": k[ok]}).drop_duplicates()
            frac.update((seen.groupby("n").size() / self.history).to_dict())
        out = []
        for n in self.node_ids:
            t = last.get(n)
            out.append({"node_id": n, "observed_fraction": round(float(frac[n]), 4), "last_observed": t,
                        "flagged_readings": int(flagged.get(n, 0)),
                        "status": road_status(frac[n], t, end, self.interval_s)})
        return out


def load_models(run_dirs: list[str | Path]) -> dict[str, ServedModel]:
    """Load every run; names must be unique and node sets equal (they share one store)."""
    models: dict[str, ServedModel] = {}
    for d in run_dirs:
        m = ServedModel(d)
        if m.name in models:
            raise RunError(f"two runs are named {m.name!r} (the folder name); serve folders with distinct names")
        models[m.name] = m
    first = next(iter(models.values()), None)
    if first is None:
        raise RunError("stmgt serve needs at least one run folder")
    for m in models.values():
        if set(m.node_ids) != set(first.node_ids):
            extra = sorted(set(m.node_ids) ^ set(first.node_ids))
            raise RunError(f"runs {first.name} and {m.name} have different node sets (e.g. {extra[0]!r}); models"
                           " served together share one observation store and must cover the same nodes; serve"
                           " the other city from another `stmgt serve` with its own --db")
    return models
