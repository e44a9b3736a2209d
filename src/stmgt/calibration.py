"""Post-hoc calibration of the predictive distribution, fitted on the validation split.

For each horizon step ``h`` a spread factor ``s_h`` widens or narrows the mixture about its
mean (:meth:`GaussianMixture.scale_spread`: the mean, hence MAE, is unchanged). ``s_h`` is
chosen on the validation split to bring the empirical coverage of the central 80% and 90%
intervals to nominal (the sum of the two absolute coverage errors is minimised over a
log-spaced grid; the first, smallest factor wins a tie). Stored as ``calibration.json`` in the run folder
and applied by every forecast made from the run (:class:`~stmgt.forecaster.Forecaster`); fitted by
:func:`~stmgt.forecaster.calibrate_run`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from stmgt.distributions.mixture import GaussianMixture

FILE = "calibration.json"
LEVELS = (0.8, 0.9)


def spread_calibrator(factors) -> callable:
    """``(dist, batch) -> dist`` applying per-step factors ``[H]`` to a ``[B, H, N]`` forecast."""
    f = torch.as_tensor(factors, dtype=torch.float32)

    def apply(dist: GaussianMixture, batch=None) -> GaussianMixture:
        return dist.scale_spread(f.to(dist.means.device).view(1, -1, 1))

    return apply


def stored_calibrator(run_dir: str | Path):
    """The run's stored calibration as ``(dist, batch) -> dist``, or None when it has none."""
    from stmgt.errors import RunError

    p = Path(run_dir) / FILE
    if not p.is_file():
        return None
    try:
        factors = [float(f) for f in json.loads(p.read_text())["factors"]]
    except (ValueError, KeyError, TypeError):
        raise RunError(f"{p}: unreadable (not the file `stmgt calibrate` writes); delete it or run"
                       f" `stmgt calibrate {run_dir}` again") from None
    return spread_calibrator(factors)


@torch.no_grad()
def fit_spread_factors(dists: list[GaussianMixture], ys: list[torch.Tensor], masks: list[torch.Tensor],
                       grid=None) -> np.ndarray:
    """Per-step spread factors ``[H]`` from validation forecasts (each ``[B, H, N]``)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 97)) if grid is None else np.asarray(grid)
    d = GaussianMixture.cat([x.detach() for x in dists])
    y, m = torch.cat(ys), torch.cat(masks)
    H = y.shape[1]
    factors = np.ones(H)
    for h in range(H):
        dh = d.index((slice(None), slice(h, h + 1)))
        yh, mh = y[:, h:h + 1], m[:, h:h + 1]
        # standardised deviations: the coverage at factor s is P(|y - mean| <= s * half-width)
        lo_hi = {lv: dh.interval(lv) for lv in LEVELS}
        mean = dh.mean
        best, best_err = 1.0, None
        for s in grid:
            err = 0.0
            for lv in LEVELS:
                lo, hi = lo_hi[lv]
                inside = (yh >= mean + s * (lo - mean)) & (yh <= mean + s * (hi - mean))
                err += abs(float(inside[mh].float().mean()) - lv)
            err = round(err, 4)
            if best_err is None or err < best_err:
                best, best_err = float(s), err
        factors[h] = best
    return factors


def save_calibration(run_dir: str | Path, factors) -> dict:
    """Write the per-step ``factors`` as the run's ``calibration.json`` (atomically: a reader sees the old file
    or the new one, never half of one); return what was written."""
    out = {"method": "per-step spread factor fitted on validation coverage (80%, 90%)",
           "factors": [float(f) for f in factors]}
    path = Path(run_dir) / FILE
    tmp = path.with_name(f"{FILE}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return out
