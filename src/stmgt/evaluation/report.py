"""The evaluation report of a run (``report.md``) and reusable markdown metric tables.

* :func:`metrics_table_markdown`: MAE / RMSE / MAPE at chosen horizon steps and averaged, one row
  per model; a row may be one metrics dict or a list of them (seeds), shown as mean ± std;
* :func:`probabilistic_table_markdown`: NLL, CRPS, normalised CRPS, coverage and width of the
  80% and 90% central intervals, with the same mean ± std support;
* :func:`evaluation_warnings`: one line per baseline the model loses to (naming each horizon and both
  MAEs) and one when the 80% or 90% interval covers more than 5 points off nominal;
* :func:`write_report`: the warnings (the model losing to a baseline, intervals off nominal), the
  protocol, both tables for the model and its baselines (same split, same windows), and the
  figures linked relatively to the run folder.

Metrics dicts are those of :meth:`stmgt.evaluation.metrics.MetricAccumulator.compute`
(``{"mae": {"3": .., "6": .., "12": .., "avg": .., "by_step": [..]}, ..., "nll": .., ...}``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stmgt.evaluation.horizons import STANDARD_HORIZONS, reported_horizons

REPORT_FILE = "report.md"
MISSING = "—"
PLUS_MINUS = "±"

FIGURE_CAPTIONS = {
    "forecasts": "Forecast mean and 80% interval against the observed values for a few roads",
    "error_by_horizon": "MAE by horizon step, model and baselines",
    "coverage_by_step": "Coverage of the 80% and 90% intervals by horizon step against nominal",
    "pit": "Calibration: PIT histogram (flat at 1 when calibrated)",
    "training": "Training curves: loss, validation MAE, learning rate",
    "error_by_time_of_day": "MAE of the forecast mean by time of day, model and baselines",
    "node_error_map": "MAE of the forecast mean by sensor",
    "gate": "Spatial/temporal gate alpha of the last gated block over history steps and nodes",
}
FORECASTS_AT_STEP = "forecasts_step"
"""Figure keys ``forecasts_step12`` etc.: the forecast figure at one horizon step."""


def figure_caption(key: str) -> str:
    """The caption of figure ``key`` (``FIGURE_CAPTIONS``; ``forecasts_stepK`` names its step)."""
    if key in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[key]
    if key.startswith(FORECASTS_AT_STEP) and key[len(FORECASTS_AT_STEP):].isdigit():
        return (f"Forecast at horizon step {key[len(FORECASTS_AT_STEP):]}: mean, 80% and 90% intervals and the"
                " observed values for the roads that vary most (red ticks: no observation)")
    return key.replace("_", " ").capitalize()


#: How far (a fraction: 0.05 is 5 points) an interval's coverage may be from nominal before a warning.
COVERAGE_TOLERANCE = 0.05
#: The central intervals (percent) whose coverage :func:`evaluation_warnings` checks.
CHECKED_LEVELS = (80, 90)

Row = Mapping | Sequence[Mapping]


def _runs(row: Row) -> list[Mapping]:
    """A row as a list of metrics dicts (one per seed)."""
    return [row] if isinstance(row, Mapping) else list(row)


def _values(runs: list[Mapping], get: Callable[[Mapping], float | None]) -> list[float]:
    out = []
    for m in runs:
        try:
            v = get(m)
        except (KeyError, TypeError, IndexError):
            v = None
        if v is not None and math.isfinite(float(v)):
            out.append(float(v))
    return out


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof = 1``; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_value(values: list[float], digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    """``"1.23"`` for one value, ``"1.23 ± 0.04"`` for several (mean ± sample std), ``"—"`` for none.
    One run has no spread to show: a ``± 0.00`` would claim a reproducibility nobody measured."""
    if not values:
        return MISSING
    mean, std = _mean_std([v * scale for v in values])
    if std is None:
        return f"{mean:.{digits}f}{suffix}"
    return f"{mean:.{digits}f} {PLUS_MINUS} {std:.{digits}f}{suffix}"


Column = tuple[str, Callable[[Mapping], float | None], int, float, str]


def _table(rows: Mapping[str, Row], columns: list[Column],
           bold_best: bool = True, best: Mapping[str, Callable[[float], float] | None] | None = None) -> str:
    """A markdown table; ``columns`` are ``(header, getter, digits, scale, suffix)``.

    ``best`` maps a header to the score whose lowest value is bolded (default: the value itself;
    None: no bold in that column).
    """
    header = "| Model | " + " | ".join(c[0] for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    cells: dict[str, list[str]] = {}
    means: dict[str, list[float | None]] = {}
    for name, row in rows.items():
        runs = _runs(row)
        label = f"{name} (n={len(runs)})" if not isinstance(row, Mapping) else str(name)
        cells[name], means[name] = [label], []
        for _, get, digits, scale, suffix in columns:
            vals = _values(runs, get)
            cells[name].append(format_value(vals, digits, scale, suffix))
            means[name].append(sum(vals) / len(vals) if vals else None)
    if bold_best and len(rows) > 1:
        for j, column in enumerate(columns):
            key = (best or {}).get(column[0], lambda v: v)
            if key is None:
                continue
            present = [(key(means[n][j]), n) for n in rows if means[n][j] is not None]
            if present:
                target = min(present)[0]
                for score, n in present:
                    if score == target:
                        cells[n][j + 1] = f"**{cells[n][j + 1]}**"
    lines += ["| " + " | ".join(c) + " |" for c in cells.values()]
    return "\n".join(lines)


def _horizon_label(h, step_minutes: float | None) -> str:
    if h == "avg":
        return "avg"
    return f"{h} ({h * step_minutes:g} min)" if step_minutes else f"step {h}"


def metrics_table_markdown(rows: Mapping[str, Row], horizons: Sequence[int] = STANDARD_HORIZONS,
                           step_minutes: float | None = None, digits: int = 2, bold_best: bool = True) -> str:
    """Point-forecast table: MAE, RMSE and MAPE (%) at each horizon step and averaged over all steps.

    Args:
        rows: ``{model name: metrics dict}`` or ``{model name: [metrics dict per seed]}``; a list
            is shown as mean ± sample standard deviation with ``(n=...)`` after the name.
        horizons: 1-based horizon steps (default 3, 6, 12; see :func:`~stmgt.evaluation.horizons.reported_horizons`);
            a step a model lacks shows ``—``.
        step_minutes: minutes per step, to label the steps in minutes ahead.
        digits: decimals (default 2).
        bold_best: bold the lowest mean of each column when there is more than one row.

    Returns the markdown table (no trailing newline).
    """
    cols = []
    for h in [*horizons, "avg"]:
        label = _horizon_label(h, step_minutes)
        for key, name, suffix in (("mae", "MAE", ""), ("rmse", "RMSE", ""), ("mape", "MAPE", "%")):
            cols.append((f"{name} {label}", lambda m, k=key, h=str(h): m[k][h], digits, 1.0, suffix))
    return _table(rows, cols, bold_best)


def probabilistic_table_markdown(rows: Mapping[str, Row], levels: Sequence[int] = (80, 90),
                                 bold_best: bool = True) -> str:
    """Probabilistic table: NLL, CRPS, normalised CRPS, coverage and mean width of central intervals.

    Args:
        rows: as :func:`metrics_table_markdown`.
        levels: interval probabilities in percent (default 80 and 90): ``coverage80``, ``width80``, ...
        bold_best: bold the best mean of each column (lowest; for coverage, closest to nominal).

    Returns the markdown table (no trailing newline).
    """
    cols = [
        ("NLL", lambda m: m["nll"], 3, 1.0, ""),
        ("CRPS", lambda m: m["crps"], 3, 1.0, ""),
        ("CRPS / sum abs y", lambda m: m["crps_normalised"], 4, 1.0, ""),
    ]
    best = {}
    for lv in levels:
        cols.append((f"Coverage {lv}%", lambda m, k=f"coverage{lv}": m[k], 1, 100.0, "%"))
        cols.append((f"Width {lv}%", lambda m, k=f"width{lv}": m[k], 2, 1.0, ""))
        best[f"Coverage {lv}%"] = lambda v, t=lv / 100: abs(v - t)
        best[f"Width {lv}%"] = None  # a narrow band is only good if it covers: no bold
    return _table(rows, cols, bold_best, best)


def _pct(x) -> str:
    return f"{100 * float(x):g}%"


def _protocol(metrics: Mapping, baselines: Mapping, info: Mapping, horizons: Sequence[int]) -> list[str]:
    dataset = info.get("dataset") or metrics.get("data") or "the dataset"
    units = info.get("units") or metrics.get("units") or ""
    interval = info.get("interval_minutes")
    T, H = info.get("history"), info.get("horizon")
    split = info.get("split") or metrics.get("split") or "test"
    fr = info.get("fractions")
    extra = []
    if info.get("nodes") is not None:
        extra.append(f"{info['nodes']} sensors")
    if interval:
        extra.append(f"one reading every {interval:g} min")
    if units:
        extra.append(f"values in {units}")
    about = " (" + ", ".join(extra) + ")" if extra else ""
    lines = ["## Protocol", "", f"- **Data**: {dataset}{about}."]
    split_txt = (f"train/validation/test = {'/'.join(_pct(f) for f in fr)} of the time steps, in time order"
                 if fr else "chronological train/validation/test parts")
    lines.append(f"- **Splits**: {split_txt}. Windows (history + horizon) are cut *inside* each part,"
                 " so no window crosses a split boundary and no target leaks into training.")
    if T is not None and H is not None:
        past = f" ({T * interval:g} min)" if interval else ""
        ahead = f" ({H * interval:g} min ahead)" if interval else ""
        lines.append(f"- **Task**: {T} history steps{past} -> {H} horizon steps{ahead}, all steps at once.")
    lines.append("- **Scaling**: the target is standardised with the mean and standard deviation of the"
                 " observed *training* values only; forecasts are mapped back exactly (an affine map of the"
                 " mixture), so every number below is in the data's own units"
                 + (f" ({units})." if units else "."))
    lines.append("- **Missing data**: unobserved targets are left out of the loss and of every metric"
                 " (masked metrics); they are never filled. MAPE also leaves out targets with |y| < 1e-3.")
    if split == "test":
        lines.append("- **Model selection**: the checkpoint with the lowest validation MAE is kept (early"
                     " stopping on validation); the test split is evaluated once, with that checkpoint.")
    else:
        lines.append("- **Model selection**: checkpoint chosen on validation MAE; this report is on the"
                     f" `{split}` split, not the test split.")
    names = ", ".join(f"`{n}`" for n in baselines) or "none"
    lines.append(f"- **Baselines**: {names}; fitted or trained on the training split only and evaluated"
                 " on the same windows of the same split.")
    count, win = metrics.get("count"), info.get("windows")
    parts = ([f"{win} windows"] if win is not None else []) + (
        [f"{count:,} observed target values"] if count is not None else [])
    if parts:
        lines.append(f"- **Evaluated on** the `{split}` split: " + ", ".join(parts) + ".")
    steps = ", ".join(str(h) for h in horizons)
    lines.append(f"- **Horizons**: errors at steps {steps} and `avg`, the mean over all observed points"
                 " of all horizon steps.")
    return lines


def display_name(name: str) -> str:
    """A model name as prose and legends write it (``last_value`` -> ``last value``)."""
    return str(name).replace("_", " ")


def _number(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with 2 decimals, or more where 2 would print them equal (``4.021 vs 4.018``)."""
    for digits in (2, 3, 4):
        sa, sb = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if sa != sb:
            break
    return sa, sb


