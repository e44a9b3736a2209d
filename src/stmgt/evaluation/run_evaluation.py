"""``stmgt evaluate``: metrics, baselines, warnings, figures and the report of a run folder.

The model and the reference baselines (last value, historical average; fitted on the run's
training split) are scored on the same windows of one split. Where the model loses to a
baseline at a reported horizon, or its 80% or 90% interval covers more than 5 points off
nominal, :func:`~stmgt.evaluation.report.evaluation_warnings` says so in one line each:
``evaluate_run`` emits them as :class:`~stmgt.errors.StmgtWarning` (the CLI prints
``stmgt: warning: ...``), writes them in ``report.md``'s "Warnings" section and keeps them under
``"warnings"`` in ``metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stmgt.config import model_config
from stmgt.data.panel import Panel
from stmgt.errors import ConfigError, warn
from stmgt.evaluation.forecast import REFERENCE_BASELINES, forecast_split
from stmgt.evaluation.horizons import reported_horizons
from stmgt.evaluation.report import CHECKED_LEVELS, display_name, evaluation_warnings, write_report
from stmgt.forecaster import TrainedRun, data_info

#: Roads drawn in the forecast figure, and the most windows (one day of 5-minute data) along its time axis.
PLOT_ROADS, PLOT_WINDOWS = 4, 288


def check_plot_step(step: int | None, horizon: int) -> int:
    """The horizon step the forecast figure shows: ``step`` (1-based) checked against ``horizon``, or by
    default the last reported horizon (:func:`~stmgt.evaluation.horizons.reported_horizons`: 12 of 12)."""
    if step is None:
        return reported_horizons(horizon)[-1]
    if not 1 <= int(step) <= horizon:
        raise ConfigError(f"--plot-step {step}: the run forecasts steps 1 to {horizon}; choose one of them")
    return int(step)


def evaluate_run(run_dir: str | Path, split: str = "test", plots: bool = True, progress: bool = True,
                 panel: Panel | None = None, plot_step: int | None = None) -> dict:
    """Evaluate the run's model and the reference baselines on ``split``; write ``metrics.json``,
    ``report.md`` and ``figures/``; emit :func:`~stmgt.evaluation.report.evaluation_warnings` (also kept
    under ``"warnings"``).

    Args:
        run_dir: the run folder.
        split: ``"test"`` (default), ``"val"`` or ``"train"``.
        plots: draw the figures into ``RUN/figures/``.
        progress: show progress bars.
        panel: the run's data, when already loaded (checked against its fingerprint).
        plot_step: the horizon step of the forecast figure (1-based; default the last reported horizon).

    Returns the metrics dict (the model's metrics at the top level, the baselines under ``"baselines"``).
    """
    run = TrainedRun(run_dir)
    cfg = run.config()
    data = run.data(panel)
    step = check_plot_step(plot_step, data.horizon)
    units = run.meta().get("units") or data.panel.units or ""
    forecaster = run.forecaster()  # with the stored calibration, if any
    metrics, fc = forecast_split(forecaster, data, split, keep=plots, progress=progress)
    res = {"model": cfg.model.name, "split": split, "data": data.panel.name, "units": units, **metrics}
    if forecaster.calibrated:
        res["calibrated"] = True
    res["baselines"], baseline_fc = _baselines(data, split, keep=plots)
    res["warnings"] = evaluation_warnings(res, res["baselines"], run.dir, cfg.model.name, units)
    figures = {}
    if plots:
        figures = _figures(run, data, res, fc, baseline_fc, forecaster, step, units)
    (run.dir / f"metrics{'' if split == 'test' else '_' + split}.json").write_text(json.dumps(res, indent=1))
    info = {"dataset": data.panel.name, "units": units, "split": split, "history": data.history,
            "horizon": data.horizon, "fractions": list(cfg.data.split), "model": cfg.model.name,
            "nodes": data.num_nodes, "windows": len(data.starts[split]),
            "interval_minutes": data.panel.interval_minutes}
    write_report(run.dir, res, res["baselines"], info, figures, warnings=res["warnings"])
    for line in res["warnings"]:
        warn(line)
    return res


def _baselines(data, split: str, keep: bool) -> tuple[dict[str, dict], dict]:
    """Each reference baseline fitted on the training split and run on the windows of ``split``:
    ``({name: metrics}, {name: Forecasts})`` (no forecasts unless ``keep``)."""
    metrics, kept = {}, {}
    for name in REFERENCE_BASELINES:
        baseline = build_baseline(name, data)
        metrics[name], kept[name] = forecast_split(baseline, data, split, keep=keep)
    return metrics, kept


def build_baseline(name: str, data):
    """The baseline ``name`` with its default settings, fitted on ``data``'s training split."""
    from stmgt.models import build_model

    model = build_model(model_config(name), data_info(data))
    model.fit(data)
    return model


def _band_forecasts(forecaster, data, starts: np.ndarray, step: int, levels=(0.8, 0.9), batch_size: int = 64):
    """Mean and central bands at horizon ``step`` (1-based) of the windows ``starts``, forecast (in data units,
    calibrated where the run is) as :func:`forecast_split` does: ``(mean [W, N], {level: (lo [W, N], hi)})``."""
    import torch

    means, bands = [], {lv: ([], []) for lv in levels}
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            dist = forecaster.forecast(data.batch_at(starts[i:i + batch_size]))
            means.append(dist.mean[:, step - 1].numpy())
            for lv in levels:
                lo, hi = dist.interval(lv)
                bands[lv][0].append(lo[:, step - 1].numpy())
                bands[lv][1].append(hi[:, step - 1].numpy())
    return np.concatenate(means), {lv: (np.concatenate(lo), np.concatenate(hi)) for lv, (lo, hi) in bands.items()}


def _slot_mae(err: np.ndarray, mask: np.ndarray, slots: np.ndarray, count: int) -> np.ndarray:
    """Mean of ``err`` over observed points in each of ``count`` slots (NaN for a slot with none)."""
    ok = mask.ravel()
    s = slots.ravel()[ok]
    total = np.bincount(s, weights=err.ravel()[ok], minlength=count)
    n = np.bincount(s, minlength=count)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _figures(run: TrainedRun, data, res: dict, fc, baseline_fc: dict, forecaster, step: int, units: str) -> dict:
    from stmgt.evaluation import plots

    fig = run.dir / "figures"
    fig.mkdir(exist_ok=True)
    out = {}
    minutes = data.panel.interval_minutes
    name = res["model"]
    # forecast vs truth at the chosen step for the roads that vary most, over the first day of windows
    h = step - 1
    obs, count = fc.mask[:, h], np.maximum(fc.mask[:, h].sum(0), 1)
    centre = (fc.y[:, h] * obs).sum(0) / count
    spread = (((fc.y[:, h] - centre) ** 2) * obs).sum(0) / count  # the variance of each road's observed values
    nodes = np.argsort(-spread, kind="stable")[:PLOT_ROADS]
    span = slice(0, min(len(fc.starts), PLOT_WINDOWS))
    times = data.panel.timestamps[fc.starts[span] + data.history + h]
    y = np.where(fc.mask[span, h][:, nodes], fc.y[span, h][:, nodes], np.nan)
    mean, bands = _band_forecasts(forecaster, data, fc.starts[span], step)
    out[f"forecasts_step{step}"] = plots.plot_forecasts(
        times, y, mean[:, nodes], {lv: (lo[:, nodes], hi[:, nodes]) for lv, (lo, hi) in bands.items()},
        [data.panel.node_ids[i] for i in nodes], fig / f"forecasts_step{step}.png", units, step=step,
        step_minutes=minutes)
    by_h = {name: res["mae"]["by_step"]}
    by_h.update({display_name(k): v["mae"]["by_step"] for k, v in res["baselines"].items()})
    out["error_by_horizon"] = plots.plot_error_by_horizon(by_h, fig / "error_by_horizon.png", units,
                                                          step_minutes=minutes)
    out["coverage_by_step"] = plots.plot_coverage_by_step(
        {lv / 100: res[f"coverage{lv}_by_step"] for lv in CHECKED_LEVELS}, fig / "coverage_by_step.png",
        step_minutes=minutes)
    out["pit"] = plots.plot_pit(res["pit_histogram"], fig / "pit.png")
    hist = run.history()
    if hist:
        best = run.training().get("best_epoch")
        out["training"] = plots.plot_training_curves(hist, fig / "training.png", units, best_epoch=best)
    # error of the forecast mean by hour of the target's day (all steps pooled), model and baselines
    ts = data.panel.timestamps[fc.starts[:, None] + data.history + np.arange(data.horizon)[None]]  # [W, H]
    hours = ((ts - ts.astype("datetime64[D]")) // np.timedelta64(1, "h")).astype(int)  # from the clock itself
    slots = np.broadcast_to(hours[:, :, None], fc.mask.shape)  # [W, H, N]
    by_slot = {name: _slot_mae(np.abs(fc.mean - fc.y), fc.mask, slots, 24)}
    for k, b in baseline_fc.items():
        by_slot[display_name(k)] = _slot_mae(np.abs(b.mean - b.y), b.mask, slots, 24)
    out["error_by_time_of_day"] = plots.plot_error_by_time_of_day(
        np.arange(24), by_slot, fig / "error_by_time_of_day.png", units, metric="MAE of the mean")
    if data.panel.coords is not None:
        err = np.abs(fc.mean - fc.y)
        node_mae = np.nansum(err * fc.mask, axis=(0, 1)) / np.maximum(fc.mask.sum(axis=(0, 1)), 1)
        node_mae = np.where(fc.mask.any(axis=(0, 1)), node_mae, np.nan)
        out["node_error_map"] = plots.plot_node_error_map(data.panel.coords[:, 0], data.panel.coords[:, 1],
                                                          node_mae, fig / "node_error_map.png", units,
                                                          metric="MAE of the mean")
    gate = _gate(forecaster, data)
    if gate is not None:
        out["gate"] = plots.plot_gate(gate, fig / "gate.png")
    return {k: v for k, v in out.items() if v is not None}


def _gate(forecaster, data):
    """Mean gate alpha of the last gated block over features for a few test windows: ``[T, N]``."""
    import torch

    model = forecaster.model
    if not hasattr(model, "keep_details") or not getattr(model.cfg, "spatial", False):
        return None
    starts = data.starts["test"][:: max(1, len(data.starts["test"]) // 32)][:32]
    model.keep_details = True
    try:
        with torch.no_grad():
            forecaster.uncalibrated(data.batch_at(starts))
        gates = [g for g in model.details.get("gate") or [] if g is not None]  # blocks with a spatial branch
        if not gates:
            return None
        return gates[-1].mean(dim=(0, 3)).numpy()  # [T, N]
    finally:
        model.keep_details = False
        model.details = {}
