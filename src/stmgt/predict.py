"""Forecast from a file of recent observations with a trained run.

Input: CSV or parquet in long format ``timestamp, node_id, value`` (optional covariate
columns named as at training, e.g. ``temperature, wind_speed, precipitation``), covering the
model's history at the run's interval. The window is the ``history`` steps ending at the
input's latest timestamp; each reading goes to the run's grid step at or before it (the grid
of the training data: its start plus whole intervals), several readings of one node in one
step are averaged, and missing (step, node) readings are masked, as in training.

The input is refused (one-line :class:`~stmgt.errors.DataError`) rather than forecast from
silently when:

* fewer than ``min_coverage`` (default 0.5) of the window's (step, node) cells hold a reading;
* a node of the run has no reading in the window (unless ``allow_missing_nodes``: then it
  is named in a warning and forecast from its neighbours and the calendar);
* a ``node_id`` is not a node of the run, or a required column or covariate is missing;
* the latest timestamp lies more than ``history`` steps after the end of the run's data
  (unless ``allow_gap``: a deployment forecasting long after training passes it);
* a reading (or covariate) lies further than 1000 x max(training std, |training mean|, 1) from
  the training mean (wrong units, a typing mistake; such values would overflow or be masked);
* the file is empty or has a header but no rows.

Output: one row per (horizon step, node): ``issued_at`` (last observed step),
``timestamp`` (the step forecast), ``step``, ``node_id``, ``mean``, ``std``, ``q05``, ``q10``,
``q50``, ``q90``, ``q95`` in the data's units. By the output's extension: ``.csv``,
``.parquet`` (or ``.pq``) or ``.json`` (a list of records, one object per row, times in ISO
8601). The file is written atomically (a temporary file in the same folder, then renamed), is
never the input file, and is never half-written.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stmgt.data import tables
from stmgt.data.panel import Panel
from stmgt.data.tables import id_column, numeric_column, parse_timestamps, row_location
from stmgt.distributions.mixture import GaussianMixture
from stmgt.errors import ConfigError, DataError, StmgtWarning
from stmgt.forecaster import TrainedRun, future_steps, window_batch
from stmgt.run_folder import Run

QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)
MIN_COVERAGE = 0.5
MAX_Z = 1000  # readings further than MAX_Z * max(std, |mean|, 1) from the training mean are refused
OUTPUT_FORMATS = (".csv", ".parquet", ".pq", ".json")
RUN_FILES = {"config.yaml", "data.json", "versions.json", "training.json", "calibration.json", "metrics.json",
             "history.csv", "graph.npz", "model.safetensors"}


class InputWarning(StmgtWarning):
    """Forecast made, but from incomplete input (e.g. nodes without a reading, allowed by the caller); the
    command line prints it as one ``stmgt: warning:`` line, as every :class:`~stmgt.errors.StmgtWarning`."""


def _listing(names: list[str], k: int = 3) -> str:
    """``'a', 'b', 'c' and 4 more``."""
    shown = ", ".join(repr(n) for n in names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def _duration(td: pd.Timedelta) -> str:
    minutes = td.total_seconds() / 60
    if minutes >= 2 * 365 * 1440:
        return f"{minutes / (365.25 * 1440):.0f} years"
    if minutes >= 2 * 1440:
        return f"{minutes / 1440:.0f} days"
    if minutes >= 120:
        return f"{minutes / 60:.0f} h"
    return f"{minutes:g} min"


def _check_range(v: np.ndarray, column: str, scaler: dict | None, channel: int, file: str) -> None:
    """Refuse a reading further than :data:`MAX_Z` times the larger of the training standard deviation,
    the training mean's magnitude and 1 from the training mean (a unit or typing mistake the model would
    otherwise turn into a confident forecast, or an overflow that would be masked silently)."""
    if not scaler:
        return
    mean, std = scaler["mean"][channel], scaler["std"][channel]
    scale = max(std, abs(mean), 1.0)  # a near-constant training series (dry weeks: rain 0) is no yardstick
    with np.errstate(over="ignore", invalid="ignore"):
        far = np.abs(v - mean) > MAX_Z * scale
    if far.any():
        i = int(np.argmax(far))
        raise DataError(f"{row_location(file, i)}: {column} {v[i]:g} is far outside the training data (mean {mean:.4g},"
                        f" std {std:.4g}; at most {MAX_Z} x {scale:.4g} away is accepted); check the units or"
                        " leave the cell empty")


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or parquet file, with the same one-line errors as the your-own-city loader."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a folder; give the CSV or parquet file of recent observations")
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    return tables.read_table(p, text_columns=("node_id",))


def recent_panel(run: Run, path: str | Path, *, min_coverage: float = MIN_COVERAGE,
                 allow_missing_nodes: bool = False, allow_gap: bool = False,
                 warn: Callable[[str], None] | None = None) -> Panel:
    """The observations in the file ``path`` as :func:`panel_from_frame` reads them."""
    return panel_from_frame(run, read_table(path), str(path), min_coverage=min_coverage,
                            allow_missing_nodes=allow_missing_nodes, allow_gap=allow_gap, warn=warn)


def panel_from_frame(run: Run, df: pd.DataFrame, path: str, *, min_coverage: float = MIN_COVERAGE,
                     allow_missing_nodes: bool = False, allow_gap: bool = False,
                     warn: Callable[[str], None] | None = None) -> Panel:
    """Long-format observations (``timestamp, node_id, value`` [+ covariates]) on the run's nodes and
    grid, as a panel of exactly ``history`` steps ending at the latest timestamp (graph from the run).

    ``path`` names the source in error messages (a file, or ``"store"`` for ``stmgt serve``):
    :func:`recent_panel` and the service both build their panel here. See the module docstring for
    what is refused; ``warn`` receives the one-line notes of a forecast from incomplete input
    (default: :class:`InputWarning`)."""
    _check_min_coverage(min_coverage)
    meta = run.meta()
    _check_table(df, path, meta["history"])
    df = df.reset_index(drop=True)
    name = Path(path).name
    node_ids = [str(n) for n in meta["node_ids"]]
    col = _node_columns(df, path, name, node_ids)
    ts = parse_timestamps(df["timestamp"], name)
    _refuse_booleans(df["value"], name)
    values = numeric_column(df["value"], name, "value", allow_missing=True)
    names = meta["covariate_names"]
    cov_cols = _covariate_columns(df, path, name, names)
    _check_scales(values, cov_cols, names, meta, path, name)
    pos, w = _place_on_grid(ts, meta, path)
    if not allow_gap:
        _check_gap(w, meta)
    values_tn, seen = _window_means(w, pos, col, values, len(node_ids))
    grid = w.grid()
    _check_coverage(w, seen, pos, min_coverage)
    _note_absent_nodes(w, seen, node_ids, allow_missing_nodes, warn)
    cov = _window_covariates(w, pos, [cov_cols[n] for n in names]) if names else None
    ei, ew = run.graph()
    return Panel(values=values_tn.astype(np.float32), timestamps=grid.to_numpy(), edge_index=ei,
                 edge_weight=ew, node_ids=node_ids, covariates=cov, covariate_names=names, name=name,
                 units=meta["units"])


def _refuse_booleans(col: pd.Series, name: str) -> None:
    """Refuse a true/false ``value`` column (parquet booleans would otherwise read as readings of 0 and 1)."""
    flags = col.map(lambda x: isinstance(x, (bool, np.bool_))) if col.dtype == object else None
    if pd.api.types.is_bool_dtype(col.dtype) or (flags is not None and flags.any()):
        i = 0 if flags is None else int(np.argmax(flags.to_numpy()))
        raise DataError(f"{row_location(name, i)}: value {col.iloc[i]!r} is true/false, not a reading; the value"
                        " column must hold numbers (the readings in the units the model was trained on)")


def _check_min_coverage(min_coverage: float) -> None:
    """Refuse a ``min_coverage`` that is not a fraction."""
    if not 0 <= min_coverage <= 1:
        raise ConfigError(f"--min-coverage {min_coverage:g}: give a fraction between 0 and 1"
                          f" (default {MIN_COVERAGE})")


def _check_table(df: pd.DataFrame, path: str, T: int) -> None:
    """Refuse a frame without the ``timestamp, node_id, value`` columns, or without rows."""
    need = {"timestamp", "node_id", "value"}
    if not need <= set(df.columns):
        raise DataError(f"{path}: needs columns timestamp,node_id,value; found {','.join(map(str, df.columns))}")
    if len(df) == 0:
        raise DataError(f"{path}: has a header but no rows; add the latest readings (timestamp,node_id,value),"
                        f" at least the last {T} steps of every node")


def _node_columns(df: pd.DataFrame, path: str, name: str, node_ids: list[str]) -> np.ndarray:
    """Each row's node as its index in the run's ``node_ids`` (``int64 [rows]``); an unknown node is refused."""
    nid = id_column(df["node_id"], name, "node_id")
    index = {n: i for i, n in enumerate(node_ids)}
    unknown = list(dict.fromkeys(n for n in nid if n not in index))
    if unknown:
        raise DataError(f"{path}: node_id {_listing(unknown)} {'is' if len(unknown) == 1 else 'are'} not"
                        f" {'a node' if len(unknown) == 1 else 'nodes'} of this run ({len(unknown)} unknown);"
                        f" use the node ids the model was trained on (e.g. {node_ids[0]!r})")
    return nid.map(index).to_numpy(np.int64)


def _covariate_columns(df: pd.DataFrame, path: str, name: str, names: list[str]) -> dict[str, np.ndarray]:
    """The run's covariates as ``float64 [rows]`` arrays (NaN where empty); a missing column is refused."""
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise DataError(f"{path}: the model was trained with covariates {', '.join(names)}; column(s)"
                        f" {', '.join(missing)} missing; add them (same names and units as in training)")
    return {n: numeric_column(df[n], name, n, allow_missing=True) for n in names}


