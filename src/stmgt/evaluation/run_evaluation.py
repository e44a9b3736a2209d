"""``stmgt evaluate``: metrics, baselines, figures and the report of a run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from stmgt.data.panel import Panel
from stmgt.evaluation.forecast import baseline_metrics, forecast_split
from stmgt.forecaster import TrainedRun


def _history(run: TrainedRun) -> list[dict]:
    p = run.dir / "history.csv"
    if not p.is_file():
        return []
    with p.open() as f:
        return [{k: (float(v) if v not in ("", None) else float("nan")) for k, v in row.items()}
                for row in csv.DictReader(f)]


def evaluate_run(run_dir: str | Path, split: str = "test", plots: bool = True, progress: bool = True,
                 panel: Panel | None = None) -> dict:
    """Evaluate the run's model and the reference baselines on ``split``; write ``metrics.json``,
    ``report.md`` and ``figures/``. Returns the metrics dict (the model's metrics at the top level,
    the baselines under ``"baselines"``)."""
    run = TrainedRun(run_dir)
    cfg = run.config()
    data = run.data(panel)
    model = run.model()
    calibration = run.calibrator()
    metrics, fc = forecast_split(model, data, split, calibration=calibration, keep=plots, progress=progress)
    res = {"model": cfg.model.name, "split": split, "data": data.panel.name, "units": data.panel.units, **metrics}
    if calibration is not None:
        res["calibrated"] = True
    res["baselines"] = baseline_metrics(data, split)
    figures = {}
    if plots:
        figures = _figures(run, data, res, fc, model)
    (run.dir / f"metrics{'' if split == 'test' else '_' + split}.json").write_text(json.dumps(res, indent=1))
    from stmgt.evaluation.report import write_report

    info = {"dataset": data.panel.name, "units": data.panel.units, "split": split, "history": data.history,
            "horizon": data.horizon, "fractions": list(cfg.data.split), "model": cfg.model.name,
            "nodes": data.num_nodes, "windows": len(data.starts[split]),
            "interval_minutes": data.panel.interval_minutes}
    write_report(run.dir, res, res["baselines"], info, figures)
    return res


def _figures(run: TrainedRun, data, res: dict, fc, model) -> dict:
    from stmgt.evaluation import plots

    fig = run.dir / "figures"
    fig.mkdir(exist_ok=True)
    out = {}
    units = data.panel.units
    # forecast vs truth at step 1 and the last step for the four busiest-varying roads
    var = np.where(fc.mask[:, 0], fc.y[:, 0], np.nan)
    nodes = np.argsort(-np.nan_to_num(np.nanstd(var, axis=0)))[:4]
    span = slice(0, min(len(fc.starts), 288))
    h = data.horizon - 1
    times = data.panel.timestamps[fc.starts[span] + data.history + h]
    y = np.where(fc.mask[span, h][:, nodes], fc.y[span, h][:, nodes], np.nan)
    out["forecasts"] = plots.plot_forecasts(times, y, fc.mean[span, h][:, nodes], fc.lo80[span, h][:, nodes],
                                            fc.hi80[span, h][:, nodes], [data.panel.node_ids[n] for n in nodes],
                                            fig / "forecasts.png", units, step=h + 1)
    by_h = {res["model"]: res["mae"]["by_step"]}
    by_h.update({k: v["mae"]["by_step"] for k, v in res["baselines"].items()})
    out["error_by_horizon"] = plots.plot_error_by_horizon(by_h, fig / "error_by_horizon.png", units)
    out["pit"] = plots.plot_pit(res["pit_histogram"], fig / "pit.png")
    hist = _history(run)
    if hist:
        out["training"] = plots.plot_training_curves(hist, fig / "training.png")
    # error by time of day (all steps pooled) and per node
    err = np.abs(fc.mean - fc.y)
    tod, _ = data.panel.calendar()
    t_idx = fc.starts[:, None] + data.history + np.arange(data.horizon)[None]
    slots = np.broadcast_to(np.floor(tod[t_idx] * 24).astype(int)[:, :, None], fc.mask.shape)  # [W, H, N]
    by_slot = [float(err[(slots == s) & fc.mask].mean()) if ((slots == s) & fc.mask).any() else np.nan
               for s in range(24)]
    out["error_by_time_of_day"] = plots.plot_error_by_time_of_day(np.arange(24), np.array(by_slot),
                                                                  fig / "error_by_time_of_day.png")
    if data.panel.coords is not None:
        node_mae = np.nansum(err * fc.mask, axis=(0, 1)) / np.maximum(fc.mask.sum(axis=(0, 1)), 1)
        out["node_error_map"] = plots.plot_node_error_map(data.panel.coords[:, 0], data.panel.coords[:, 1],
                                                          node_mae, fig / "node_error_map.png")
    gate = _gate(model, data)
    if gate is not None:
        out["gate"] = plots.plot_gate(gate, fig / "gate.png")
    return {k: v for k, v in out.items() if v is not None}


def _gate(model, data):
    """Mean gate alpha of the last block over features for a few test windows: ``[T, N]``."""
    import torch

    if not hasattr(model, "keep_details") or not getattr(model.cfg, "spatial", False):
        return None
    starts = data.starts["test"][:: max(1, len(data.starts["test"]) // 32)][:32]
    model.keep_details = True
    try:
        with torch.no_grad():
            model(data.batch_at(starts), data.edge_index, data.edge_weight)
        gates = model.details.get("gate") or []
        if not gates or gates[-1] is None:
            return None
        return gates[-1].mean(dim=(0, 3)).numpy()  # [T, N]
    finally:
        model.keep_details = False
        model.details = {}
