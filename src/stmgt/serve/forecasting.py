"""Served models and their forecasts: the same code path as ``stmgt predict``.

Both build the input panel with :func:`stmgt.predict.panel_from_frame` and forecast with
:func:`stmgt.predict.forecast_table` (calibration applied, exact mixture quantiles), so the
service and the command line give the same numbers for the same window.

A :class:`ServedModel` is a run folder loaded once (weights, scalers, graph, calibration). Its
forecast from the store is cached per (window end, store revision of the window, quantiles):
a repeated request is answered from memory, and a late row inside the window makes the next
request recompute.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import pandas as pd

from stmgt.errors import DataError, RunError, StmgtError
from stmgt.paths import sha256_file
from stmgt.predict import MIN_COVERAGE, QUANTILES, forecast_table, panel_from_frame
from stmgt.run_folder import Run
from stmgt.serve.store import STORED_QUANTILES, Store, from_seconds, to_seconds
from stmgt.serve.trust import road_status


class NotEnoughHistory(StmgtError):
    """The store does not (yet) hold the model's history window (HTTP 409)."""


class ForecastFailed(NotEnoughHistory):
    """The store holds a window, but no forecast can be made from it (HTTP 409; ``/readyz`` not ready)."""


class CachedRun(Run):
    """A :class:`~stmgt.run_folder.Run` whose model, metadata, scalers, graph and calibration are read once
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
        self._lock = threading.RLock()  # one forecast at a time per model
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict = OrderedDict()
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
        """``forecast_table`` of the panel built from long-format rows; (table, compute milliseconds).

        A live service forecasts long after its training data end and keeps forecasting roads whose sensor
        is silent (``allow_gap``, ``allow_missing_nodes`` of :func:`~stmgt.predict.panel_from_frame`); a
        window with less than ``min_coverage`` of its cells observed is still refused (HTTP 409).
        """
        t0 = time.perf_counter()
        with self._lock:  # one forecast at a time per model keeps the service CPU-light
            panel = panel_from_frame(self.run, df, source, min_coverage=min_coverage, allow_missing_nodes=True,
                                     allow_gap=True, warn=lambda message: None)
            table = forecast_table(self.run, panel, quantiles=quantiles)
        return table, (time.perf_counter() - t0) * 1000

    def window_bounds(self, latest: int) -> tuple[int, int]:
        """``(first bin start, last bin start)`` of the history window ending at ``latest``'s bin."""
        end = latest - latest % self.interval_s
        return end - (self.history - 1) * self.interval_s, end

    def forecast_from_store(self, store: Store, quantiles=QUANTILES) -> dict:
        """The forecast from the latest ``history`` steps in the store (cached), stored for live scoring.

        Returns a dict with ``table`` (the :func:`forecast_table` rows), ``window_end``,
        ``issued_at`` (wall clock, when computed), ``compute_ms`` and ``cached``.
        """
        qs = tuple(sorted(set(float(q) for q in quantiles) | set(STORED_QUANTILES)))
        latest = self.window_latest(store)
        if latest is None:
            raise NotEnoughHistory(f"the store holds no observations of model {self.name}'s nodes yet;"
                                   " POST /v1/observations first")
        lo, end = self.window_bounds(latest)
        key = (end, qs)
        hit = self._cached(key, store, lo)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._cached(key, store, lo)  # computed by another request meanwhile
            if hit is not None:
                return hit
            return self._compute(key, store, lo, end, qs)

    def window_latest(self, store: Store) -> int | None:
        """Where the window ends: the newest time that at least a quarter of the roads have reached (so that one
        road stamped ahead of the others, a wrong clock, does not move the whole city's window into an empty
        future). Recomputed once per store revision."""
        seq = store.seq
        memo = self._latest_memo
        if memo is not None and memo[0] == seq and memo[1] is store:
            return memo[2]
        per_node = sorted(store.latest_per_node(self.node_ids).values(), reverse=True)
        k = max(1, -(-len(self.node_ids) // 4))
        latest = per_node[min(k, len(per_node)) - 1] if per_node else None
        self._latest_memo = (seq, store, latest)
        return latest

    def _cached(self, key, store: Store, lo: int) -> dict | None:
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is None or store.written_since(hit["seq"], lo):
                return None
            self._cache.move_to_end(key)
            return {**hit, "cached": True}

    def _compute(self, key, store: Store, lo: int, end: int, qs) -> dict:
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
            table, ms = self.forecast_frame(df, "store", qs)
        except DataError as e:
            raise ForecastFailed(str(e).replace("store: ", "the store: ", 1)) from None
        last = store.last_observed(self.node_ids, min(lo, end - 86400), end + self.interval_s)
        flagged = store.flagged_in(self.node_ids, lo, end + self.interval_s)
        entry = {"table": table, "window_end": end, "issued_at": pd.Timestamp.now("UTC").tz_localize(None),
                 "compute_ms": ms, "seq": seq, "roads": self.roads(df, lo, end, last, flagged)}
        store.save_forecast(self.name, self.version, end, table, ms)
        with self._cache_lock:
            self._cache[key] = entry
            while len(self._cache) > 16:
                self._cache.popitem(last=False)
        return {**entry, "cached": False}

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
        return {"table": table, "window_end": end, "issued_at": pd.Timestamp.now("UTC").tz_localize(None),
                "compute_ms": ms, "cached": False, "roads": self.roads(df, lo, end, last, {})}

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
