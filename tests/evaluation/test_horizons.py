"""The reported horizon steps adapt to the run's horizon, and metrics report exactly those."""

import pytest
import torch

from stmgt.distributions.mixture import GaussianMixture
from stmgt.evaluation.horizons import reported_horizons
from stmgt.evaluation.metrics import MetricAccumulator


@pytest.mark.parametrize("horizon, steps", [(12, (3, 6, 12)), (3, (3,)), (1, (1,)), (2, (2,)), (6, (3, 6)),
                                            (8, (3, 6, 8)), (24, (3, 6, 12, 24)), (None, (3, 6, 12))])
def test_reported_steps(horizon, steps):
    assert reported_horizons(horizon) == steps


def test_metrics_hold_the_reported_steps_of_their_horizon():
    H, N = 8, 3
    y = torch.arange(H * N, dtype=torch.float32).view(1, H, N)
    dist = GaussianMixture(torch.zeros(1, H, N, 1), torch.ones(1, H, N, 1), torch.zeros(1, H, N, 1))
    acc = MetricAccumulator(H)
    acc.update(dist, y, torch.ones(1, H, N, dtype=torch.bool))
    mae = acc.compute()["mae"]
    assert [k for k in mae if k.isdigit()] == ["3", "6", "8"]
    assert mae["8"] == pytest.approx(y[0, 7].mean().item())  # |0 - y| at the last step, by hand
