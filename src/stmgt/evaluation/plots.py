"""Figures of a forecast evaluation, drawn with matplotlib's Agg backend.

Each figure has a builder that takes arrays (never reads files) and returns a
:class:`matplotlib.figure.Figure` (``*_figure``; tests read its lines, labels and legends), and a
``plot_*`` function that draws it, writes one PNG to ``path`` (creating its folder) and returns
that path. Figures are drawn on a Figure with an Agg canvas, without ``pyplot``: no global
state, no display needed, safe in threads and servers. Every axis that measures something in
the data's units names them (``"data units"`` when the data has none).

* :func:`plot_forecasts`: forecast mean, 80% and 90% bands against the truth for a few roads at
  one horizon step, unobserved values marked, dates with the year;
* :func:`plot_error_by_horizon`: MAE per horizon step, the model beside its baselines;
* :func:`plot_coverage_by_step`: empirical coverage of the central intervals per horizon step
  against their nominal levels;
* :func:`plot_pit`: PIT histogram and, optionally, the reliability diagram of interval coverage;
* :func:`plot_training_curves`: loss, validation MAE and learning rate per epoch (counted from 1);
* :func:`plot_error_by_time_of_day`: MAE by time of day, the model beside its baselines;
* :func:`plot_node_error_map`: MAE per sensor on a longitude/latitude scatter;
* :func:`plot_gate`: the spatial/temporal gate ``alpha`` over time steps and nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

DPI = 120
#: How the x axis of a forecast plot writes a date: with the year, so a reader knows which one.
DATE_FORMAT = "%Y-%m-%d %H:%M"
#: Colours of the central bands by level, the widest palest.
BAND_COLOURS = {0.8: "#6baed6", 0.9: "#c6dbef"}
#: Line colour per curve name; the first curve of a comparison (the model) is drawn solid, the rest dashed.
CURVE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


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


def unit_label(units: str) -> str:
    """``" (km/h)"``, or ``" (data units)"`` where the data names no units: an axis label's suffix."""
    return f" ({units})" if units else " (data units)"


def _step_label(step_minutes: float | None) -> str:
    return f"horizon step ({step_minutes:g} min each)" if step_minutes else "horizon step"


def _gaps(values: np.ndarray) -> np.ndarray:
    """Indices where ``values`` is NaN (unobserved)."""
    return np.flatnonzero(~np.isfinite(values))


# ---------------------------------------------------------------------------------------------- forecasts
def forecasts_figure(times, y, mean, bands: Mapping[float, tuple], node_names: Sequence[str], units: str = "",
                     step: int | None = None, step_minutes: float | None = None) -> Figure:
    """Forecast mean and its central bands against the truth at one horizon step, one panel per road.

    Args:
        times: ``[L]`` times of the forecast targets (``datetime64`` or numbers), a contiguous stretch.
        y: ``[L, R]`` observed values, NaN where unobserved: drawn with gaps, each unobserved time
            marked by a red tick at the foot of the panel (``"no observation"`` in the legend).
        mean: ``[L, R]`` forecast means.
        bands: ``{level: (lo, hi)}`` with ``[L, R]`` bounds of the central interval of probability
            ``level``, e.g. ``{0.8: (lo80, hi80), 0.9: (lo90, hi90)}``; wider bands are drawn beneath.
        node_names: ``R`` road names for the panel titles.
        units: units of the values, for the y axis (``"value"`` when empty).
        step: the horizon step shown (1-based), for the title. step_minutes: minutes per step.
    """
    times = np.asarray(times)
    shape = (len(times), -1)
    y, mean = (np.asarray(a, dtype=float).reshape(shape) for a in (y, mean))
    R = y.shape[1]
    fig, axes = _figure(10, 1.9 * R + 0.8, R, 1, sharex=True)
    dated = np.issubdtype(times.dtype, np.datetime64)
    for r in range(R):
        ax = axes[r, 0]
        for level in sorted(bands, reverse=True):
            lo, hi = (np.asarray(b, dtype=float).reshape(shape)[:, r] for b in bands[level])
            ax.fill_between(times, lo, hi, color=BAND_COLOURS.get(level, "tab:blue"), alpha=0.9, lw=0,
                            label=f"{level:.0%} interval")
        ax.plot(times, mean[:, r], color="tab:blue", lw=1.2, label="forecast mean")
        ax.plot(times, y[:, r], color="black", lw=0.9, label="observed")
        gap = _gaps(y[:, r])
        ax.plot(times[gap], np.full(len(gap), 0.03), ls="none", marker="|", ms=9, mew=1.2, color="tab:red",
                transform=ax.get_xaxis_transform(), label="no observation")
        ax.set_title(str(node_names[r]) if r < len(node_names) else f"road {r}", fontsize=9, loc="left")
        ax.set_ylabel(units or "value")
        ax.grid(alpha=0.3)
    ax = axes[-1, 0]
    if dated:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
        ax.xaxis.set_major_formatter(mdates.DateFormatter(DATE_FORMAT))
        ax.set_xlabel("time of the forecast target")
    else:
        ax.set_xlabel("time step of the forecast target")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=8, ncol=len(labels), frameon=False)
    ahead = f" ({step * step_minutes:g} min ahead)" if step is not None and step_minutes else ""
    what = f"horizon step {step}{ahead}" if step is not None else "forecast"
    fig.suptitle(f"Forecast vs observed, {what}", x=0.01, ha="left", fontsize=11)
    return fig


