"""From a :class:`~stmgt.data.panel.Panel` to training batches.

* :func:`chronological_splits` cuts the series in time (70/10/20 by default) and
  :func:`window_starts` makes windows *inside* each part, so no target leaks across splits.
* :class:`Scaler` is fitted on the observed training values only.
* :class:`PanelTensors` holds the whole panel once as tensors; a window is a slice of it.
  Datasets hold only window start positions and :class:`WindowCollator` gathers a batch
  with one indexing operation, so windows are never materialised one by one.
* :class:`Batch` is the one tensor layout used end to end: ``[B, T, N, F]`` plus masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stmgt.data.panel import Panel
from stmgt.errors import DataError

SPLITS = ("train", "val", "test")


def chronological_splits(num_steps: int, fractions=(0.7, 0.1, 0.2)) -> dict[str, tuple[int, int]]:
    """Step ranges ``[lo, hi)`` of the train/val/test parts of a series of ``num_steps``."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1) > 1e-6:
        raise DataError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_train = int(round(num_steps * f[0]))
    n_val = int(round(num_steps * f[1]))
    b = [0, n_train, n_train + n_val, num_steps]
    return {s: (b[i], b[i + 1]) for i, s in enumerate(SPLITS)}


def window_starts(lo: int, hi: int, history: int, horizon: int, split: str = "") -> np.ndarray:
    """Start positions of every window (history + horizon steps) that lies inside ``[lo, hi)``."""
    need = history + horizon
    if hi - lo < need:
        raise DataError(
            f"the {split or 'data'} split has {hi - lo} steps but one window needs {need}"
            f" (history {history} + horizon {horizon}); use a shorter history/horizon or more data"
        )
    return np.arange(lo, hi - need + 1, dtype=np.int64)


@dataclass
class Scaler:
    """Per-channel standardisation ``(x - mean) / std`` fitted on observed training values."""

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, values: np.ndarray, mask: np.ndarray) -> Scaler:
        """Fit on ``values [T, N, C]`` where ``mask`` is True (call it on the training part only)."""
        means, stds = [], []
        for c in range(values.shape[-1]):
            obs = values[..., c][mask[..., c]]
            if obs.size == 0:
                raise DataError(f"channel {c} has no observed value in the training split; cannot fit the scaler")
            means.append(float(obs.mean()))
            stds.append(float(max(obs.std(), 1e-6)))
        return cls(means, stds)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)

    @property
    def target_loc(self) -> float:
        return self.mean[0]

    @property
    def target_scale(self) -> float:
        return self.std[0]


@dataclass
class Batch:
    """A batch of windows; every model takes one and returns a distribution over ``y``.

    Shapes (``B`` windows, ``T`` history steps, ``H`` horizon steps, ``N`` nodes):

    * ``x``       ``[B, T, N, C]`` scaled inputs, 0 where unobserved;
    * ``x_mask``  ``[B, T, N]`` bool, target channel observed in the history;
    * ``y``       ``[B, H, N]`` targets in the data's own units, 0 where unobserved;
    * ``y_mask``  ``[B, H, N]`` bool, target observed (metrics and loss use only these);
    * ``tod``     ``[B, T + H]`` time of day in ``[0, 1)``; ``dow`` ``[B, T + H]`` day of week;
    * ``weather`` ``[B, T + H, W]`` scaled covariates over history and horizon, or None;
    * ``start``   ``[B]`` position of each window's first step in the panel.
    """

    x: Tensor
    x_mask: Tensor
    y: Tensor
    y_mask: Tensor
    tod: Tensor
    dow: Tensor
    weather: Tensor | None
    start: Tensor

    @property
    def history(self) -> int:
        return self.x.shape[1]

    @property
    def horizon(self) -> int:
        return self.y.shape[1]

    def to(self, device) -> Batch:
        return Batch(**{k: None if v is None else v.to(device) for k, v in self.__dict__.items()})


