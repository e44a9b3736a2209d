"""Statistics of the training split that baselines and model heads share: the scaled series, time-of-day
slots and the weekly (day of week x time of day) profile of every road."""

from __future__ import annotations

import numpy as np
import torch


def training_series(data) -> tuple[np.ndarray, np.ndarray]:
    """The training split's target in scaled units and its mask, ``[T_train, N]`` float64 and bool."""
    lo, hi = data.bounds["train"]
    v = data.panel.values[lo:hi, :, 0].astype(np.float64)
    m = data.panel.mask[lo:hi, :, 0]
    z = (v - data.scaler.target_loc) / data.scaler.target_scale
    return np.where(m, z, 0.0), m


def tod_slot(tod, steps_per_day: int):
    """Slot index ``floor(tod * steps_per_day)`` in ``0..steps_per_day-1`` of a time of day in ``[0, 1)``.

    A tolerance of 1e-3 slot absorbs float32 rounding of ``k / steps_per_day``.
    """
    if torch.is_tensor(tod):
        return (tod.float() * steps_per_day + 1e-3).floor().long().clamp(0, steps_per_day - 1)
    return np.clip(np.floor(np.asarray(tod, np.float64) * steps_per_day + 1e-3).astype(np.int64), 0,
                   steps_per_day - 1)


def _moments(s: np.ndarray, s2: np.ndarray, n: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (``ddof=1``) from sums, NaN where ``n`` is below 1 (mean) or min_count (std)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n >= 1, s / n, np.nan)
        var = np.where(n >= max(min_count, 2), (s2 - n * mean**2) / (n - 1), np.nan)
    return mean, np.sqrt(np.maximum(var, 0.0))


def weekly_sums(data, steps_per_day: int, day_classes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per road, the sum, sum of squares and count of its observed training readings (scaled units) at every
    day of week ``d`` and time-of-day slot ``s``: each ``float64 [7, S, N]``.

    With ``day_classes`` (the category of each weekday, Monday first; see
    :func:`~stmgt.data.panel.day_classes`) the days of one category are pooled: every row of a category holds
    the category's sums (Los-loop's unseen Tuesday is then read from the training weekdays, not left empty).
    """
    lo, hi = data.bounds["train"]
    z, m = training_series(data)  # [T_train, N]
    tod, dow = data.panel.calendar()
    S = steps_per_day
    classes = np.asarray(range(7) if day_classes is None else day_classes, dtype=np.int64)
    key = torch.from_numpy(classes[dow[lo:hi]] * S + tod_slot(tod[lo:hi], S))  # [T_train]
    zm = torch.from_numpy(z * m)
    mf = torch.from_numpy(m.astype(np.float64))
    rows = torch.from_numpy(classes)

    def sums(a: torch.Tensor) -> np.ndarray:
        out = torch.zeros(7 * S, a.shape[1], dtype=torch.float64).index_add_(0, key, a)
        return out.view(7, S, -1)[rows].numpy()  # [7*S, N] -> [7, S, N], each day its category's row

    return sums(zm), sums(zm * zm), sums(mf)


def weekly_stats(data, steps_per_day: int, day_classes=None) -> tuple[tuple, tuple]:
    """The two sets of :func:`weekly_sums` a weekly profile reads: ``(pooled, each)``, the sums with days pooled
    by ``day_classes`` and the sums with every training reading counted once (its slot and road levels)."""
    each = weekly_sums(data, steps_per_day)
    return (each if day_classes is None else weekly_sums(data, steps_per_day, day_classes)), each


def profile_of(stats: tuple[tuple, tuple], min_count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std ``[7, S, N]`` from :func:`weekly_stats` with the fallbacks of :func:`weekly_profile`."""
    (s, s2, n), (s0, s02, n0) = stats
    mean_ds, std_ds = _moments(s, s2, n, min_count)
    mean_s, std_s = _moments(s0.sum(0), s02.sum(0), n0.sum(0), min_count)  # [S, N]
    mean_n, std_n = _moments(s0.sum((0, 1)), s02.sum((0, 1)), n0.sum((0, 1)), 2)  # [N]
    mean_n = np.nan_to_num(mean_n, nan=0.0)
    std_n = np.nan_to_num(std_n, nan=1.0)
    mean = np.where(np.isnan(mean_ds), np.where(np.isnan(mean_s), mean_n, mean_s), mean_ds)
    std = np.where(np.isnan(std_ds), np.where(np.isnan(std_s), std_n, std_s), std_ds)
    return mean, std


def weekly_profile(data, steps_per_day: int, min_count: int = 2, day_classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Per road, the mean and sample std of its observed training readings (scaled units) at every day of
    week ``d`` and time-of-day slot ``s``: ``(mean, std)``, each ``float64 [7, S, N]``.

    Where ``(d, s)`` holds no reading the mean falls back to slot ``s`` over all days, then to the road's
    mean (0 for a road never observed); the std likewise, each level needing ``min_count`` readings (the
    road level: two; 1 for a road without two readings). ``day_classes`` pools days as in :func:`weekly_sums`.
    """
    return profile_of(weekly_stats(data, steps_per_day, day_classes), min_count)
