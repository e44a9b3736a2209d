"""Masked point and probabilistic metrics, accumulated over batches.

Every metric ignores unobserved targets (``mask`` False) and is computed on de-normalised
values (the data's own units). Each point metric scores the point forecast that minimises it
in expectation, as GluonTS does: the distribution's **median** for MAE and MAPE, its **mean** for
RMSE (for a skewed mixture the two differ, and scoring the mean by MAE penalises a model for the
metric's choice, not its forecast). Reported:

* MAE (median), RMSE (mean), MAPE (median) per horizon step and averaged over all steps
  (``"avg"``); ``mae_of_mean``, the MAE of the mean, for comparison with tables that score the
  mean; MAPE skips targets with ``|y| < mape_eps``;
* NLL (mean negative log-likelihood), CRPS (closed form; also normalised by ``sum |y|``);
* coverage and mean width of central intervals (80% and 90% by default), coverage also per horizon
  step (``coverage80_by_step``);
* a PIT histogram (calibration curve).

``"avg"`` is the mean over all observed (window, step, node) points, the field's convention.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stmgt.distributions.mixture import GaussianMixture
from stmgt.evaluation.horizons import reported_horizons

DEFAULT_LEVELS = (0.8, 0.9)


def masked_mae(pred: Tensor, y: Tensor, mask: Tensor) -> Tensor:
    """Mean |pred - y| over points where ``mask`` is True (a scalar tensor; NaN if none)."""
    m = mask.to(pred.dtype)
    return ((pred - y).abs() * m).sum() / m.sum()


class MetricAccumulator:
    """Collects per-step sums over batches; :meth:`compute` returns the metrics dict.

    Args:
        horizon: forecast steps ``H``.
        levels: central-interval probabilities for coverage and width.
        probabilistic: also compute NLL, CRPS, coverage, width and PIT (needs quantiles).
        pit_bins: bins of the PIT histogram.
        mape_eps: targets with ``|y|`` below this are left out of MAPE.
    """

    def __init__(self, horizon: int, levels=DEFAULT_LEVELS, probabilistic: bool = True, pit_bins: int = 20,
                 mape_eps: float = 1e-3):
        self.H, self.levels, self.prob, self.bins, self.eps = horizon, tuple(levels), probabilistic, pit_bins, mape_eps
        z = lambda: torch.zeros(horizon, dtype=torch.float64)  # noqa: E731
        self.n, self.abs, self.sq, self.ape, self.n_ape = z(), z(), z(), z(), z()
        self.abs_mean = z()
        self.nll, self.crps, self.absy = z(), z(), z()
        self.cover = {lv: z() for lv in self.levels}
        self.width = {lv: z() for lv in self.levels}
        self.pit = torch.zeros(pit_bins, dtype=torch.float64)

    @torch.no_grad()
    def update(self, dist: GaussianMixture, y: Tensor, mask: Tensor) -> None:
        """Add a batch: ``dist`` over ``[B, H, N]`` in data units, ``y`` and ``mask`` ``[B, H, N]``."""
        m = mask.to(torch.float64)
        dims = (0, 2)
        y_ = y.masked_fill(~mask, 0.0)
        err = (dist.mean.double() - y_.double()) * m
        self.n += m.sum(dims)
        self.abs_mean += err.abs().sum(dims)
        self.sq += (err**2).sum(dims)
        if not self.prob:
            self._median_errors(dist.icdf(0.5), y_, m)
            return
        self.nll += (-dist.log_prob(y).double() * m).sum(dims)
        self.crps += (dist.crps(y).double() * m).sum(dims)
        self.absy += (y.double().abs() * m).sum(dims)
        a = [(1 - lv) / 2 for lv in self.levels]
        qs = dist.icdf(torch.tensor(a + [1 - x for x in a] + [0.5])).double()  # [B, H, N, 2L + 1]
        self._median_errors(qs[..., -1], y_, m)
        L = len(self.levels)
        for i, lv in enumerate(self.levels):
            lo, hi = qs[..., i], qs[..., L + i]
            inside = ((y >= lo) & (y <= hi)).double()
            self.cover[lv] += (inside * m).sum(dims)
            self.width[lv] += ((hi - lo) * m).sum(dims)
        pit = dist.cdf(y).double()[mask]
        self.pit += torch.histc(pit, bins=self.bins, min=0.0, max=1.0)

    def _median_errors(self, median: Tensor, y: Tensor, m: Tensor) -> None:
        dims = (0, 2)
        err = ((median.double() - y.double()) * m).abs()
        self.abs += err.sum(dims)
        ok = m * (y.abs() >= self.eps)
        self.ape += (err / y.double().abs().clamp_min(self.eps) * ok).sum(dims)
        self.n_ape += ok.sum(dims)

    def compute(self, horizons=None) -> dict:
        """Metrics at the given 1-based horizon steps (default :func:`reported_horizons` of ``H``) and
        averaged (``"avg"``)."""
        hs = [h for h in (horizons or reported_horizons(self.H)) if 1 <= h <= self.H]

        def per(num: Tensor, den: Tensor, fn=lambda v: v) -> dict:
            out = {str(h): float(fn(num[h - 1] / den[h - 1])) for h in hs}
            out["avg"] = float(fn(num.sum() / den.sum()))
            out["by_step"] = [float(fn(v)) for v in (num / den)]
            return out

        res = {
            "mae": per(self.abs, self.n),
            "rmse": per(self.sq, self.n, torch.sqrt),
            "mape": per(self.ape * 100, self.n_ape),
            "mae_of_mean": per(self.abs_mean, self.n),
            "count": int(self.n.sum()),
        }
        if self.prob:
            res["nll"] = float(self.nll.sum() / self.n.sum())
            res["crps"] = float(self.crps.sum() / self.n.sum())
            res["crps_normalised"] = float(self.crps.sum() / self.absy.sum())
            res["crps_by_step"] = [float(v) for v in self.crps / self.n]
            for lv in self.levels:
                k = int(round(lv * 100))
                res[f"coverage{k}"] = float(self.cover[lv].sum() / self.n.sum())
                res[f"coverage{k}_by_step"] = [float(v) for v in self.cover[lv] / self.n]
                res[f"width{k}"] = float(self.width[lv].sum() / self.n.sum())
            total = self.pit.sum().clamp_min(1)
            res["pit_histogram"] = [float(v) for v in self.pit / total]
        return res