def _check_scales(values: np.ndarray, cov_cols: dict[str, np.ndarray], names: list[str], meta: dict, path: str,
                  name: str) -> None:
    """Refuse readings and covariates far outside the training data, and a covariate without any value."""
    _check_range(values, "value", meta["scaler"], 0, name)
    for j, n in enumerate(names):
        _check_range(cov_cols[n], n, meta["cov_scaler"], j, name)
        if not np.isfinite(cov_cols[n]).any():
            raise DataError(f"{path}: covariate column {n!r} has no value; fill it in (the model was trained"
                            " with it)")


@dataclass(frozen=True)
class _Window:
    """The ``T`` steps of the run's grid (``origin`` plus whole ``step``) ending at step number ``end``."""

    path: str  # the source, for messages
    T: int
    origin: pd.Timestamp
    step: pd.Timedelta
    end: int

    @property
    def first(self) -> int:
        """The step number of the window's first step."""
        return self.end - self.T + 1

    def time(self, k: int) -> pd.Timestamp:
        """The time of step number ``k``."""
        return self.origin + self.step * k

    def grid(self) -> pd.DatetimeIndex:
        """The window's ``T`` step times."""
        return pd.date_range(end=self.time(self.end), periods=self.T, freq=self.step)


def _place_on_grid(ts: pd.Series, meta: dict, path: str) -> tuple[np.ndarray, _Window]:
    """Each reading's step number on the run's grid (``int64 [rows]``: the step at or before it) and the
    window of ``history`` steps ending at the latest."""
    step = pd.Timedelta(minutes=meta["interval_minutes"])
    origin = pd.Timestamp(meta.get("start", "1970-01-01"))
    pos = (ts - origin) // step
    pos = pos.to_numpy(np.int64)
    return pos, _Window(path, meta["history"], origin, step, int(pos.max()))


