"""The data contract: a :class:`Panel` of sensor readings on a static graph.

A panel is what every loader returns and every model trains on:

* ``values``      ``[T, N, C]`` float32 readings; channel 0 is the forecast target;
* ``mask``        ``[T, N, C]`` bool, True where a value was observed;
* ``timestamps``  ``[T]`` ``datetime64[ns]`` at one fixed interval;
* ``node_ids``    ``N`` unique strings (``coords`` ``[N, 2]`` lat/lon when known);
* ``edge_index``  ``[2, E]`` int64 directed edges ``source -> target`` (``edge_weight`` ``[E]`` optional);
* ``covariates``  ``[T, W]`` float32 global covariates such as temperature, wind, precipitation.

:meth:`Panel.validate` checks all of this and raises :class:`~stmgt.errors.DataError` with a
one-line message naming what is wrong and where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stmgt.errors import DataError

PANEL_FILE = "panel.npz"
META_FILE = "meta.json"


@dataclass
class Panel:
    """A regular time series of readings on a graph of ``N`` nodes.

    Args:
        values: ``[T, N]`` or ``[T, N, C]`` readings (channel 0 is the target). Unobserved
            entries may hold anything (NaN, 0); ``mask`` says which are real.
        timestamps: ``[T]`` strictly increasing, equally spaced times (anything
            :func:`numpy.datetime64` accepts).
        edge_index: ``[2, E]`` directed edges as node positions ``0..N-1``.
        mask: observed-value mask, same shape as ``values``; default: finite values.
        node_ids: ``N`` unique names; default ``"0".."N-1"``.
        edge_weight: ``[E]`` finite non-negative weights, optional.
        covariates: ``[T, W]`` global covariates (e.g. weather), optional.
        covariate_names: ``W`` names of the covariates.
        coords: ``[N, 2]`` latitude/longitude of each node, optional.
        name: dataset name used in reports.
        units: units of the target, used in reports (e.g. ``"km/h"``, ``"mph"``).
    """

    values: np.ndarray
    timestamps: np.ndarray
    edge_index: np.ndarray
    mask: np.ndarray | None = None
    node_ids: list[str] | None = None
    edge_weight: np.ndarray | None = None
    covariates: np.ndarray | None = None
    covariate_names: list[str] = field(default_factory=list)
    coords: np.ndarray | None = None
    name: str = "panel"
    units: str = ""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> Panel:
        """Check shapes, timestamps, graph and covariates; normalise dtypes in place.

        The checks run in this order, each normalising its fields before the next starts:
        values and mask, timestamps, node ids, edges, covariates, coords. Returns ``self``.
        """
        T, N = self._check_values()
        self._check_timestamps(T)
        self._check_node_ids(N)
        self._check_edge_index(N)
        self._check_edge_weight()
        self._check_covariates(T)
        self._check_coords(N)
        return self

    def _check_values(self) -> tuple[int, int]:
        """``values`` -> float32 ``[T, N, C]`` (0 where unobserved), ``mask`` -> bool; returns ``(T, N)``."""
        v = np.asarray(self.values)
        if v.ndim == 2:
            v = v[:, :, None]
        if v.ndim != 3:
            raise DataError(f"{self.name}: values must be [T, N] or [T, N, C], got shape {tuple(v.shape)}")
        if not np.issubdtype(v.dtype, np.number):
            raise DataError(f"{self.name}: values must be numeric, got dtype {v.dtype}")
        T, N, C = v.shape
        if T < 2 or N < 1:
            raise DataError(f"{self.name}: values need at least 2 time steps and 1 node, got shape {v.shape}")
        v = v.astype(np.float32, copy=False)
        m = self._mask_for(v)
        bad = m & ~np.isfinite(v)
        if bad.any():
            t, n, c = np.argwhere(bad)[0]
            raise DataError(
                f"{self.name}: value at step {t}, node {n}, channel {c} is {v[t, n, c]} but marked observed;"
                " set its mask to False"
            )
        self.values, self.mask = np.where(m, v, 0.0).astype(np.float32), m
        return T, N

    def _mask_for(self, v: np.ndarray) -> np.ndarray:
        """The bool mask ``[T, N, C]`` of values ``v``: the given one (``[T, N]`` widened), else finite values."""
        if self.mask is None:
            return np.isfinite(v)
        m = np.asarray(self.mask, dtype=bool)
        if m.ndim == 2:
            m = m[:, :, None]
        if m.shape != v.shape:
            raise DataError(f"{self.name}: mask has shape {m.shape} but values have shape {v.shape}")
        return m

    def _check_timestamps(self, T: int) -> None:
        """``timestamps`` -> ``[T]`` ``datetime64[ns]``, no NaT, strictly increasing at one fixed gap."""
        ts = np.asarray(self.timestamps)
        try:
            ts = ts.astype("datetime64[ns]")
        except (TypeError, ValueError) as e:
            raise DataError(f"{self.name}: timestamps are not dates/times ({e})") from None
        if ts.shape != (T,):
            raise DataError(f"{self.name}: {ts.shape[0] if ts.ndim else 0} timestamps for {T} time steps")
        if np.isnat(ts).any():
            raise DataError(f"{self.name}: timestamp {int(np.argmax(np.isnat(ts)))} is missing (NaT)")
        d = np.diff(ts.astype(np.int64))
        if (d <= 0).any():
            i = int(np.argmax(d <= 0))
            raise DataError(
                f"{self.name}: timestamps must increase; step {i + 1} ({ts[i + 1]}) is not after step {i}"
                f" ({ts[i]}); sort the data and drop duplicate times"
            )
        if (d != d[0]).any():
            i = int(np.argmax(d != d[0]))
            raise DataError(
                f"{self.name}: timestamps are irregular; the gap after step {i} ({ts[i]}) is"
                f" {np.timedelta64(int(d[i]), 'ns').astype('timedelta64[s]')} but the first gap is"
                f" {np.timedelta64(int(d[0]), 'ns').astype('timedelta64[s]')}; resample to a fixed interval"
                " (missing steps become masked values)"
            )
        self.timestamps = ts

    def _check_node_ids(self, N: int) -> None:
        """``node_ids`` -> ``N`` unique strings (default ``"0".."N-1"``)."""
        ids = [str(i) for i in range(N)] if self.node_ids is None else [str(i) for i in self.node_ids]
        if len(ids) != N:
            raise DataError(f"{self.name}: {len(ids)} node ids for {N} nodes in values")
        if len(set(ids)) != N:
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"{self.name}: node id {dup!r} appears more than once")
        self.node_ids = ids

    def _check_edge_index(self, N: int) -> None:
        """``edge_index`` -> int64 ``[2, E]`` of whole node positions in ``0..N-1`` (empty: ``[2, 0]``)."""
        ei = np.asarray(self.edge_index)
        if ei.size == 0:
            ei = np.zeros((2, 0), dtype=np.int64)
        if ei.ndim != 2 or ei.shape[0] != 2:
            raise DataError(f"{self.name}: edge_index must have shape [2, E], got {tuple(ei.shape)}")
        if not np.issubdtype(ei.dtype, np.integer):
            if not np.isfinite(ei).all():
                raise DataError(f"{self.name}: edge_index contains NaN or inf")
            if (ei != np.round(ei)).any():
                raise DataError(f"{self.name}: edge_index must hold integer node positions")
        ei = ei.astype(np.int64)
        if ei.size and (ei.min() < 0 or ei.max() >= N):
            j = int(np.argmax((ei < 0).any(0) | (ei >= N).any(0)))
            raise DataError(
                f"{self.name}: edge {j} ({ei[0, j]} -> {ei[1, j]}) names a node outside 0..{N - 1}"
            )
        self.edge_index = ei

    def _check_edge_weight(self) -> None:
        """``edge_weight`` (when given) -> float32 ``[E]``, finite and non-negative."""
        if self.edge_weight is None:
            return
        w = np.asarray(self.edge_weight, dtype=np.float32).reshape(-1)
        if w.shape[0] != self.edge_index.shape[1]:
            raise DataError(f"{self.name}: {w.shape[0]} edge weights for {self.edge_index.shape[1]} edges")
        if not np.isfinite(w).all():
            raise DataError(f"{self.name}: edge weight {int(np.argmax(~np.isfinite(w)))} is NaN or inf")
        if (w < 0).any():
            raise DataError(f"{self.name}: edge weight {int(np.argmax(w < 0))} is negative")
        self.edge_weight = w

    def _check_covariates(self, T: int) -> None:
        """``covariates`` -> float32 ``[T, W]`` without NaN, with ``W`` names (default ``cov0``...);
        no covariates: no names."""
        if self.covariates is None:
            self.covariate_names = []
            return
        cov = np.asarray(self.covariates, dtype=np.float32)
        if cov.ndim == 1:
            cov = cov[:, None]
        if cov.ndim != 2 or cov.shape[0] != T:
            raise DataError(f"{self.name}: covariates must be [T={T}, W], got {tuple(cov.shape)}")
        if not np.isfinite(cov).all():
            t, w = np.argwhere(~np.isfinite(cov))[0]
            raise DataError(
                f"{self.name}: covariate {w} is NaN at step {t}; fill gaps (e.g. forward-fill) before"
                " building the panel"
            )
        names = list(self.covariate_names) or [f"cov{i}" for i in range(cov.shape[1])]
        if len(names) != cov.shape[1]:
            raise DataError(f"{self.name}: {len(names)} covariate names for {cov.shape[1]} covariates")
        self.covariates, self.covariate_names = cov, names

    def _check_coords(self, N: int) -> None:
        """``coords`` (when given) -> float64 ``[N, 2]`` (lat, lon)."""
        if self.coords is not None:
            xy = np.asarray(self.coords, dtype=np.float64)
            if xy.shape != (N, 2):
                raise DataError(f"{self.name}: coords must be [N={N}, 2] (lat, lon), got {tuple(xy.shape)}")
            self.coords = xy

    # ------------------------------------------------------------------ properties
    @property
    def num_steps(self) -> int:
        return self.values.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.values.shape[1]

    @property
    def num_channels(self) -> int:
        return self.values.shape[2]

    @property
    def num_covariates(self) -> int:
        return 0 if self.covariates is None else self.covariates.shape[1]

    @property
    def interval(self) -> np.timedelta64:
        return self.timestamps[1] - self.timestamps[0]

    @property
    def interval_minutes(self) -> float:
        return float(self.interval / np.timedelta64(1, "m"))

    @property
    def observed_fraction(self) -> float:
        return float(self.mask[..., 0].mean())

    def calendar(self) -> tuple[np.ndarray, np.ndarray]:
        """Time of day as a fraction of the day ``[T]`` (float32) and day of week ``[T]`` (0 = Monday)."""
        ts = self.timestamps
        days = ts.astype("datetime64[D]")
        tod = ((ts - days) / np.timedelta64(1, "s") / 86400.0).astype(np.float32)
        dow = ((days.astype(np.int64) + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday
        return tod, dow

    def slice(self, start: int, stop: int) -> Panel:
        """The panel restricted to time steps ``start:stop``."""
        return replace(
            self,
            values=self.values[start:stop],
            mask=self.mask[start:stop],
            timestamps=self.timestamps[start:stop],
            covariates=None if self.covariates is None else self.covariates[start:stop],
        )

    def summary(self) -> str:
        start = np.datetime_as_string(self.timestamps[0], unit="s").replace("T", " ")
        return (
            f"{self.name}: {self.num_steps} steps x {self.num_nodes} nodes x {self.num_channels} channels,"
            f" every {self.interval_minutes:g} min from {start};"
            f" {self.edge_index.shape[1]} edges;"
            f" {self.observed_fraction:.1%} observed; covariates: {', '.join(self.covariate_names) or 'none'}"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``panel.npz`` and ``meta.json`` into ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {
            "values": self.values,
            "mask": self.mask,
            "timestamps": self.timestamps.astype(np.int64),
            "edge_index": self.edge_index,
        }
        for k in ("edge_weight", "covariates", "coords"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        tmp = d / (PANEL_FILE + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(d / PANEL_FILE)
        meta = {
            "format": "stmgt-panel",
            "version": 1,
            "name": self.name,
            "units": self.units,
            "node_ids": self.node_ids,
            "covariate_names": self.covariate_names,
        }
        (d / META_FILE).write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Panel:
        """Read a panel written by :meth:`save`."""
        d = Path(directory)
        if not (d / PANEL_FILE).is_file():
            raise DataError(f"{d}: no {PANEL_FILE} here; write one with `stmgt data synth --out {d}`")
        meta = json.loads((d / META_FILE).read_text()) if (d / META_FILE).is_file() else {}
        with np.load(d / PANEL_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(
            values=arrays["values"],
            mask=arrays["mask"],
            timestamps=arrays["timestamps"].astype("datetime64[ns]"),
            edge_index=arrays["edge_index"],
            edge_weight=arrays.get("edge_weight"),
            covariates=arrays.get("covariates"),
            coords=arrays.get("coords"),
            node_ids=meta.get("node_ids"),
            covariate_names=meta.get("covariate_names", []),
            name=meta.get("name", d.name),
            units=meta.get("units", ""),
        )


def day_classes(seen_days) -> tuple[int, ...]:
    """The day-of-week categories a model can learn from training days ``seen_days`` (0 = Monday).

    A learned day-of-week embedding has no trained row for a day the training split never
    contains (Los-loop's seven days are cut so that validation and test are the only Tuesday and
    Wednesday): that row would stay a random vector exactly where the model is scored. So: all seven
    days seen -> seven categories; otherwise weekday/weekend when both occur (an unseen Tuesday is
    a weekday); otherwise one category (no day-of-week information).

    Returns: ``classes[7]``, the category of each weekday (Monday first).
    """
    seen = {int(d) for d in seen_days}
    if seen >= set(range(7)):
        return tuple(range(7))
    if seen & set(range(5)) and seen & {5, 6}:
        return (0, 0, 0, 0, 0, 1, 1)
    return (0,) * 7
