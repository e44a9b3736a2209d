import numpy as np
import torch

from stmgt.calibration import fit_spread_factors, spread_calibrator
from stmgt.distributions.mixture import GaussianMixture
from stmgt.evaluation.metrics import MetricAccumulator


def test_spread_factors_recover_a_known_miscalibration():
    torch.manual_seed(0)
    B, H, N = 400, 3, 20
    truth_sd = torch.tensor([1.0, 2.0, 3.0]).view(1, H, 1)
    y = torch.randn(B, H, N) * truth_sd
    # forecasts claim std 1 at every step: right at step 1, 2x and 3x too narrow later
    d = GaussianMixture.gaussian(torch.zeros(B, H, N), torch.ones(1))
    mask = torch.ones(B, H, N, dtype=torch.bool)
    f = fit_spread_factors([d], [y], [mask])
    np.testing.assert_allclose(f, [1.0, 2.0, 3.0], rtol=0.08)
    acc = MetricAccumulator(H)
    acc.update(spread_calibrator(f)(d), y, mask)
    r = acc.compute()
    assert abs(r["coverage80"] - 0.8) < 0.03 and abs(r["coverage90"] - 0.9) < 0.03


def test_calibration_keeps_the_point_forecast():
    d = GaussianMixture(torch.randn(2, 3, 4, 5), torch.rand(2, 3, 4, 5) + 0.1, torch.randn(2, 3, 4, 5))
    c = spread_calibrator([0.5, 1.0, 2.0])(d)
    torch.testing.assert_close(c.mean, d.mean)
    torch.testing.assert_close(c.stddev[:, 2], 2 * d.stddev[:, 2])