def _check_gap(w: _Window, meta: dict) -> None:
    """Refuse a window that ends more than ``history`` steps after the end of the run's data."""
    if "num_steps" not in meta:
        return
    data_end = int(meta["num_steps"]) - 1
    if w.end - data_end > w.T:
        end_time, data_end_time = w.time(w.end), w.time(data_end)
        raise DataError(f"{w.path}: the latest timestamp, {end_time}, is {_duration(end_time - data_end_time)}"
                        f" after the end of this run's data ({data_end_time}), more than the {w.T}-step"
                        f" history; check the timestamps, or pass --allow-gap to forecast that long after"
                        f" training")


def _window_means(w: _Window, pos: np.ndarray, col: np.ndarray, values: np.ndarray,
                  num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows -> ``[T, N]``: the mean reading per (step, node) of the window (NaN where none), and where one is."""
    ok = (pos >= w.first) & np.isfinite(values)
    total, count = np.zeros((w.T, num_nodes)), np.zeros((w.T, num_nodes))
    np.add.at(total, (pos[ok] - w.first, col[ok]), values[ok])
    np.add.at(count, (pos[ok] - w.first, col[ok]), 1)
    seen = count > 0
    return np.where(seen, total / np.maximum(count, 1), np.nan), seen


def _check_coverage(w: _Window, seen: np.ndarray, pos: np.ndarray, min_coverage: float) -> None:
    """Refuse a window without a reading, or with fewer than ``min_coverage`` of its cells observed."""
    cells, observed = seen.size, int(seen.sum())
    coverage = observed / cells
    if observed == 0 or coverage < min_coverage:
        end_time = w.time(w.end)
        pct = f"{np.floor(coverage * 1000) / 10:g}%"  # rounded down: never shows the threshold itself
        what = "no reading" if observed == 0 else (f"only {pct} of its (step, node) cells observed"
                                                   f" ({observed} of {cells}; {int(seen.any(1).sum())} of {w.T}"
                                                   f" steps have a reading), below --min-coverage"
                                                   f" {min_coverage:g}")
        raise DataError(f"{w.path}: the {w.T}-step window up to {end_time} has {what}{_stray(w, pos)}; give the"
                        f" latest {w.T} steps ({_duration(w.step * w.T)}) of every node"
                        + ("" if observed == 0 else ", or lower --min-coverage"))


def _stray(w: _Window, pos: np.ndarray) -> str:
    """A note when the latest reading is far after the one before it (a stray row?), else ``""``."""
    before = pos[pos < w.end]
    if before.size and w.end - int(before.max()) > w.T // 2:
        end_time, prev = w.time(w.end), w.time(int(before.max()))
        return (f" (its latest timestamp, {end_time}, is {_duration(end_time - prev)} after the one before it,"
                f" {prev}: a stray row?)")
    return ""


def _note_absent_nodes(w: _Window, seen: np.ndarray, node_ids: list[str], allow: bool,
                       warn: Callable[[str], None] | None) -> None:
    """Refuse nodes without a reading in the window, or (``allow``) name them in a warning."""
    absent = [node_ids[i] for i in np.flatnonzero(~seen.any(0))]
    if not absent:
        return
    msg = (f"{w.path}: {len(absent)} of {len(node_ids)} nodes have no reading in the {w.T}-step window up to"
           f" {w.time(w.end)}: {_listing(absent)}")
    if not allow:
        raise DataError(msg + "; add their readings, or pass --allow-missing-nodes to forecast them from"
                              " their neighbours and the calendar")
    note = msg + "; forecast from their neighbours and the calendar"
    if warn is None:
        warnings.warn(note, InputWarning, stacklevel=3)  # blames the caller of panel_from_frame
    else:
        warn(note)


def _window_covariates(w: _Window, pos: np.ndarray, cov_cols: list[np.ndarray]) -> np.ndarray:
    """Covariates per row -> ``float32 [T, C]``: at each window step the latest value at or before it, else
    the first one after."""
    steps = np.arange(w.first, w.end + 1)
    out = np.full((w.T, len(cov_cols)), np.nan)
    for j, v in enumerate(cov_cols):
        good = np.isfinite(v)
        per = pd.Series(v[good]).groupby(pos[good]).mean().sort_index()
        out[:, j] = per.reindex(steps, method="ffill").to_numpy()
        out[:, j] = pd.Series(out[:, j]).bfill().to_numpy()  # steps before the first value
    return out.astype(np.float32)


def forecast_table(run: TrainedRun, panel: Panel, stream: bool = False, quantiles=QUANTILES) -> pd.DataFrame:
    """Forecast the ``horizon`` steps after the last step of ``panel`` (exactly ``history`` steps long).

    ``quantiles`` (exact, from the calibrated mixture) become columns ``q05`` (or ``q2.5`` when not a
    whole percent) after ``mean`` and ``std``.
    """
    return distribution_table(forecast_distribution(run, panel, stream), panel, run.meta()["interval_minutes"],
                              quantiles)


def forecast_distribution(run: TrainedRun, panel: Panel, stream: bool = False) -> GaussianMixture:
    """The calibrated forecast mixture ``[1, H, N]`` (data units) of the ``horizon`` steps after ``panel``."""
    meta = run.meta()
    scaler, cov_scaler = run.scalers()
    batch = window_batch(panel, scaler, cov_scaler, meta["horizon"], meta["interval_minutes"])
    with torch.no_grad():
        return run.forecaster(graph=_graph(run, panel)).forecast(batch, stream=stream)


#: The columns of a forecast table before its quantile columns.
ROW_COLUMNS = ("issued_at", "timestamp", "step", "node_id", "mean", "std")


def distribution_table(dist: GaussianMixture, panel: Panel, interval_minutes: float,
                       quantiles=QUANTILES) -> pd.DataFrame:
    """The rows of :func:`forecast_table` from the forecast mixture ``dist [1, H, N]`` of the steps after ``panel``."""
    H = dist.mean.shape[1]
    future = future_steps(panel, H, interval_minutes)
    with torch.no_grad():
        qs = dist.icdf(torch.tensor(tuple(quantiles)))[0].numpy()  # [H, N, Q]
        mean, std = dist.mean[0].numpy(), dist.stddev[0].numpy()  # [H, N]
    N = panel.num_nodes
    out = pd.DataFrame({
        "issued_at": np.repeat(panel.timestamps[-1], H * N),
        "timestamp": np.repeat(future, N),
        "step": np.repeat(np.arange(1, H + 1), N),
        "node_id": np.tile(panel.node_ids, H),
        "mean": mean.reshape(-1), "std": std.reshape(-1),
    })
    for i, q in enumerate(quantiles):
        out[quantile_column(q)] = qs[..., i].reshape(-1)
    return out


def _graph(run: Run, panel: Panel) -> tuple[np.ndarray, np.ndarray | None]:
    """``(edge_index [2, E], edge_weight [E] or None)`` of a forecast: the panel's graph and weights
    (:func:`panel_from_frame` gives the run's ``graph.npz``); a panel without weights on the run's
    own edges takes the run's weights, as the model was trained with them."""
    ei, ew = panel.edge_index, panel.edge_weight
    if ew is None:
        run_ei, run_ew = run.graph()
        if run_ew is not None and np.array_equal(np.asarray(run_ei), np.asarray(ei)):
            ew = run_ew
    return np.asarray(ei), None if ew is None else np.asarray(ew, np.float32)


def quantile_column(q: float) -> str:
    """The column name of quantile ``q``: ``q05`` for 0.05, ``q2.5`` for 0.025."""
    pct = q * 100
    return f"q{int(round(pct)):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}"


def check_output(path: str | Path, input_path: str | Path | None = None, run_dir: str | Path | None = None) -> Path:
    """Refuse an output path before any work: an unsupported extension, an existing folder, the input
    file itself, or a file of the run folder."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--output {p}: is a folder; give a file name, e.g. {p / 'forecast.csv'}")
    if p.suffix.lower() not in OUTPUT_FORMATS:
        what = f"extension {p.suffix!r} is not supported" if p.suffix else "has no extension"
        raise ConfigError(f"--output {p}: {what}; name it .csv, .parquet or .json (the extension sets the format)")
    if input_path is not None and p.exists() and Path(input_path).exists() and os.path.samefile(p, input_path):
        raise ConfigError(f"--output {p}: is the input file; write the forecast to another file")
    if run_dir is not None and p.name in RUN_FILES and p.parent.resolve() == Path(run_dir).resolve():
        raise ConfigError(f"--output {p}: is a file of the run folder; write the forecast to another file")
    return p


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV, parquet or JSON records (by extension) atomically: a temporary file in
    the same folder, renamed over ``path`` once complete (removed on any failure)."""
    p = check_output(path)
    ext = p.suffix.lower()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{p}: cannot create its folder ({e.strerror or e}); choose another --output") from None
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        if ext in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        elif ext == ".json":
            df.to_json(tmp, orient="records", date_format="iso", date_unit="s", double_precision=6)
        else:
            df.to_csv(tmp, index=False, float_format="%.4f")
        os.replace(tmp, p)
    except OSError as e:
        raise DataError(f"{p}: cannot write ({e.strerror or e}); choose another --output") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def predict_file(run_dir: str | Path, input_path: str | Path, output_path: str | Path, stream: bool = False, *,
                 min_coverage: float = MIN_COVERAGE, allow_missing_nodes: bool = False, allow_gap: bool = False,
                 warn: Callable[[str], None] | None = None) -> Path:
    """Read ``input_path``, forecast with the run in ``run_dir`` and write ``output_path``
    (see the module docstring for what is refused and the output formats)."""
    run = TrainedRun(run_dir)
    run.meta()  # a clear error for a missing run before reading the input
    check_output(output_path, input_path, run_dir)
    panel = recent_panel(run, input_path, min_coverage=min_coverage, allow_missing_nodes=allow_missing_nodes,
                         allow_gap=allow_gap, warn=warn)
    return write_table(forecast_table(run, panel, stream=stream), output_path)


def write_recent_observations(run: Run, panel: Panel, path: str | Path, steps: int | None = None) -> Path:
    """Write the last ``steps`` (default: the history) of ``panel`` in the long input format (for demos)."""
    meta = run.meta()
    n = steps or meta["history"]
    p = panel.slice(panel.num_steps - n, panel.num_steps)
    T, N = p.num_steps, p.num_nodes
    df = pd.DataFrame({"timestamp": np.repeat(p.timestamps, N), "node_id": np.tile(p.node_ids, T),
                       "value": np.where(p.mask[..., 0], p.values[..., 0], np.nan).reshape(-1)})
    for i, name in enumerate(p.covariate_names):
        df[name] = np.repeat(p.covariates[:, i], N)
    return write_table(df.dropna(subset=["value"]), path)
