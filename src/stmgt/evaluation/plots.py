"""Figures of a forecast evaluation, drawn with matplotlib's Agg backend.

Every function takes arrays (never reads files), writes one PNG to ``path`` (creating its
folder) and returns that path. Figures are drawn on a :class:`matplotlib.figure.Figure` with
an Agg canvas, without ``pyplot``: no global state, no display needed, safe in threads and
servers.

* :func:`plot_forecasts`: forecast mean and central band against the truth for a few roads;
* :func:`plot_error_by_horizon`: MAE per horizon step for several models;
* :func:`plot_pit`: PIT histogram and, optionally, the reliability diagram of interval coverage;
* :func:`plot_training_curves`: loss, validation MAE and learning rate per epoch;
* :func:`plot_error_by_time_of_day`: MAE by time of day;
* :func:`plot_node_error_map`: MAE per sensor on a longitude/latitude scatter;
* :func:`plot_gate`: the spatial/temporal gate ``alpha`` over time steps and nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

DPI = 120


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def _save(fig: Figure, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=DPI, format="png")
    return p


def _unit(units: str) -> str:
    return f" ({units})" if units else ""


def plot_forecasts(times, y, mean, lo, hi, node_names: Sequence[str], path, units: str = "",
                   step: int | None = None, level: float = 0.8) -> Path:
    """Forecast mean and its central ``level`` band against the truth, one panel per road.

    Args:
        times: ``[L]`` times of the forecast targets (``datetime64`` or numbers), a contiguous stretch.
        y: ``[L, R]`` observed values, NaN where unobserved (drawn with gaps).
        mean: ``[L, R]`` forecast means. lo, hi: ``[L, R]`` interval bounds.
        node_names: ``R`` road names for the panel titles.
        path: output PNG.
        units: units of the values, for the axis label.
        step: the horizon step shown (1-based), for the title.
        level: probability of the band, for the legend (default 0.8).
    """
    y, mean, lo, hi = (np.asarray(a, dtype=float).reshape(len(times), -1) for a in (y, mean, lo, hi))
    times = np.asarray(times)
    R = y.shape[1]
    fig, axes = _figure(10, 1.9 * R + 0.6, R, 1, sharex=True)
    for r in range(R):
        ax = axes[r, 0]
        ax.fill_between(times, lo[:, r], hi[:, r], color="tab:blue", alpha=0.25, lw=0,
                        label=f"{level:.0%} interval")
        ax.plot(times, mean[:, r], color="tab:blue", lw=1.2, label="forecast mean")
        ax.plot(times, y[:, r], color="black", lw=0.9, label="observed")
        ax.set_title(str(node_names[r]) if r < len(node_names) else f"road {r}", fontsize=9, loc="left")
        ax.set_ylabel(units or "value")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=3)
    what = f"horizon step {step}" if step is not None else "forecast"
    fig.suptitle(f"Forecast vs observed, {what}")
    return _save(fig, path)


def plot_error_by_horizon(metrics_by_model: Mapping[str, Sequence[float]], path, units: str = "",
                          step_minutes: float | None = None) -> Path:
    """MAE per horizon step, one line per model.

    Args:
        metrics_by_model: ``{name: [MAE at step 1, ..., step H]}`` (a metrics dict's ``mae.by_step``).
        path: output PNG.
        units: units of the MAE, for the axis label.
        step_minutes: minutes per step; the x axis is in minutes ahead when given.
    """
    fig, axes = _figure(6.5, 4)
    ax = axes[0, 0]
    for name, values in metrics_by_model.items():
        v = np.asarray(values, dtype=float)
        x = np.arange(1, len(v) + 1) * (step_minutes or 1)
        ax.plot(x, v, marker="o", ms=3, label=str(name))
    ax.set_xlabel("minutes ahead" if step_minutes else "horizon step")
    ax.set_ylabel(f"MAE{_unit(units)}")
    ax.set_title("Error by horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_pit(pit_histogram: Sequence[float], path,
             coverage_by_level: Mapping[float, float] | None = None) -> Path:
    """Calibration: PIT histogram against the uniform density, and the reliability diagram if given.

    Args:
        pit_histogram: ``[bins]`` fractions of observations in each PIT bin (summing to 1), as in
            a metrics dict's ``pit_histogram``. A calibrated forecast is flat at density 1.
        path: output PNG.
        coverage_by_level: ``{nominal level: empirical coverage}`` of central intervals, e.g.
            ``{0.1: 0.12, ..., 0.9: 0.88}``; adds a nominal-vs-empirical panel with the diagonal.
    """
    h = np.asarray(pit_histogram, dtype=float)
    bins = len(h)
    density = h / max(h.sum(), 1e-12) * bins
    cols = 2 if coverage_by_level else 1
    fig, axes = _figure(4.5 * cols, 3.8, 1, cols)
    ax = axes[0, 0]
    edges = np.linspace(0, 1, bins + 1)
    ax.bar(edges[:-1], density, width=1 / bins, align="edge", color="tab:blue", alpha=0.7, edgecolor="white")
    ax.axhline(1.0, color="black", ls="--", lw=1, label="calibrated (uniform)")
    ax.set_xlim(0, 1)
    ax.set_xlabel("PIT  F(y)")
    ax.set_ylabel("density")
    ax.set_title("PIT histogram")
    ax.legend(fontsize=8)
    if coverage_by_level:
        ax = axes[0, 1]
        lv = sorted(coverage_by_level)
        ax.plot([0, 1], [0, 1], color="black", ls="--", lw=1, label="ideal")
        ax.plot(lv, [coverage_by_level[k] for k in lv], marker="o", color="tab:orange", label="model")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("empirical coverage")
        ax.set_title("Central-interval coverage")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_training_curves(history: Sequence[Mapping[str, float]], path) -> Path:
    """Training loss, validation MAE and learning rate per epoch.

    Args:
        history: one dict per epoch with ``epoch`` and any of ``train_loss``, ``train_nll``,
            ``val_mae``, ``lr`` (missing or NaN values are skipped).
        path: output PNG.
    """
    def col(key: str) -> np.ndarray:
        return np.array([float(r.get(key, np.nan)) if r.get(key) is not None else np.nan for r in history])

    epoch = col("epoch")
    if np.isnan(epoch).all():
        epoch = np.arange(len(history), dtype=float)
    fig, axes = _figure(12, 3.6, 1, 3)
    ax = axes[0, 0]
    for key in ("train_loss", "train_nll"):
        v = col(key)
        ok = np.isfinite(v)
        if ok.any():
            ax.plot(epoch[ok], v[ok], marker=".", label=key)
    ax.set_title("Training loss")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    v = col("val_mae")
    ok = np.isfinite(v)
    if ok.any():
        ax.plot(epoch[ok], v[ok], marker=".", color="tab:green")
        best = int(np.nanargmin(np.where(ok, v, np.nan)))
        ax.scatter([epoch[best]], [v[best]], color="tab:red", zorder=3, label=f"best (epoch {epoch[best]:g})")
        ax.legend(fontsize=8)
    ax.set_title("Validation MAE")
    ax.set_xlabel("epoch")
    ax = axes[0, 2]
    v = col("lr")
    ok = np.isfinite(v)
    if ok.any():
        ax.plot(epoch[ok], v[ok], color="tab:purple")
        if (v[ok] > 0).all():
            ax.set_yscale("log")
    ax.set_title("Learning rate")
    ax.set_xlabel("epoch")
    for a in axes[0]:
        a.grid(alpha=0.3)
    return _save(fig, path)


def plot_error_by_time_of_day(tod_slots, mae, path, units: str = "",
                              steps_per_day: int | None = None) -> Path:
    """MAE by time of day.

    Args:
        tod_slots: ``[S]`` time of day of each value: hours (0 to 24) or, with ``steps_per_day``,
            slot indices ``0..steps_per_day-1``.
        mae: ``[S]`` MAE in each slot (NaN where there is no observation).
        path: output PNG.
        units: units of the MAE, for the axis label.
        steps_per_day: slots per day when ``tod_slots`` are slot indices.
    """
    x = np.asarray(tod_slots, dtype=float)
    if steps_per_day:
        x = x * 24.0 / steps_per_day
    v = np.asarray(mae, dtype=float)
    width = float(np.min(np.diff(np.unique(x)))) if len(np.unique(x)) > 1 else 1.0
    fig, axes = _figure(7, 3.6)
    ax = axes[0, 0]
    ax.bar(x, np.nan_to_num(v, nan=0.0), width=0.9 * width, align="edge", color="tab:blue", alpha=0.8)
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xlabel("time of day (hours)")
    ax.set_ylabel(f"MAE{_unit(units)}")
    ax.set_title("Error by time of day")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_node_error_map(lat, lon, mae, path, units: str = "", edge_index=None) -> Path:
    """MAE per sensor on a longitude/latitude scatter (optionally with the road links).

    Args:
        lat, lon: ``[N]`` coordinates in degrees.
        mae: ``[N]`` MAE per node (NaN: drawn grey).
        path: output PNG.
        units: units of the MAE, for the colour bar.
        edge_index: ``[2, E]`` links drawn as thin grey lines, optional.
    """
    lat, lon, v = (np.asarray(a, dtype=float) for a in (lat, lon, mae))
    fig, axes = _figure(6.5, 5.5)
    ax = axes[0, 0]
    if edge_index is not None and np.size(edge_index):
        ei = np.asarray(edge_index)
        segs = np.stack([np.stack([lon[ei[0]], lat[ei[0]]], 1), np.stack([lon[ei[1]], lat[ei[1]]], 1)], 1)
        ax.add_collection(LineCollection(segs, colors="0.8", linewidths=0.6, zorder=1))  # [E, 2, 2]
    ok = np.isfinite(v)
    if (~ok).any():
        ax.scatter(lon[~ok], lat[~ok], c="0.6", s=18, zorder=2, label="no observation")
        ax.legend(fontsize=8)
    sc = ax.scatter(lon[ok], lat[ok], c=v[ok], cmap="viridis", s=28, edgecolors="black", linewidths=0.3,
                    zorder=3)
    fig.colorbar(sc, ax=ax, label=f"MAE{_unit(units)}")
    mid = np.nanmean(lat) if np.isfinite(lat).any() else 0.0
    ax.set_aspect(1.0 / max(math.cos(math.radians(mid)), 1e-3))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title("Error by sensor")
    return _save(fig, path)


def plot_gate(alpha_node_time, path, sort_nodes: bool = False) -> Path:
    """Heat map of the gate ``alpha`` (1: spatial branch, 0: temporal branch) over time and nodes.

    Args:
        alpha_node_time: ``[T, N]`` gate values in ``[0, 1]`` (e.g. averaged over windows and features).
        path: output PNG.
        sort_nodes: order the nodes by their mean gate (default: node order).
    """
    a = np.asarray(alpha_node_time, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"plot_gate needs a [T, N] array, got shape {a.shape}")
    if sort_nodes:
        a = a[:, np.argsort(np.nanmean(a, axis=0))]
    T, N = a.shape
    fig, axes = _figure(min(12, 3 + 0.08 * T + 4), 4.5)
    ax = axes[0, 0]
    im = ax.imshow(a.T, aspect="auto", origin="lower", cmap="coolwarm", vmin=0.0, vmax=1.0,
                   interpolation="nearest", extent=(0.5, T + 0.5, -0.5, N - 0.5))
    fig.colorbar(im, ax=ax, label="alpha  (1 = spatial, 0 = temporal)")
    ax.set_xlabel("history step")
    ax.set_ylabel("node" + (" (sorted by mean gate)" if sort_nodes else ""))
    ax.set_title(f"Gate alpha (mean {np.nanmean(a):.2f})")
    return _save(fig, path)