def evaluation_warnings(metrics: Mapping, baselines: Mapping[str, Mapping], run_dir: str | os.PathLike,
                        model: str | None = None, units: str = "") -> list[str]:
    """What a reader of these results should know first, one line each:

    * per baseline, every reported horizon (the steps of ``metrics["mae"]`` and ``avg``) where the
      model's MAE is higher than the baseline's: ``stmgt loses to last value at step 12 (MAE 4.31 vs
      4.02 mph)``, several horizons joined in one line;
    * the 80% and 90% intervals whose empirical coverage is more than :data:`COVERAGE_TOLERANCE` from
      nominal, with ``stmgt calibrate RUN`` as the fix when the run is not calibrated.

    Returns the lines (empty when the model beats or ties both baselines everywhere and covers within
    the tolerance).
    """
    name = model or str(metrics.get("model") or "the model")
    unit = f" {units}" if units else ""
    out = []
    mae = metrics.get("mae") or {}
    keys = [k for k in mae if k.isdigit()] + (["avg"] if "avg" in mae else [])
    for base, b in baselines.items():
        lost = []
        for k in keys:
            m, v = mae.get(k), (b.get("mae") or {}).get(k)
            if m is None or v is None or not (math.isfinite(m) and math.isfinite(v)) or m <= v:
                continue
            sm, sv = _number(m, v)
            where = f"at step {k}" if k != "avg" else "on average over all steps"
            lost.append(f"{where} (MAE {sm} vs {sv}{unit})")
        if lost:
            joined = lost[0] if len(lost) == 1 else ", ".join(lost[:-1]) + " and " + lost[-1]
            out.append(f"{name} loses to {display_name(base)} {joined}")
    off = []
    for level in CHECKED_LEVELS:
        c = metrics.get(f"coverage{level}")
        # + 1e-9: exactly 5 points off (0.8 - 0.75 is 0.05000000000000004 in floats) is within the tolerance
        if c is not None and math.isfinite(c) and abs(c - level / 100) > COVERAGE_TOLERANCE + 1e-9:
            off.append((level, f"{100 * c:.1f}%"))
    if off:
        covers = " and its ".join(f"{level}% interval covers {c}" if i == 0 else f"{level}% interval {c}"
                                  for i, (level, c) in enumerate(off))
        what = (f"{name}'s {covers} of the observed values (more than {100 * COVERAGE_TOLERANCE:g} points off"
                " nominal)")
        if metrics.get("calibrated"):
            out.append(f"{what}, after the spread calibration fitted on the validation split")
        else:
            out.append(f"{what}; fit a spread correction on the validation split with `stmgt calibrate {run_dir}`")
    return out