def plot_forecasts(times, y, mean, bands: Mapping[float, tuple], node_names: Sequence[str], path,
                   units: str = "", step: int | None = None, step_minutes: float | None = None) -> Path:
    """Write :func:`forecasts_figure` to ``path``."""
    return _save(forecasts_figure(times, y, mean, bands, node_names, units, step, step_minutes), path)


# ---------------------------------------------------------------------------------------------- by horizon
def _curves(ax, x, curves: Mapping[str, Sequence[float]], marker: str = "o") -> None:
    """One line per curve: the first (the model) solid and thicker, the others (baselines) dashed."""
    for i, (name, values) in enumerate(curves.items()):
        v = np.asarray(values, dtype=float)
        ax.plot(x[: len(v)], v, marker=marker, ms=3, lw=1.8 if i == 0 else 1.2, ls="-" if i == 0 else "--",
                color=CURVE_COLOURS[i % len(CURVE_COLOURS)], label=str(name))


def error_by_horizon_figure(metrics_by_model: Mapping[str, Sequence[float]], units: str = "",
                            step_minutes: float | None = None) -> Figure:
    """MAE per horizon step, one line per model (the first solid, the others, baselines, dashed).

    Args:
        metrics_by_model: ``{name: [MAE at step 1, ..., step H]}`` (a metrics dict's ``mae.by_step``).
        units: units of the MAE, for the y axis.
        step_minutes: minutes per step, for the x axis label.
    """
    fig, axes = _figure(6.5, 4)
    ax = axes[0, 0]
    H = max((len(v) for v in metrics_by_model.values()), default=1)
    _curves(ax, np.arange(1, H + 1), metrics_by_model)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_step_label(step_minutes))
    ax.set_ylabel(f"MAE{unit_label(units)}")
    ax.set_title("Error by horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_error_by_horizon(metrics_by_model: Mapping[str, Sequence[float]], path, units: str = "",
                          step_minutes: float | None = None) -> Path:
    """Write :func:`error_by_horizon_figure` to ``path``."""
    return _save(error_by_horizon_figure(metrics_by_model, units, step_minutes), path)


def coverage_by_step_figure(coverage_by_level: Mapping[float, Sequence[float]], step_minutes: float | None = None,
                            tolerance: float = 0.05) -> Figure:
    """Empirical coverage of central intervals per horizon step against their nominal levels.

    Args:
        coverage_by_level: ``{nominal level: [coverage at step 1, ..., step H]}``, fractions, e.g.
            ``{0.8: metrics["coverage80_by_step"], 0.9: metrics["coverage90_by_step"]}``; each is one
            solid line (label ``"80% interval"``, its data the coverages as given) beside a dashed
            line at its nominal level (``"nominal 80%"``) and a pale band ``tolerance`` either side.
        step_minutes: minutes per step, for the x axis label.
        tolerance: half width of the pale band (default 0.05: the 5 points ``stmgt evaluate`` warns beyond).
    """
    fig, axes = _figure(6.5, 4)
    ax = axes[0, 0]
    lows = []
    for i, level in enumerate(sorted(coverage_by_level)):
        v = np.asarray(coverage_by_level[level], dtype=float)
        x = np.arange(1, len(v) + 1)
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        ax.axhspan(level - tolerance, min(level + tolerance, 1.0), color=colour, alpha=0.08, lw=0)
        ax.axhline(level, color=colour, ls="--", lw=1, label=f"nominal {level:.0%}")
        ax.plot(x, v, marker="o", ms=3, color=colour, lw=1.6, label=f"{level:.0%} interval")
        lows.append(min(np.nanmin(v) if np.isfinite(v).any() else level, level - tolerance))
    ax.set_ylim(max(0.0, min(lows, default=0.0) - 0.05), 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_step_label(step_minutes))
    ax.set_ylabel("empirical coverage (% of observed values)")
    ax.set_title(f"Interval coverage by horizon (pale: nominal ± {100 * tolerance:g} points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_coverage_by_step(coverage_by_level: Mapping[float, Sequence[float]], path,
                          step_minutes: float | None = None) -> Path:
    """Write :func:`coverage_by_step_figure` to ``path``."""
    return _save(coverage_by_step_figure(coverage_by_level, step_minutes), path)


