"""Forecast from a file of recent observations with a trained run.

Input: CSV or parquet in long format ``timestamp, node_id, value`` (optional covariate
columns named as at training, e.g. ``temperature, wind_speed, precipitation``), covering at
least the model's history at the run's interval. The last ``history`` steps are used; missing
(step, node) readings are masked, as in training.

Output: one row per (horizon step, node): ``issued_at`` (last observed step),
``timestamp`` (the step forecast), ``step``, ``node_id``, ``mean``, ``std``, ``q05``, ``q10``,
``q50``, ``q90``, ``q95`` in the data's units. CSV or parquet by the output's extension.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stmgt.data.loaders.city import _numeric, _read_table, _timestamps
from stmgt.data.panel import Panel
from stmgt.data.windows import Batch, PanelTensors
from stmgt.errors import DataError
from stmgt.run import Run

QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or parquet file, with the same one-line errors as the your-own-city loader."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    return _read_table(p, text_columns=("node_id",))


def recent_panel(run: Run, path: str | Path) -> Panel:
    """The observations in ``path`` on the run's nodes and interval, as a panel (graph from the run)."""
    return panel_from_frame(run, read_table(path), str(path))


def panel_from_frame(run: Run, df: pd.DataFrame, path: str) -> Panel:
    """Long-format observations (``timestamp, node_id, value`` [+ covariates]) as the last ``history`` steps.

    ``path`` names the source in error messages (a file, or e.g. ``"store"`` for the service);
    :func:`recent_panel` and ``stmgt serve`` both build their panel here.
    """
    meta = run.meta()
    need = {"timestamp", "node_id", "value"}
    if not need <= set(df.columns):
        raise DataError(f"{path}: needs columns timestamp,node_id,value; found {','.join(map(str, df.columns))}")
    name = Path(path).name
    ts = _timestamps(df["timestamp"], name)
    values = pd.Series(_numeric(df["value"], name, "value", allow_missing=True))
    node_ids = [str(n) for n in meta["node_ids"]]
    known = set(node_ids)
    unknown = sorted(set(df["node_id"].astype(str)) - known)
    if unknown:
        raise DataError(f"{path}: node_id {unknown[0]!r} is not a node of this run ({len(unknown)} unknown);"
                        " use the node ids the model was trained on")
    step = pd.Timedelta(minutes=meta["interval_minutes"])
    end = ts.max().floor(step)
    grid = pd.date_range(end=end, periods=meta["history"], freq=step)
    frame = pd.DataFrame({"t": ts.dt.floor(step), "node": df["node_id"].astype(str), "v": values})
    wide = frame.pivot_table(index="t", columns="node", values="v", aggfunc="mean").reindex(index=grid,
                                                                                          columns=node_ids)
    if wide.notna().sum().sum() == 0:
        raise DataError(f"{path}: no observations in the last {meta['history']} steps before {end}")
    cov = None
    names = meta["covariate_names"]
    if names:
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise DataError(f"{path}: the model was trained with covariates {names}; column {missing[0]!r} is missing")
        c = pd.DataFrame({"t": ts.dt.floor(step), **{n: _numeric(df[n], name, n, allow_missing=True) for n in names}})
        cov = c.groupby("t").mean().reindex(grid).ffill().bfill()
        if cov.isna().any().any():
            raise DataError(f"{path}: covariates have no value in the last {meta['history']} steps")
        cov = cov.to_numpy(np.float32)
    ei, ew = run.graph()
    return Panel(values=wide.to_numpy(np.float32), timestamps=grid.to_numpy(), edge_index=ei, edge_weight=ew,
                 node_ids=node_ids, covariates=cov, covariate_names=names, name=Path(path).name,
                 units=meta["units"])


def forecast_table(run: Run, panel: Panel, stream: bool = False, quantiles=QUANTILES) -> pd.DataFrame:
    """Forecast the ``horizon`` steps after the last step of ``panel`` (exactly ``history`` steps long).

    ``quantiles`` (exact, from the calibrated mixture) become columns ``q05`` (or ``q2.5`` when not a
    whole percent) after ``mean`` and ``std``.
    """
    meta = run.meta()
    T, H = meta["history"], meta["horizon"]
    scaler, cov_scaler = run.scalers()
    model = run.model()
    # calendar and weather of the horizon are extrapolated: time of day from the clock, weather held
    step = np.timedelta64(int(meta["interval_minutes"] * 60), "s")
    future = panel.timestamps[-1] + step * np.arange(1, H + 1)
    full_ts = np.concatenate([panel.timestamps, future.astype("datetime64[ns]")])
    pad = np.zeros((H, panel.num_nodes, panel.num_channels), np.float32)
    cov = None if panel.covariates is None else np.concatenate([panel.covariates,
                                                                np.repeat(panel.covariates[-1:], H, 0)])
    ext = Panel(values=np.concatenate([panel.values, pad]), mask=np.concatenate([panel.mask, pad.astype(bool)]),
                timestamps=full_ts, edge_index=panel.edge_index, node_ids=panel.node_ids, covariates=cov,
                covariate_names=panel.covariate_names, name=panel.name)
    tensors = PanelTensors(ext, scaler, cov_scaler)
    idx = torch.arange(T + H)
    batch = Batch(x=tensors.x[None, :T], x_mask=tensors.x_mask[None, :T], y=tensors.y[None, T:],
                  y_mask=tensors.x_mask[None, T:], tod=tensors.tod[None, idx], dow=tensors.dow[None, idx],
                  weather=None if tensors.weather is None else tensors.weather[None, idx],
                  start=torch.zeros(1, dtype=torch.long))
    ei = torch.from_numpy(panel.edge_index)
    with torch.no_grad():
        if stream:
            if not hasattr(model, "stream_forecast"):
                raise DataError(f"--stream needs a recurrent model (stmamba); this run is {model.name}")
            dist = model.stream_forecast(batch, ei)
        else:
            dist = model(batch, ei)
    dist = dist.affine(scaler.target_loc, scaler.target_scale)
    from stmgt.calibration import apply_stored

    dist = apply_stored(run, dist)
    qs = dist.icdf(torch.tensor(tuple(quantiles)))[0].numpy()  # [H, N, Q]
    mean, std = dist.mean[0].numpy(), dist.stddev[0].numpy()  # [H, N]
    N = panel.num_nodes
    out = pd.DataFrame({
        "issued_at": np.repeat(panel.timestamps[-1], H * N),
        "timestamp": np.repeat(future.astype("datetime64[ns]"), N),
        "step": np.repeat(np.arange(1, H + 1), N),
        "node_id": np.tile(panel.node_ids, H),
        "mean": mean.reshape(-1), "std": std.reshape(-1),
    })
    for i, q in enumerate(quantiles):
        out[quantile_column(q)] = qs[..., i].reshape(-1)
    return out


def quantile_column(q: float) -> str:
    """The column name of quantile ``q``: ``q05`` for 0.05, ``q2.5`` for 0.025."""
    pct = q * 100
    return f"q{int(round(pct)):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}"


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    if p.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False, float_format="%.4f")
    tmp.replace(p)
    return p


def predict_file(run_dir: str | Path, input_path: str | Path, output_path: str | Path, stream: bool = False) -> Path:
    """Read ``input_path``, forecast with the run in ``run_dir`` and write ``output_path``."""
    run = Run(run_dir)
    run.meta()  # a clear error for a missing run before reading the input
    return write_table(forecast_table(run, recent_panel(run, input_path), stream=stream), output_path)


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