class PanelTensors:
    """The panel as tensors, scaled once; windows are gathered from it by :class:`WindowCollator`.

    Args:
        panel: the data.
        scaler: fitted on the training split (see :meth:`Scaler.fit`).
        cov_scaler: fitted on the training split's covariates, or None.
    """

    def __init__(self, panel: Panel, scaler: Scaler, cov_scaler: Scaler | None = None):
        x = scaler.transform(panel.values)
        x = np.where(panel.mask, x, 0.0).astype(np.float32)
        self.x = torch.from_numpy(x)  # [T_total, N, C]
        self.x_mask = torch.from_numpy(panel.mask[..., 0].copy())  # [T_total, N]
        self.y = torch.from_numpy(np.where(panel.mask[..., 0], panel.values[..., 0], 0.0).astype(np.float32))
        tod, dow = panel.calendar()
        self.tod = torch.from_numpy(tod)
        self.dow = torch.from_numpy(dow)
        self.weather = None
        if panel.covariates is not None and cov_scaler is not None:
            self.weather = torch.from_numpy(cov_scaler.transform(panel.covariates))  # [T_total, W]


class WindowCollator:
    """``collate_fn`` that turns a list of window starts into a :class:`Batch` by one gather."""

    def __init__(self, tensors: PanelTensors, history: int, horizon: int):
        self.t, self.history, self.horizon = tensors, history, horizon
        self.offsets = torch.arange(history + horizon)

    def __call__(self, starts) -> Batch:
        s = torch.as_tensor(np.asarray(starts), dtype=torch.long)
        idx = s[:, None] + self.offsets  # [B, T + H]
        h = self.history
        t = self.t
        return Batch(
            x=t.x[idx[:, :h]],  # [B, T, N, C]
            x_mask=t.x_mask[idx[:, :h]],  # [B, T, N]
            y=t.y[idx[:, h:]],  # [B, H, N]
            y_mask=t.x_mask[idx[:, h:]],
            tod=t.tod[idx],
            dow=t.dow[idx],
            weather=None if t.weather is None else t.weather[idx],  # [B, T + H, W]
            start=s,
        )


class WindowDataset(torch.utils.data.Dataset):
    """The window start positions of one split; items are ints, batches come from the collator."""

    def __init__(self, starts: np.ndarray):
        self.starts = np.asarray(starts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> int:
        return int(self.starts[i])


class PanelData:
    """Splits, scalers, tensors and loaders of one panel for one history/horizon.

    Args:
        panel: the data.
        history: input steps ``T``.
        horizon: forecast steps ``H``.
        fractions: chronological train/val/test fractions.
        batch_size: windows per batch.
    """

    def __init__(self, panel: Panel, history: int = 12, horizon: int = 12, fractions=(0.7, 0.1, 0.2),
                 batch_size: int = 32):
        if history < 1 or horizon < 1:
            raise DataError(f"history and horizon must be at least 1, got {history} and {horizon}")
        if history + horizon > panel.num_steps:
            raise DataError(
                f"{panel.name}: history {history} + horizon {horizon} is longer than the data"
                f" ({panel.num_steps} steps)"
            )
        self.panel, self.history, self.horizon, self.batch_size = panel, history, horizon, batch_size
        self.bounds = chronological_splits(panel.num_steps, fractions)
        self.starts = {s: window_starts(*self.bounds[s], history, horizon, s) for s in SPLITS}
        lo, hi = self.bounds["train"]
        self.scaler = Scaler.fit(panel.values[lo:hi], panel.mask[lo:hi])
        self.cov_scaler = None
        if panel.covariates is not None:
            cov = panel.covariates[lo:hi][:, None, :]
            self.cov_scaler = Scaler.fit(cov, np.ones_like(cov, dtype=bool))
        self.tensors = PanelTensors(panel, self.scaler, self.cov_scaler)
        self.collate = WindowCollator(self.tensors, history, horizon)
        self.edge_index = torch.from_numpy(panel.edge_index)
        self.edge_weight = None if panel.edge_weight is None else torch.from_numpy(panel.edge_weight)

    @property
    def num_nodes(self) -> int:
        return self.panel.num_nodes

    @property
    def in_channels(self) -> int:
        return self.panel.num_channels

    @property
    def weather_dim(self) -> int:
        return self.panel.num_covariates

    def loader(self, split: str, shuffle: bool | None = None, batch_size: int | None = None,
               generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            WindowDataset(self.starts[split]),
            batch_size=batch_size or self.batch_size,
            shuffle=(split == "train") if shuffle is None else shuffle,
            collate_fn=self.collate,
            generator=generator,
        )

    def batch_at(self, starts) -> Batch:
        return self.collate(starts)