def _warnings(lines: Sequence[str], model: str) -> list[str]:
    """The "Warnings" section: one bullet per line, or a sentence saying what was checked."""
    out = ["## Warnings", ""]
    if lines:
        out += [f"- **Warning**: {line}." if not line.endswith(".") else f"- **Warning**: {line}" for line in lines]
    else:
        out.append(f"None: `{model}` is at least as good as every baseline by MAE at every reported horizon, and"
                   f" its 80% and 90% intervals cover within {100 * COVERAGE_TOLERANCE:g} points of nominal.")
    return out + [""]


def write_report(run_dir, metrics: Mapping, baselines: Mapping[str, Mapping], info: Mapping,
                 figures: Mapping[str, str | os.PathLike], warnings: Sequence[str] | None = None) -> Path:
    """Write ``report.md`` into ``run_dir`` and return its path.

    Args:
        run_dir: the run folder (created if needed); figure links are made relative to it.
        metrics: the model's metrics dict (may also hold ``model``, ``data``, ``units``, ``split``,
            ``calibrated`` and ``uncalibrated``).
        baselines: ``{name: metrics dict}`` of the baselines on the same split.
        info: what the protocol says: ``dataset``, ``units``, ``split``, ``history``, ``horizon``,
            ``fractions``, ``model``, ``nodes``, ``windows``, ``interval_minutes`` (all optional).
        figures: ``{key: PNG path}``; known keys get a caption (see :func:`figure_caption`).
        warnings: lines for a "Warnings" section right after the title (see
            :func:`~stmgt.evaluation.run_evaluation.evaluation_warnings`); an empty list says that none
            applies; None (default) writes no section.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = str(info.get("model") or metrics.get("model") or "model")
    dataset = info.get("dataset") or metrics.get("data") or ""
    interval = info.get("interval_minutes")
    H = info.get("horizon")
    horizons = reported_horizons(H)
    rows = {model: metrics, **baselines}
    out = [f"# Forecast report: {model}" + (f" on {dataset}" if dataset else ""), ""]
    if warnings is not None:
        out += _warnings(warnings, model)
    out += _protocol(metrics, baselines, info, horizons)
    out += ["", "## Point forecasts", "",
            "Masked MAE, RMSE and MAPE in data units; each metric scores the point forecast that minimises it:"
            " the median of the predictive distribution for MAE and MAPE, its mean for RMSE. Best of each"
            " column in bold.", ""]
    out.append(metrics_table_markdown(rows, horizons, step_minutes=interval))
    out += ["", "## Probabilistic forecasts", "",
            "Mean negative log-likelihood (NLL, per observed value, data units), CRPS (closed form; also"
            " divided by the sum of |y|), and the empirical coverage and mean width of the central 80% and"
            " 90% intervals (a calibrated forecast covers 80% and 90%).", ""]
    prob_rows = dict(rows)
    if metrics.get("calibrated") and isinstance(metrics.get("uncalibrated"), Mapping):
        out += [f"The `{model}` row is after spread calibration fitted on the validation split; the"
                " uncalibrated forecast is shown below it.", ""]
        prob_rows = {model: metrics, f"{model} (uncalibrated)": metrics["uncalibrated"], **baselines}
    out.append(probabilistic_table_markdown(prob_rows))
    if figures:
        out += ["", "## Figures", ""]
        for key, p in figures.items():
            if p is None:
                continue
            rel = Path(os.path.relpath(Path(p).resolve(), run_dir.resolve())).as_posix()
            caption = figure_caption(key)
            out += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    path = run_dir / REPORT_FILE
    path.write_text("\n".join(out).rstrip() + "\n", encoding="utf-8")
    return path