# ---------------------------------------------------------------------------------------------- calibration
def pit_figure(pit_histogram: Sequence[float], coverage_by_level: Mapping[float, float] | None = None) -> Figure:
    """Calibration: PIT histogram against the uniform density, and the reliability diagram if given.

    Args:
        pit_histogram: ``[bins]`` fractions of observations in each PIT bin (summing to 1), as in
            a metrics dict's ``pit_histogram``. A calibrated forecast is flat at density 1.
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
    ax.set_xlabel("PIT value F(y) (probability)")
    ax.set_ylabel("density (1 = uniform)")
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
        ax.set_xlabel("nominal coverage (probability)")
        ax.set_ylabel("empirical coverage (fraction)")
        ax.set_title("Central-interval coverage")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_pit(pit_histogram: Sequence[float], path, coverage_by_level: Mapping[float, float] | None = None) -> Path:
    """Write :func:`pit_figure` to ``path``."""
    return _save(pit_figure(pit_histogram, coverage_by_level), path)


# ---------------------------------------------------------------------------------------------- training
def training_figure(history: Sequence[Mapping[str, float]], units: str = "", best_epoch: int | None = None) -> Figure:
    """Training loss, validation MAE and learning rate per epoch, epochs counted from 1 as the CLI does.

    Args:
        history: one dict per epoch (``history.csv``'s rows) with ``epoch`` (0-based, as Lightning and
            ``history.csv`` count; drawn as ``epoch + 1``) and any of ``train_loss``, ``train_nll``,
            ``val_mae``, ``lr`` (missing or NaN values are skipped).
        units: units of the validation MAE.
        best_epoch: the 1-based epoch whose weights the run kept (``training.json``'s ``best_epoch``),
            marked ``best (epoch N)``; default (or when that epoch has no validation MAE): the
            epoch of the lowest validation MAE.
    """
    def col(key: str) -> np.ndarray:
        return np.array([float(r.get(key, np.nan)) if r.get(key) is not None else np.nan for r in history])

    epoch = col("epoch") + 1
    if np.isnan(epoch).all():
        epoch = np.arange(1, len(history) + 1, dtype=float)
    fig, axes = _figure(12, 3.6, 1, 3)
    ax = axes[0, 0]
    for key in ("train_loss", "train_nll"):
        v = col(key)
        ok = np.isfinite(v)
        if ok.any():
            ax.plot(epoch[ok], v[ok], marker=".", label=key)
    ax.set_title("Training loss")
    ax.set_ylabel("loss per value (standardised units)")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[0, 1]
    v = col("val_mae")
    ok = np.isfinite(v)
    if ok.any():
        ax.plot(epoch[ok], v[ok], marker=".", color="tab:green", label="validation MAE")
        rows = np.flatnonzero((epoch == best_epoch) & ok) if best_epoch is not None else []
        best = int(rows[0]) if len(rows) else int(np.nanargmin(np.where(ok, v, np.nan)))
        ax.scatter([epoch[best]], [v[best]], color="tab:red", zorder=3, label=f"best (epoch {epoch[best]:g})")
        ax.legend(fontsize=8)
    ax.set_title("Validation MAE")
    ax.set_ylabel(f"MAE{unit_label(units)}")
    ax = axes[0, 2]
    v = col("lr")
    ok = np.isfinite(v)
    if ok.any():
        ax.plot(epoch[ok], v[ok], color="tab:purple")
        if (v[ok] > 0).all():
            ax.set_yscale("log")
    ax.set_title("Learning rate")
    ax.set_ylabel("learning rate (at the epoch's end)")
    for a in axes[0]:
        a.set_xlabel("epoch (from 1)")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    return fig


def plot_training_curves(history: Sequence[Mapping[str, float]], path, units: str = "",
                         best_epoch: int | None = None) -> Path:
    """Write :func:`training_figure` to ``path``."""
    return _save(training_figure(history, units, best_epoch), path)


# ---------------------------------------------------------------------------------------------- where, when
def time_of_day_figure(tod_slots, mae_by_model, units: str = "", steps_per_day: int | None = None,
                       metric: str = "MAE") -> Figure:
    """MAE by time of day: one line per model (the first solid, baselines dashed), or bars for one series.

    Args:
        tod_slots: ``[S]`` time of day of each value: hours (0 to 24) or, with ``steps_per_day``,
            slot indices ``0..steps_per_day-1``.
        mae_by_model: ``{name: [S] MAE per slot}`` (NaN where there is no observation), or one ``[S]``
            array (drawn as bars, no legend).
        units: units of the MAE, for the y axis.
        steps_per_day: slots per day when ``tod_slots`` are slot indices.
        metric: what the values are, for the y axis (e.g. ``"MAE of the mean"``).
    """
    x = np.asarray(tod_slots, dtype=float)
    if steps_per_day:
        x = x * 24.0 / steps_per_day
    width = float(np.min(np.diff(np.unique(x)))) if len(np.unique(x)) > 1 else 1.0
    fig, axes = _figure(7, 3.6)
    ax = axes[0, 0]
    if isinstance(mae_by_model, Mapping):
        _curves(ax, x + width / 2, mae_by_model, marker=".")  # each slot's value at its middle
        ax.legend(fontsize=8)
    else:
        v = np.asarray(mae_by_model, dtype=float)
        ax.bar(x, np.nan_to_num(v, nan=0.0), width=0.9 * width, align="edge", color="tab:blue", alpha=0.8)
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xlabel("time of day of the target (hours)")
    ax.set_ylabel(f"{metric}{unit_label(units)}")
    ax.set_title("Error by time of day")
    ax.grid(alpha=0.3)
    return fig


def plot_error_by_time_of_day(tod_slots, mae_by_model, path, units: str = "", steps_per_day: int | None = None,
                              metric: str = "MAE") -> Path:
    """Write :func:`time_of_day_figure` to ``path``."""
    return _save(time_of_day_figure(tod_slots, mae_by_model, units, steps_per_day, metric), path)


def node_error_map_figure(lat, lon, mae, units: str = "", edge_index=None, metric: str = "MAE") -> Figure:
    """MAE per sensor on a longitude/latitude scatter (optionally with the road links).

    Args:
        lat, lon: ``[N]`` coordinates in degrees.
        mae: ``[N]`` MAE per node (NaN: drawn grey).
        units: units of the MAE, for the colour bar.
        edge_index: ``[2, E]`` links drawn as thin grey lines, optional.
        metric: what the values are, for the colour bar.
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
    fig.colorbar(sc, ax=ax, label=f"{metric}{unit_label(units)}")
    mid = np.nanmean(lat) if np.isfinite(lat).any() else 0.0
    ax.set_aspect(1.0 / max(math.cos(math.radians(mid)), 1e-3))
    ax.set_xlabel("longitude (degrees)")
    ax.set_ylabel("latitude (degrees)")
    ax.set_title("Error by sensor")
    return fig


def plot_node_error_map(lat, lon, mae, path, units: str = "", edge_index=None, metric: str = "MAE") -> Path:
    """Write :func:`node_error_map_figure` to ``path``."""
    return _save(node_error_map_figure(lat, lon, mae, units, edge_index, metric), path)


def gate_figure(alpha_node_time, sort_nodes: bool = False) -> Figure:
    """Heat map of the gate ``alpha`` (1: spatial branch, 0: temporal branch) over time and nodes.

    Args:
        alpha_node_time: ``[T, N]`` gate values in ``[0, 1]`` (e.g. averaged over windows and features).
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
    fig.colorbar(im, ax=ax, label="alpha (fraction; 1 = spatial, 0 = temporal)")
    ax.set_xlabel("history step (1 = oldest)")
    ax.set_ylabel("node (index" + (", sorted by mean gate)" if sort_nodes else ")"))
    ax.set_title(f"Gate alpha (mean {np.nanmean(a):.2f})")
    return fig


def plot_gate(alpha_node_time, path, sort_nodes: bool = False) -> Path:
    """Write :func:`gate_figure` to ``path``."""
    return _save(gate_figure(alpha_node_time, sort_nodes), path)
