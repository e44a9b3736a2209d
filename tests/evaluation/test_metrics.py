import numpy as np
import torch

from stmgt.distributions.mixture import GaussianMixture
from stmgt.evaluation.metrics import MetricAccumulator, masked_mae


def test_masked_points_are_ignored():
    torch.manual_seed(0)
    B, H, N = 4, 12, 3
    y = torch.rand(B, H, N) * 50 + 10
    mean = y + torch.randn(B, H, N)
    mask = torch.rand(B, H, N) > 0.3
    # garbage where unobserved must not change anything
    y2 = torch.where(mask, y, torch.full_like(y, 1e6))
    d = GaussianMixture.gaussian(mean, torch.ones(1))
    a1, a2 = MetricAccumulator(H), MetricAccumulator(H)
    a1.update(d, y, mask)
    a2.update(d, y2, mask)
    r1, r2 = a1.compute(), a2.compute()
    for k in ("mae", "rmse", "mape"):
        assert r1[k] == r2[k]
    assert r1["crps"] == r2["crps"] and r1["coverage80"] == r2["coverage80"]
    err = (mean - y).numpy()
    m = mask.numpy()
    assert np.isclose(r1["mae"]["avg"], np.abs(err[m]).mean())
    assert np.isclose(r1["mae"]["3"], np.abs(err[:, 2][m[:, 2]]).mean())
    assert np.isclose(r1["rmse"]["12"], np.sqrt((err[:, 11][m[:, 11]] ** 2).mean()))
    assert np.isclose(r1["mape"]["6"], 100 * (np.abs(err[:, 5]) / y[:, 5].numpy())[m[:, 5]].mean())
    assert np.isclose(float(masked_mae(mean, y2, mask)), r1["mae"]["avg"], rtol=1e-6)


def test_accumulating_batches_equals_one_batch():
    torch.manual_seed(1)
    y = torch.randn(6, 4, 5)
    d = GaussianMixture(torch.randn(6, 4, 5, 3), torch.rand(6, 4, 5, 3) + 0.5, torch.randn(6, 4, 5, 3))
    mask = torch.rand(6, 4, 5) > 0.2
    one, two = MetricAccumulator(4), MetricAccumulator(4)
    one.update(d, y, mask)
    two.update(d.index(slice(0, 2)), y[:2], mask[:2])
    two.update(d.index(slice(2, 6)), y[2:], mask[2:])
    a, b = one.compute(), two.compute()
    assert np.isclose(a["mae"]["avg"], b["mae"]["avg"]) and np.isclose(a["crps"], b["crps"])
    assert np.isclose(a["nll"], b["nll"]) and np.isclose(a["coverage90"], b["coverage90"])


def test_calibrated_gaussian_has_nominal_coverage_and_flat_pit():
    torch.manual_seed(2)
    mean = torch.zeros(200, 3, 50)
    y = torch.randn(200, 3, 50) * 2
    d = GaussianMixture.gaussian(mean, torch.tensor([2.0]))
    acc = MetricAccumulator(3)
    acc.update(d, y, torch.ones_like(y, dtype=torch.bool))
    r = acc.compute()
    assert abs(r["coverage80"] - 0.8) < 0.02 and abs(r["coverage90"] - 0.9) < 0.02
    assert np.allclose(r["pit_histogram"], 1 / 20, atol=0.01)
    assert abs(r["crps_normalised"] - r["crps"] / y.double().abs().mean().item()) < 1e-9


def test_mae_and_mape_score_the_median_and_rmse_the_mean():
    """A skewed two-component mixture: MAE/MAPE use its median (found by hand from the CDF), RMSE its mean."""
    import math

    from stmgt.distributions.mixture import GaussianMixture
    from stmgt.evaluation.metrics import MetricAccumulator

    # 0.7 N(10, 1) + 0.3 N(20, 1): mean 13; the median solves 0.7 Phi(x - 10) + 0.3 Phi(x - 20) = 0.5
    means = torch.tensor([10.0, 20.0]).expand(1, 1, 1, 2)
    dist = GaussianMixture(means, torch.ones(1, 1, 1, 2), torch.tensor([0.7, 0.3]).log().expand(1, 1, 1, 2))
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    lo, hi = 5.0, 25.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.7 * phi(mid - 10) + 0.3 * phi(mid - 20) < 0.5 else (lo, mid)
    median = (lo + hi) / 2
    y = torch.full((1, 1, 1), 12.0)
    acc = MetricAccumulator(horizon=1)
    acc.update(dist, y, torch.ones(1, 1, 1, dtype=torch.bool))
    r = acc.compute(horizons=(1,))
    assert abs(r["mae"]["avg"] - abs(median - 12)) < 1e-5
    assert abs(r["mape"]["avg"] - 100 * abs(median - 12) / 12) < 1e-4
    assert abs(r["rmse"]["avg"] - 1.0) < 1e-5  # |13 - 12|
    assert abs(r["mae_of_mean"]["avg"] - 1.0) < 1e-5


def test_coverage_by_step_counts_the_observed_values_inside_each_steps_interval():
    from scipy.stats import norm

    rng = np.random.default_rng(4)
    spread = np.array([1.0, 2.0, 4.0])  # the truth's std per step; the forecast says 2 at every step
    y = rng.normal(size=(300, 3, 20)) * spread[None, :, None]
    mask = rng.random(y.shape) > 0.2
    d = GaussianMixture.gaussian(torch.zeros(y.shape), torch.tensor([2.0]))
    acc = MetricAccumulator(3)
    acc.update(d, torch.tensor(y, dtype=torch.float32), torch.tensor(mask))
    r = acc.compute()
    for level in (80, 90):
        half = norm.ppf(0.5 + level / 200) * 2.0  # the central interval's half width
        inside = (np.abs(y) <= half) & mask
        want = inside.sum(axis=(0, 2)) / mask.sum(axis=(0, 2))
        np.testing.assert_allclose(r[f"coverage{level}_by_step"], want, atol=1e-9)
        assert r[f"coverage{level}_by_step"][0] > level / 100 > r[f"coverage{level}_by_step"][2]
        assert np.isclose(r[f"coverage{level}"], inside.sum() / mask.sum())
