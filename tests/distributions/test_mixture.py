import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats
from torch.distributions import Categorical, MixtureSameFamily, Normal

from stmgt.distributions.mixture import GaussianMixture


def _random(shape=(3, 4), K=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return GaussianMixture(torch.randn(*shape, K, generator=g, dtype=dtype) * 3,
                           torch.rand(*shape, K, generator=g, dtype=dtype) + 0.1,
                           torch.randn(*shape, K, generator=g, dtype=dtype))


def _torch_ref(d):
    return MixtureSameFamily(Categorical(logits=d.log_weights), Normal(d.means, d.stds))


def test_log_prob_mean_variance_cdf_match_torch_distributions():
    d = _random()
    ref = _torch_ref(d)
    y = torch.randn(3, 4, dtype=torch.float64) * 3
    torch.testing.assert_close(d.log_prob(y), ref.log_prob(y))
    torch.testing.assert_close(d.mean, ref.mean)
    torch.testing.assert_close(d.variance, ref.variance)
    torch.testing.assert_close(d.cdf(y), ref.cdf(y))


def test_quantiles_against_scipy_root_finding():
    d = _random(shape=(2, 3))
    levels = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99])
    q = d.icdf(levels)
    assert q.shape == (2, 3, 5)
    w, mu, sd = d.weights.numpy(), d.means.numpy(), d.stds.numpy()
    for i in range(2):
        for j in range(3):
            for k, lv in enumerate(levels.tolist()):
                def f(x, i=i, j=j, lv=lv):
                    return (w[i, j] * stats.norm.cdf(x, mu[i, j], sd[i, j])).sum() - lv

                root = optimize.brentq(f, -100, 100, xtol=1e-12)
                assert abs(q[i, j, k].item() - root) < 1e-8
    assert d.icdf(0.5).shape == (2, 3)
    lo, hi = d.interval(0.8)
    torch.testing.assert_close(lo, q[..., 1])
    torch.testing.assert_close(hi, q[..., 3])


def test_quantile_levels_must_be_inside_0_1():
    with pytest.raises(ValueError):
        _random().icdf(torch.tensor([0.0, 0.5]))


def test_crps_against_numerical_integration():
    d = _random(shape=(2, 2), K=3, seed=1)
    y = torch.tensor([[0.3, -2.0], [5.0, 1.0]], dtype=torch.float64)
    crps = d.crps(y)
    w, mu, sd = d.weights.numpy(), d.means.numpy(), d.stds.numpy()
    for i in range(2):
        for j in range(2):
            def F(x, i=i, j=j):
                return (w[i, j] * stats.norm.cdf(x, mu[i, j], sd[i, j])).sum()

            yy = y[i, j].item()
            a = integrate.quad(lambda x, F=F: F(x) ** 2, -80, yy, limit=200)[0]
            b = integrate.quad(lambda x, F=F: (1 - F(x)) ** 2, yy, 80, limit=200)[0]
            assert abs(crps[i, j].item() - (a + b)) < 1e-6


def test_crps_of_a_single_gaussian_is_the_known_formula():
    mu, sd, y = torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.0])
    d = GaussianMixture.gaussian(mu, sd)
    z = (y - mu) / sd
    expect = sd * (z * (2 * Normal(0, 1).cdf(z) - 1) + 2 * Normal(0, 1).log_prob(z).exp() - 1 / math.sqrt(math.pi))
    torch.testing.assert_close(d.crps(y), expect)


def test_affine_is_exact_and_scale_spread_keeps_the_mean():
    d = _random()
    a = d.affine(10.0, 2.5)
    torch.testing.assert_close(a.mean, 10 + 2.5 * d.mean)
    torch.testing.assert_close(a.stddev, 2.5 * d.stddev)
    torch.testing.assert_close(a.icdf(0.9), 10 + 2.5 * d.icdf(0.9), atol=1e-9, rtol=1e-9)
    s = d.scale_spread(2.0)
    torch.testing.assert_close(s.mean, d.mean)
    torch.testing.assert_close(s.icdf(0.9) - s.mean, 2 * (d.icdf(0.9) - d.mean), atol=1e-9, rtol=1e-9)


def test_samples_follow_the_mixture():
    torch.manual_seed(0)
    d = _random(shape=(2,), K=3)
    s = d.sample((20000,))
    assert s.shape == (20000, 2)
    torch.testing.assert_close(s.mean(0), d.mean, atol=0.1, rtol=0.05)
    ks = stats.kstest(s[:, 0].numpy(), lambda x: d.cdf(torch.as_tensor(x)[:, None].expand(-1, 2))[:, 0].numpy())
    assert ks.pvalue > 1e-3


def test_float32_quantiles_are_monotone():
    d = _random(dtype=torch.float32)
    q = d.icdf(torch.linspace(0.05, 0.95, 19))
    assert (np.diff(q.numpy(), axis=-1) >= 0).all()


def test_quantiles_in_tails_and_between_separated_modes_against_scipy():
    """The bisection-then-Newton search stays exact where Newton alone would wander: far tails and
    the flat valley between well-separated components."""
    g = torch.Generator().manual_seed(3)
    means = torch.tensor([[-30.0, -29.0, 0.0, 40.0, 41.0]], dtype=torch.float64) + torch.randn(6, 5, generator=g,
                                                                                             dtype=torch.float64)
    stds = torch.rand(6, 5, generator=g, dtype=torch.float64) * 2 + 0.05
    d = GaussianMixture(means, stds, torch.randn(6, 5, generator=g, dtype=torch.float64))
    # near 1, F(x) is resolved to float64 eps only (1e-16): 1 - 1e-7 keeps the root within 1e-8 for any method
    levels = torch.tensor([1e-9, 1e-4, 0.2, 0.4, 0.6, 0.8, 1 - 1e-4, 1 - 1e-7], dtype=torch.float64)
    q = d.icdf(levels)
    w, mu, sd = d.weights.numpy(), d.means.numpy(), d.stds.numpy()
    for i in range(6):
        for k, lv in enumerate(levels.tolist()):
            root = optimize.brentq(lambda x, i=i, lv=lv: (w[i] * stats.norm.cdf(x, mu[i], sd[i])).sum() - lv,
                                   -200, 200, xtol=1e-13)
            assert abs(q[i, k].item() - root) < 1e-8, (i, lv, q[i, k].item(), root)
